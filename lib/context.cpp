#include "ferry/context.hpp"

#include "ferry/error.hpp"

namespace ferry {
namespace {

std::string advice(int err) {
  switch (err) {
    case EADDRINUSE:
      return " (address in use: another process is bound there; pick another port or stop it)";
    case EINVAL:
      return " (malformed endpoint: use tcp://HOST:PORT, ipc://PATH or inproc://NAME)";
    case EPROTONOSUPPORT:
      return " (unknown transport: use tcp, ipc or inproc)";
    case EADDRNOTAVAIL:
      return " (no such local address: bind to 127.0.0.1, 0.0.0.0 or an interface address)";
    case ENODEV:
      return " (no such network interface)";
    case ENOENT:
      return " (the ipc path's directory does not exist)";
    case EACCES:
      return " (permission denied)";
    default:
      return "";
  }
}

}  // namespace

context::context(int io_threads) : context_(io_threads) {
  // A process holding many connections should not hit libzmq's default 1023 sockets first.
  context_.set(zmq::ctxopt::max_sockets, 4096);
}

zmq::socket_t context::make_socket(zmq::socket_type type, const socket_options& o) {
  try {
    zmq::socket_t s(context_, type);
    s.set(zmq::sockopt::sndhwm, o.send_hwm);
    s.set(zmq::sockopt::rcvhwm, o.receive_hwm);
    s.set(zmq::sockopt::linger, static_cast<int>(o.linger.count()));
    s.set(zmq::sockopt::maxmsgsize, o.max_message_size);
    if (o.heartbeat_interval.count() > 0) {
      s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(o.heartbeat_interval.count()));
      s.set(zmq::sockopt::heartbeat_timeout,
            static_cast<int>(o.heartbeat_timeout.count() > 0 ? o.heartbeat_timeout.count()
                                                             : 3 * o.heartbeat_interval.count()));
    }
    if (o.immediate) s.set(zmq::sockopt::immediate, 1);
    return s;
  } catch (const zmq::error_t& e) {
    throw error(std::string("cannot create a socket: ") + e.what());
  }
}

std::string bind(zmq::socket_t& socket, const std::string& endpoint) {
  try {
    socket.bind(endpoint);
    return socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    throw error("cannot bind " + endpoint + ": " + e.what() + advice(e.num()));
  }
}

void connect(zmq::socket_t& socket, const std::string& endpoint) {
  try {
    socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    throw error("cannot connect to " + endpoint + ": " + e.what() + advice(e.num()));
  }
}

std::vector<std::string> context::attach(zmq::socket_t& socket, const endpoints& eps) {
  std::vector<std::string> bound;
  bound.reserve(eps.bind.size());
  for (const auto& ep : eps.bind) bound.push_back(bind(socket, ep));
  for (const auto& ep : eps.connect) connect(socket, ep);
  return bound;
}

}  // namespace ferry
