#include "ferry/publisher.hpp"

#include <sys/random.h>

#include <algorithm>

#include "detail/wire.hpp"
#include "ferry/error.hpp"

namespace ferry {
namespace {

std::uint64_t random_origin() {
  std::uint64_t value = 0;
  while (value == 0) {
    if (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value))
      value = message_id::generate().unix_ms() ^ reinterpret_cast<std::uintptr_t>(&value);
  }
  return value;
}

}  // namespace

publisher::publisher(context& ctx, const endpoints& where, publisher_options options)
    : options_(std::move(options)),
      socket_(ctx.make_socket(zmq::socket_type::xpub, options_.socket)),
      origin_(random_origin()) {
  if (where.empty()) throw error("publisher: give at least one endpoint to bind or connect");
  socket_.set(zmq::sockopt::xpub_verbose, 1);  // every subscriber's request reaches us, for the wait
  if (options_.when_full == when_full::block) {
    socket_.set(zmq::sockopt::xpub_nodrop, 1);
    socket_.set(zmq::sockopt::sndtimeo, static_cast<int>(options_.send_timeout.count()));
  }
  // Every frame it builds must still fit a receiver with the same limit (which drops the connection).
  detail::fit_to_frame_limit(options_.wire, options_.socket.max_message_size);
  bound_ = ctx.attach(socket_, where);
}

std::uint64_t& publisher::sequence_of(const std::string& topic) {
  if (last_sequence_ == nullptr || topic != last_topic_) {
    auto it = sequences_.find(topic);
    if (it == sequences_.end()) it = sequences_.emplace(topic, 0).first;
    last_topic_ = topic;
    last_sequence_ = &it->second;
  }
  return *last_sequence_;
}

send_status publisher::publish(message& msg) {
  std::uint64_t& sequence = sequence_of(msg.topic());
  const std::uint64_t old_origin = msg.origin();
  const std::uint64_t old_sequence = msg.sequence();
  msg.set_stream(origin_, sequence + 1);
  const send_status s = detail::send_message(socket_, msg, waits(), options_.wire);
  if (s == send_status::ok) {
    ++sequence;
    ++stats_.published;
    ++stats_.frames;
    if ((stats_.published & 1023) == 0) read_subscriptions(0);
  } else {
    msg.set_stream(old_origin, old_sequence);
    if (s == send_status::timed_out) ++stats_.timed_out;
  }
  return s;
}

batch_status publisher::publish_batch(std::span<message> msgs) {
  // Every message takes the next sequence number of its topic; those not sent give theirs back (they are
  // the last of their topics, so each topic's counter just steps back).
  old_streams_.clear();
  for (message& m : msgs) {
    old_streams_.emplace_back(m.origin(), m.sequence());
    m.set_stream(origin_, ++sequence_of(m.topic()));
  }
  const batch_status r = detail::send_batch(socket_, msgs, waits(), options_.wire);
  for (std::size_t i = msgs.size(); i > r.sent; --i) {
    message& m = msgs[i - 1];
    --sequence_of(m.topic());
    m.set_stream(old_streams_[i - 1].first, old_streams_[i - 1].second);
  }
  const std::uint64_t before = stats_.published;
  stats_.published += r.sent;
  stats_.frames += r.frames;
  if (r.status == send_status::timed_out) ++stats_.timed_out;
  if ((before >> 10) != (stats_.published >> 10)) read_subscriptions(0);
  return r;
}

void publisher::read_subscriptions(int timeout_ms) {
  zmq::message_t frame;
  socket_.set(zmq::sockopt::rcvtimeo, timeout_ms);
  while (socket_.recv(frame)) {
    if (frame.size() > 0 && static_cast<const unsigned char*>(frame.data())[0] == 1) ++stats_.subscriptions;
    socket_.set(zmq::sockopt::rcvtimeo, 0);
  }
}

bool publisher::wait_for_subscriptions(std::uint64_t count, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  read_subscriptions(0);
  while (stats_.subscriptions < count) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    read_subscriptions(static_cast<int>(left.count()));
  }
  return true;
}

publisher_stats publisher::stats() {
  read_subscriptions(0);
  return stats_;
}

}  // namespace ferry
