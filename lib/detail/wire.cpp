#include "detail/wire.hpp"

namespace ferry::detail {

send_status send_message(zmq::socket_t& socket, message& msg, bool wait) {
  if (check_limits(msg) != decode_error::none) return send_status::too_large;
  msg.stamp();
  zmq::message_t topic(msg.topic().data(), msg.topic().size());
  zmq::message_t envelope = encode_envelope(msg);
  try {
    const auto first =
        wait ? zmq::send_flags::sndmore : (zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!socket.send(topic, first)) return wait ? send_status::timed_out : send_status::would_block;
    (void)socket.send(envelope, zmq::send_flags::sndmore);
    (void)socket.send(msg.payload_frame(), zmq::send_flags::none);
    return send_status::ok;
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM || e.num() == ENOTSOCK) return send_status::closed;
    if (e.num() == EHOSTUNREACH) return send_status::would_block;
    throw;
  }
}

void frame_reader::discard_rest(zmq::socket_t& socket) {
  zmq::message_t scratch;
  while (socket.get(zmq::sockopt::rcvmore)) (void)socket.recv(scratch);
}

receive_status frame_reader::receive(zmq::socket_t& socket, message& out, bool wait) {
  try {
    if (!socket.recv(topic_, wait ? zmq::recv_flags::none : zmq::recv_flags::dontwait))
      return receive_status::would_block;
    error_ = decode_error::none;
    if (!topic_.more()) {
      error_ = decode_error::frame_count;
      return receive_status::rejected;
    }
    (void)socket.recv(envelope_);
    if (!envelope_.more()) {
      error_ = decode_error::frame_count;
      return receive_status::rejected;
    }
    (void)socket.recv(out.payload_frame());
    if (out.payload_frame().more()) {
      discard_rest(socket);
      error_ = decode_error::frame_count;
      return receive_status::rejected;
    }
    if (topic_.size() > limits_.max_topic) {
      error_ = decode_error::topic_too_long;
      return receive_status::rejected;
    }
    error_ = decode_envelope(envelope_.to_string_view(), out, limits_);
    if (error_ != decode_error::none) return receive_status::rejected;
    out.set_topic(std::string(topic_.to_string_view()));
    return receive_status::ok;
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM || e.num() == ENOTSOCK) return receive_status::closed;
    if (e.num() == EAGAIN) return receive_status::would_block;
    throw;
  }
}

}  // namespace ferry::detail
