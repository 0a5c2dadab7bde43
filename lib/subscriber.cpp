#include "ferry/subscriber.hpp"

#include <unordered_map>

#include "detail/receiver.hpp"
#include "ferry/error.hpp"

namespace ferry {
namespace {

// Last sequence seen per (publisher origin, topic). Bounded: forgets everything past max_streams rather
// than grow without limit when publishers come and go.
class gap_tracker {
 public:
  std::uint64_t observe(const message& msg) {
    if (msg.sequence() == 0) return 0;
    std::uint64_t* last = nullptr;
    if (last_ != nullptr && msg.origin() == last_origin_ && msg.topic() == last_topic_) {
      last = last_;  // the same stream as the previous message: no lookup
    } else {
      auto& topics = streams_[msg.origin()];
      auto it = topics.find(msg.topic());
      if (it == topics.end()) {
        if (++count_ > max_streams) {
          streams_.clear();
          count_ = 1;
          last_ = nullptr;
          streams_[msg.origin()].emplace(msg.topic(), msg.sequence());
          return 0;
        }
        it = topics.emplace(msg.topic(), msg.sequence()).first;
        remember(msg, &it->second);
        return 0;  // the first message seen of a stream sets where it starts
      }
      last = &it->second;
      remember(msg, last);
    }
    std::uint64_t missing = 0;
    if (msg.sequence() > *last + 1) missing = msg.sequence() - *last - 1;
    if (msg.sequence() > *last) *last = msg.sequence();
    return missing;
  }

 private:
  void remember(const message& msg, std::uint64_t* value) {
    last_origin_ = msg.origin();
    last_topic_ = msg.topic();
    last_ = value;  // element pointers survive rehashing
  }

  static constexpr std::size_t max_streams = 100'000;
  std::uint64_t last_origin_ = 0;
  std::string last_topic_;
  std::uint64_t* last_ = nullptr;
  std::unordered_map<std::uint64_t, std::unordered_map<std::string, std::uint64_t>> streams_;
  std::size_t count_ = 0;
};

}  // namespace

subscriber::subscriber(context& ctx, const endpoints& where, const std::vector<std::string>& prefixes,
                       message_handler handler, subscriber_options options) {
  if (where.empty()) throw error("subscriber: give at least one endpoint to bind or connect");
  if (prefixes.empty()) throw error("subscriber: give at least one prefix (\"\" subscribes to every topic)");
  socket_options so = options.socket;
  so.linger = std::chrono::milliseconds(0);  // it only receives: nothing of ours is queued to linger for
  zmq::socket_t socket = ctx.make_socket(zmq::socket_type::sub, so);
  for (const auto& prefix : prefixes) socket.set(zmq::sockopt::subscribe, prefix);
  bound_ = ctx.attach(socket, where);
  detail::receiver_config config;
  config.name = "subscriber";
  config.threads = 1;
  config.dedup = options.dedup;
  config.limits = options.limits;
  config.observe = [gaps = std::make_shared<gap_tracker>()](const message& msg) {
    return gaps->observe(msg);
  };
  receiver_ = std::make_unique<detail::receiver>(std::move(socket), std::move(config), std::move(handler));
}

subscriber::~subscriber() {
  stop();
}
subscriber::subscriber(subscriber&&) noexcept = default;
subscriber& subscriber::operator=(subscriber&&) noexcept = default;

void subscriber::stop() {
  if (receiver_) receiver_->stop();
}

receive_stats subscriber::stats() const noexcept {
  return receiver_ ? receiver_->stats() : receive_stats{};
}

}  // namespace ferry
