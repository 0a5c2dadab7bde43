#include "ferry/pusher.hpp"

#include <algorithm>

#include "detail/wire.hpp"
#include "ferry/error.hpp"

namespace ferry {

pusher::pusher(context& ctx, const endpoints& where, pusher_options options)
    : options_(std::move(options)), socket_(ctx.make_socket(zmq::socket_type::push, options_.socket)) {
  if (where.empty()) throw error("pusher: give at least one endpoint to bind or connect");
  if (options_.max_payload < 0) options_.max_payload = options_.socket.max_message_size;
  // Every frame it builds must still fit a receiver with the same limit (which drops the connection).
  detail::fit_to_frame_limit(options_.wire, options_.socket.max_message_size);
  socket_.set(zmq::sockopt::sndtimeo, static_cast<int>(options_.send_timeout.count()));
  bound_ = ctx.attach(socket_, where);
}

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

send_status pusher::send(message& msg) {
  if (payload_too_large(msg)) {
    ++stats_.too_large;
    return send_status::too_large;
  }
  const send_status s = detail::send_message(socket_, msg, options_.send_timeout.count() != 0, options_.wire);
  if (s == send_status::ok) ++stats_.frames;
  count(s, 1);
  return s;
}

batch_status pusher::send_batch(std::span<message> msgs) {
  std::size_t fit = 0;
  while (fit < msgs.size() && !payload_too_large(msgs[fit])) ++fit;
  batch_status r;
  if (fit > 0) {
    r = detail::send_batch(socket_, msgs.first(fit), options_.send_timeout.count() != 0, options_.wire);
    stats_.sent += r.sent;
    stats_.frames += r.frames;
    if (r.status != send_status::ok) {
      count(r.status, 0);
      return r;
    }
  }
  if (fit < msgs.size()) {
    ++stats_.too_large;
    r.status = send_status::too_large;
  }
  return r;
}

pusher_stats pusher::stats() const noexcept {
  return stats_;
}

}  // namespace ferry
