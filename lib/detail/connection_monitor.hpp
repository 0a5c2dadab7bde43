#pragma once
// The connection events of one socket (ZeroMQ's socket monitor, read without waiting): which endpoint
// connected, accepted a peer or lost one, how many peers are connected now, and whether one ever was. Shared
// by the forwarder session, admin and pusher, which log what it reports.
//
// Only rare events are asked for (connected, accepted, disconnected) and the monitor's queue has no limit:
// libzmq 4.3.4's I/O thread blocks, for every socket of the context, once a monitor's queue is full (seen
// with an unread monitor of connect retries). Owners read it whenever they poll, so it stays short.
//
// Thread safety: the thread that uses the monitored socket.

#include <chrono>
#include <string>
#include <zmq.hpp>

#include "ferry/context.hpp"

namespace ferry::detail {

/// How long a client hears nothing from its peer before it logs that it cannot reach it, and how often it
/// says so again while that lasts.
inline constexpr std::chrono::milliseconds unreachable_after{1000};
inline constexpr std::chrono::milliseconds unreachable_repeat{5000};

class connection_monitor {
 public:
  enum class kind { connected, accepted, disconnected };
  struct event {
    kind what = kind::connected;
    std::string endpoint;  // as libzmq names it: the endpoint connected to, or the one bound
  };

  /// Starts monitoring `socket`, which must stay open while this object lives: create it before the socket
  /// binds or connects, destroy it before the socket closes. `owner` names the owner in errors.
  /// Throws ferry::error when libzmq refuses.
  connection_monitor(context& ctx, zmq::socket_t& socket, const std::string& owner);
  /// Stops monitoring.
  ~connection_monitor();
  /// Moving keeps monitoring the same socket (a moved zmq::socket_t keeps its handle).
  connection_monitor(connection_monitor&& other) noexcept;
  connection_monitor(const connection_monitor&) = delete;
  connection_monitor& operator=(const connection_monitor&) = delete;
  connection_monitor& operator=(connection_monitor&&) = delete;

  /// Takes the next event without waiting; false when none is queued. connections() counts it.
  bool next(event& out);
  /// Takes every queued event, for an owner that only needs the counts.
  void drain();
  /// The monitor for zmq_poll (ZMQ_POLLIN: an event is queued).
  [[nodiscard]] zmq_pollitem_t poll_item() noexcept { return {monitor_.handle(), 0, ZMQ_POLLIN, 0}; }

  /// Peers connected now, from the events taken so far.
  [[nodiscard]] int connections() const noexcept { return connections_; }
  /// Connections made or accepted so far (a reconnect counts again).
  [[nodiscard]] std::uint64_t connects() const noexcept { return connects_; }

 private:
  void* socket_ = nullptr;  // the monitored socket's handle
  zmq::socket_t monitor_;
  int connections_ = 0;
  std::uint64_t connects_ = 0;
};

}  // namespace ferry::detail
