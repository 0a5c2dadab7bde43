#include "ferry/pusher.hpp"

#include "detail/wire.hpp"
#include "ferry/error.hpp"

namespace ferry {

pusher::pusher(context& ctx, const endpoints& where, pusher_options options)
    : options_(std::move(options)), socket_(ctx.make_socket(zmq::socket_type::push, options_.socket)) {
  if (where.empty()) throw error("pusher: give at least one endpoint to bind or connect");
  if (options_.max_payload < 0) options_.max_payload = options_.socket.max_message_size;
  socket_.set(zmq::sockopt::sndtimeo, static_cast<int>(options_.send_timeout.count()));
  bound_ = ctx.attach(socket_, where);
}

send_status pusher::send(message& msg) {
  if (options_.max_payload >= 0 && msg.payload().size() > static_cast<std::uint64_t>(options_.max_payload)) {
    ++stats_.too_large;
    return send_status::too_large;
  }
  const send_status s = detail::send_message(socket_, msg, options_.send_timeout.count() != 0);
  switch (s) {
    case send_status::ok:
      ++stats_.sent;
      break;
    case send_status::would_block:
      ++stats_.would_block;
      break;
    case send_status::timed_out:
      ++stats_.timed_out;
      break;
    default:
      break;
  }
  return s;
}

pusher_stats pusher::stats() const noexcept {
  return stats_;
}

}  // namespace ferry
