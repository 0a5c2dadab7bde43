#include "ferry/subscriber.hpp"

#include <msgpack.hpp>

#include <unordered_map>
#include <unordered_set>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "detail/receiver.hpp"
#include "detail/wire.hpp"
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

// Fills gaps of stored topics from ferryd (FETCH, docs/protocol.md). Used by the receive thread only.
class gap_fetcher {
 public:
  gap_fetcher(context& ctx, gap_repair options, const decode_limits& limits)
      : ctx_(&ctx), options_(std::move(options)), limits_(limits) {
    open();
  }

  std::uint64_t repair(const message& msg, std::uint64_t missing, std::vector<message>& found) {
    if (foreign_.count(msg.origin()) != 0) return missing;
    const std::uint64_t to = msg.sequence() - 1;
    std::uint64_t from = msg.sequence() - missing;
    const auto deadline = clock::now() + options_.timeout;
    while (from <= to) {
      const fetch_outcome got = fetch(msg, from, to, deadline, found);
      if (got == fetch_outcome::failed) break;
      if (got == fetch_outcome::foreign) {
        if (foreign_.size() >= max_foreign) foreign_.clear();
        foreign_.insert(msg.origin());
        break;
      }
      if (next_ <= from) break;  // nothing more is stored
      from = next_;
    }
    return missing - std::min<std::uint64_t>(missing, found.size());
  }

 private:
  using clock = std::chrono::steady_clock;
  enum class fetch_outcome { ok, failed, foreign };
  static constexpr std::size_t max_foreign = 10'000;

  void open() {
    socket_options so;
    so.linger = std::chrono::milliseconds(0);
    so.max_message_size = -1;  // a FETCHED block holds up to 4 MiB of messages, or one larger message
    socket_ = ctx_->make_socket(zmq::socket_type::dealer, so);
    connect(socket_, options_.forwarder);
  }

  // One FETCH of [from, to]; appends what it returns in that range to `found` and sets next_.
  fetch_outcome fetch(const message& msg, std::uint64_t from, std::uint64_t to, clock::time_point deadline,
                      std::vector<message>& found) {
    msgpack::sbuffer options;
    msgpack::packer<msgpack::sbuffer> pk(options);
    pk.pack_map(3);
    pk.pack("from");
    pk.pack(from);
    pk.pack("count");
    pk.pack(std::min<std::uint64_t>(to - from + 1, detail::fwd::max_deliver));
    pk.pack("origin");
    pk.pack(msg.origin());
    const std::string_view verb = detail::fwd::fetch;
    (void)socket_.send(zmq::buffer(verb), zmq::send_flags::sndmore);
    (void)socket_.send(zmq::buffer(msg.topic()), zmq::send_flags::sndmore);
    (void)socket_.send(zmq::buffer(options.data(), options.size()), zmq::send_flags::none);
    std::vector<zmq::message_t> reply;
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0) {
        warn("no answer from ferryd at {} within {} ms to FETCH {} [{}, {}]", options_.forwarder,
             options_.timeout.count(), msg.topic(), from, to);
        open();  // a late answer to this request must not be taken for the next one's
        return fetch_outcome::failed;
      }
      reply.clear();
      do {
        reply.emplace_back();
        (void)socket_.recv(reply.back());
      } while (reply.back().more());
      if (reply[0].to_string_view() == detail::fwd::error && reply.size() >= 3) {
        const std::string_view code = reply[1].to_string_view();
        warn("ferryd cannot repair the gap in {} [{}, {}]: {} ({})", msg.topic(), from, to,
             reply[2].to_string_view(), code);
        return code == detail::fwd::code::other_origin || code == detail::fwd::code::no_topic
                   ? fetch_outcome::foreign
                   : fetch_outcome::failed;
      }
      if (reply.size() != 4 || reply[0].to_string_view() != detail::fwd::fetched ||
          reply[1].to_string_view() != msg.topic())
        continue;  // not the answer to this request
      std::uint64_t asked = 0;
      if (!read_meta(reply[2].to_string_view(), asked) || asked != from) continue;
      break;
    }
    std::size_t n = 0;
    if (const auto e = detail::decode_block(reply[3].to_string_view(), batch_, payloads_, n, limits_);
        e != decode_error::none) {
      warn("ferryd's FETCH answer for {} does not decode ({})", msg.topic(), to_string(e));
      return fetch_outcome::failed;
    }
    const std::size_t block_at = 0;
    auto shared = std::make_shared<const zmq::message_t>(std::move(reply[3]));
    for (std::size_t i = 0; i < n; ++i) {
      message& m = batch_[i];
      if (m.sequence() < from || m.sequence() > to) continue;
      m.set_topic(msg.topic());
      m.set_payload_slice(shared, block_at + payloads_[i].offset, payloads_[i].size);
      found.push_back(std::move(m));
    }
    return fetch_outcome::ok;
  }

  bool read_meta(std::string_view bytes, std::uint64_t& asked) {
    try {
      const msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
      const msgpack::object& o = oh.get();
      if (o.type != msgpack::type::MAP) return false;
      bool has_next = false;
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type != msgpack::type::STR || kv.val.type != msgpack::type::POSITIVE_INTEGER) continue;
        const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
        if (key == "from") asked = kv.val.via.u64;
        if (key == "next") {
          next_ = kv.val.via.u64;
          has_next = true;
        }
      }
      return has_next;
    } catch (const std::exception&) {
      return false;
    }
  }

  template <typename... Args>
  void warn(fmt::format_string<Args...> f, Args&&... args) {
    std::uint64_t held = 0;
    if (log_.allow(held))
      detail::logger().warn("subscriber: {}{}", fmt::format(f, std::forward<Args>(args)...),
                            detail::suppressed_note(held));
  }

  context* ctx_;
  gap_repair options_;
  decode_limits limits_;
  zmq::socket_t socket_;
  std::uint64_t next_ = 0;
  std::vector<message> batch_;
  std::vector<detail::payload_span> payloads_;
  std::unordered_set<std::uint64_t> foreign_;  // origins ferryd said are none of its topics' streams
  detail::log_limiter log_{5};
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
  if (options.repair) {
    if (options.repair->forwarder.empty())
      throw error("subscriber: gap repair needs ferryd's endpoint (gap_repair::forwarder)");
    auto fetcher = std::make_shared<gap_fetcher>(ctx, *options.repair, options.limits);
    config.repair = [fetcher](const message& msg, std::uint64_t missing, std::vector<message>& found) {
      return fetcher->repair(msg, missing, found);
    };
  }
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
