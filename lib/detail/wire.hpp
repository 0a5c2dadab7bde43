#pragma once
// Moving one ferry::message in and out of a socket as its three frames (topic, envelope, payload).

#include <zmq.hpp>

#include "ferry/envelope.hpp"
#include "ferry/message.hpp"
#include "ferry/status.hpp"

namespace ferry::detail {

/// Sends `msg` as topic | envelope | payload. With `wait` false the first frame does not wait for room;
/// otherwise it waits as long as the socket's ZMQ_SNDTIMEO allows. libzmq accepts the remaining frames of a
/// message whose first frame it took, so a message goes out whole or not at all. On ok the payload frame is
/// consumed; on any other status `msg` is unchanged. A topic, key, header set or envelope over the default
/// decode_limits gives too_large: no receiver with default limits would accept it.
[[nodiscard]] send_status send_message(zmq::socket_t& socket, message& msg, bool wait);

/// What one receive produced.
enum class receive_status { ok, would_block, rejected, closed };

/// Receives one frame set. Reused frames avoid allocating per message.
class frame_reader {
 public:
  explicit frame_reader(const decode_limits& limits = {}) : limits_(limits) {}

  /// Receives one message into `out`. On `rejected`, every frame of the bad message has been consumed and
  /// error() says why. With `wait` false returns would_block when nothing is queued.
  [[nodiscard]] receive_status receive(zmq::socket_t& socket, message& out, bool wait);
  [[nodiscard]] decode_error error() const noexcept { return error_; }

 private:
  void discard_rest(zmq::socket_t& socket);

  decode_limits limits_;
  zmq::message_t topic_;
  zmq::message_t envelope_;
  decode_error error_ = decode_error::none;
};

}  // namespace ferry::detail
