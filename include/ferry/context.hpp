#pragma once
/// @file The ZeroMQ context and the one socket factory every ferry socket comes from.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "ferry/error.hpp"

namespace ferry {

/// Options applied to every socket the factory makes. One place, so a limit or a security setting is one
/// edit.
struct socket_options {
  /// High-water marks: messages queued per peer before sends block, fail or drop (per socket type).
  int send_hwm = 1000;
  int receive_hwm = 1000;
  /// How long close waits to push out queued messages. ferry never relies on it to deliver (see
  /// docs/protocol.md, "Delivery at exit"); it only gives queued sends a chance.
  std::chrono::milliseconds linger{1000};
  /// Largest frame accepted from a peer, in bytes; a peer sending more is disconnected by libzmq.
  /// -1 for no limit.
  std::int64_t max_message_size = 64 * 1024 * 1024;
  /// ZMTP heartbeats: a silent connection is closed after `heartbeat_timeout` (0 disables them).
  std::chrono::milliseconds heartbeat_interval{0};
  std::chrono::milliseconds heartbeat_timeout{0};
  /// Queue messages only to peers whose connection is complete (ZMQ_IMMEDIATE).
  bool immediate = false;
};

/// Where a socket binds and connects. Endpoints use ZeroMQ syntax: tcp://127.0.0.1:5555, ipc:///tmp/x,
/// inproc://name; tcp://127.0.0.1:* binds an ephemeral port.
struct endpoints {
  std::vector<std::string> bind;
  std::vector<std::string> connect;
  [[nodiscard]] bool empty() const noexcept { return bind.empty() && connect.empty(); }
};

/// Owns a ZeroMQ context and makes every socket ferry uses.
///
/// Ownership: sockets made here must be closed before the context is destroyed (ferry's classes do this).
/// Thread safety: safe to share between threads; each socket it makes belongs to one thread at a time.
class context {
 public:
  explicit context(int io_threads = 1);
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  /// A socket of `type` with `options` applied.
  /// Throws ferry::error when libzmq refuses an option or is out of sockets.
  [[nodiscard]] zmq::socket_t make_socket(zmq::socket_type type, const socket_options& options = {});

  /// Binds `socket` to each of `eps.bind` and connects it to each of `eps.connect`.
  /// Returns the endpoints actually bound (with `*` ports resolved), in order.
  /// Throws ferry::error naming the endpoint and the reason (address in use, bad syntax, ...).
  std::vector<std::string> attach(zmq::socket_t& socket, const endpoints& eps);

  [[nodiscard]] zmq::context_t& zmq() noexcept { return context_; }

 private:
  zmq::context_t context_;
};

/// Binds `socket` to `endpoint`; returns the endpoint actually bound. Throws ferry::error with advice.
std::string bind(zmq::socket_t& socket, const std::string& endpoint);
/// Connects `socket` to `endpoint`. Throws ferry::error with advice.
void connect(zmq::socket_t& socket, const std::string& endpoint);

}  // namespace ferry
