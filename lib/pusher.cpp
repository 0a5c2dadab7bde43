#include "ferry/pusher.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "detail/connection_monitor.hpp"
#include "detail/log.hpp"
#include "detail/wire.hpp"
#include "ferry/error.hpp"

namespace ferry {

pusher::pusher(context& ctx, const endpoints& where, pusher_options options)
    : options_(std::move(options)),
      socket_(ctx.make_socket(zmq::socket_type::push, options_.socket)),
      monitor_(std::make_unique<detail::connection_monitor>(ctx, socket_, "pusher")),
      connect_to_(where.connect),
      started_(clock::now()),
      next_unreachable_log_(started_ + detail::unreachable_after) {
  if (where.empty()) throw error("pusher: give at least one endpoint to bind or connect");
  if (options_.max_payload < 0) options_.max_payload = options_.socket.max_message_size;
  // Every frame it builds must still fit a receiver with the same limit (which drops the connection).
  detail::fit_to_frame_limit(options_.wire, options_.socket.max_message_size);
  bound_ = ctx.attach(socket_, where);
}

pusher::~pusher() = default;
pusher::pusher(pusher&&) noexcept = default;

void pusher::count(send_status s, std::uint64_t n) noexcept {
  switch (s) {
    case send_status::ok:
      stats_.sent += n;
      break;
    case send_status::would_block:
      ++stats_.would_block;
      break;
    case send_status::timed_out:
      ++stats_.timed_out;
      break;
    case send_status::too_large:
      ++stats_.too_large;
      break;
    case send_status::invalid:
      ++stats_.invalid;
      break;
    case send_status::closed:
      break;
  }
}

bool pusher::payload_too_large(const message& msg) const noexcept {
  return options_.max_payload >= 0 && msg.payload().size() > static_cast<std::uint64_t>(options_.max_payload);
}

void pusher::read_connections() const {
  detail::connection_monitor::event ev;
  while (monitor_->next(ev)) {
    switch (ev.what) {
      case detail::connection_monitor::kind::connected:
        detail::logger().info("pusher: connected to {}", ev.endpoint);
        break;
      case detail::connection_monitor::kind::accepted:
        detail::logger().debug("pusher: a worker connected to {}", ev.endpoint);
        break;
      case detail::connection_monitor::kind::disconnected:
        if (std::find(bound_.begin(), bound_.end(), ev.endpoint) != bound_.end()) {
          detail::logger().debug("pusher: a worker disconnected from {}", ev.endpoint);
        } else {
          detail::logger().info("pusher: connection to {} lost; reconnecting", ev.endpoint);
        }
        break;
    }
  }
}

pusher::clock::time_point pusher::deadline() const noexcept {
  return options_.send_timeout.count() < 0 ? clock::time_point::max() : clock::now() + options_.send_timeout;
}

bool pusher::wait_for_room(clock::time_point deadline) {
  for (;;) {
    read_connections();
    const auto now = clock::now();
    if (now >= deadline) return false;
    if (monitor_->connections() == 0 && now >= next_unreachable_log_) {
      next_unreachable_log_ = now + detail::unreachable_repeat;
      if (!connect_to_.empty())
        detail::logger().warn("pusher: cannot reach {} (retrying)", fmt::join(connect_to_, ", "));
      if (!bound_.empty())
        detail::logger().warn("pusher: no worker has connected to {} yet", fmt::join(bound_, ", "));
    }
    const auto until = std::min(deadline, monitor_->connections() == 0 ? next_unreachable_log_ : deadline);
    // Whole milliseconds, at most a minute at a time (a deadline of "never" does not overflow).
    const auto wait = std::clamp<std::chrono::milliseconds::rep>(
        std::chrono::ceil<std::chrono::milliseconds>(until - now).count(), 0, 60'000);
    zmq::pollitem_t items[2] = {{socket_.handle(), 0, ZMQ_POLLOUT, 0}, monitor_->poll_item()};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(wait));
    } catch (const zmq::error_t&) {
      return true;  // the context is closing: the send says so
    }
    if (items[0].revents & ZMQ_POLLOUT) return true;
  }
}

send_status pusher::send(message& msg) {
  if (payload_too_large(msg)) {
    ++stats_.too_large;
    return send_status::too_large;
  }
  if (++sends_since_events_ >= 1024) {
    sends_since_events_ = 0;
    read_connections();
  }
  // Never blocks inside libzmq: a send that would wait polls instead, and hears connections come and go.
  send_status s = detail::send_message(socket_, msg, false, options_.wire);
  if (s == send_status::would_block && options_.send_timeout.count() != 0) {
    const auto until = deadline();
    while (s == send_status::would_block) {
      if (!wait_for_room(until)) {
        s = send_status::timed_out;
        break;
      }
      s = detail::send_message(socket_, msg, false, options_.wire);
    }
    read_connections();  // the connection that made room is logged now, not at the 1024th send
  }
  if (s == send_status::ok) ++stats_.frames;
  count(s, 1);
  return s;
}

batch_status pusher::send_batch(std::span<message> msgs) {
  std::size_t fit = 0;
  while (fit < msgs.size() && !payload_too_large(msgs[fit])) ++fit;
  if (++sends_since_events_ >= 1024) {
    sends_since_events_ = 0;
    read_connections();
  }
  batch_status r;
  std::optional<clock::time_point> until;  // set when the first wait begins
  while (r.sent < fit) {
    const batch_status part =
        detail::send_batch(socket_, msgs.subspan(r.sent, fit - r.sent), false, options_.wire);
    r.sent += part.sent;
    r.frames += part.frames;
    stats_.sent += part.sent;
    stats_.frames += part.frames;
    r.status = part.status;
    if (part.status != send_status::would_block) break;
    if (options_.send_timeout.count() == 0) break;
    if (!until) until = deadline();
    if (!wait_for_room(*until)) {
      r.status = send_status::timed_out;
      break;
    }
  }
  if (until) read_connections();  // the connection that made room is logged now
  if (r.status != send_status::ok) {
    count(r.status, 0);
    return r;
  }
  if (fit < msgs.size()) {
    ++stats_.too_large;
    r.status = send_status::too_large;
  }
  return r;
}

pusher_stats pusher::stats() const {
  read_connections();
  pusher_stats s = stats_;
  s.connects = monitor_->connects();
  s.connected = static_cast<std::uint64_t>(monitor_->connections());
  return s;
}

}  // namespace ferry
