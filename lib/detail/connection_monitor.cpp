#include "detail/connection_monitor.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>

#include "ferry/error.hpp"

namespace ferry::detail {

connection_monitor::connection_monitor(context& ctx, zmq::socket_t& socket, const std::string& owner)
    : socket_(socket.handle()) {
  static std::atomic<std::uint64_t> monitors{0};
  const std::string endpoint = "inproc://ferry-monitor-" + std::to_string(monitors.fetch_add(1));
  if (zmq_socket_monitor(socket_, endpoint.c_str(),
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
    throw error(owner + ": cannot monitor its socket: " + zmq_strerror(zmq_errno()));
  socket_options o;
  o.linger = std::chrono::milliseconds(0);
  o.receive_hwm = 0;  // never full: a full monitor would stall libzmq's I/O thread
  monitor_ = ctx.make_socket(zmq::socket_type::pair, o);
  ferry::connect(monitor_, endpoint);
}

connection_monitor::~connection_monitor() {
  if (socket_ != nullptr) zmq_socket_monitor(socket_, nullptr, 0);
}

connection_monitor::connection_monitor(connection_monitor&& other) noexcept
    : socket_(other.socket_),
      monitor_(std::move(other.monitor_)),
      connections_(other.connections_),
      connects_(other.connects_) {
  other.socket_ = nullptr;
}

bool connection_monitor::next(event& out) {
  for (;;) {
    zmq::message_t head;
    if (!monitor_.recv(head, zmq::recv_flags::dontwait)) return false;
    std::uint16_t id = 0;
    if (head.size() >= 2) std::memcpy(&id, head.data(), 2);
    zmq::message_t address;
    if (head.more()) (void)monitor_.recv(address);
    out.endpoint = address.to_string();
    switch (id) {
      case ZMQ_EVENT_CONNECTED:
      case ZMQ_EVENT_ACCEPTED:
        out.what = id == ZMQ_EVENT_CONNECTED ? kind::connected : kind::accepted;
        ++connections_;
        ++connects_;
        return true;
      case ZMQ_EVENT_DISCONNECTED:
        out.what = kind::disconnected;
        if (connections_ > 0) --connections_;
        return true;
      default:
        continue;  // not asked for
    }
  }
}

void connection_monitor::drain() {
  event ignored;
  while (next(ignored)) {
  }
}

}  // namespace ferry::detail
