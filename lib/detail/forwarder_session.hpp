#pragma once
// The client end of one connection to ferryd, shared by producer and consumer: a DEALER made by the socket
// factory, the HELLO/WELCOME handshake (sent again after every reconnect), heartbeats at the interval ferryd
// announces, detection of a reconnect (socket monitor) and of a ferryd restart (a new instance in WELCOME or
// PONG), connection-state logs, and multipart I/O. docs/protocol.md, "The forwarder protocol".
//
// Routing across several ferryd (one session per forwarder, chosen by queue name) builds on this class.
//
// Thread safety: one thread (the owner's I/O thread), except up(), which any thread may read.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "detail/connection_monitor.hpp"
#include "ferry/context.hpp"

namespace ferry::detail {

/// What ferryd said in WELCOME (defaults until it has).
struct forwarder_welcome {
  std::uint32_t version = 0;  // 0: no WELCOME yet
  std::uint64_t instance = 0;
  std::string server;
  std::chrono::milliseconds heartbeat{0};
  std::chrono::milliseconds lease{0};
  std::uint64_t max_message_bytes = 0;
  std::uint64_t max_batch = 0;
};

class forwarder_session {
 public:
  using clock = std::chrono::steady_clock;

  struct options {
    std::string name;  // "producer", "consumer": for logs
    /// PING period until ferryd announces its own (then the shorter of the two).
    std::chrono::milliseconds heartbeat_interval{1000};
    /// A consumer names its queue in PING, so ferryd says when it forgot the subscription.
    std::string ping_queue;
    socket_options socket;
  };

  /// Connects (in the background) and sends HELLO. Throws ferry::error for a malformed endpoint.
  forwarder_session(context& ctx, const std::string& endpoint, options o);
  ~forwarder_session();
  forwarder_session(const forwarder_session&) = delete;
  forwarder_session& operator=(const forwarder_session&) = delete;

  /// Sends one multipart message without waiting. False when libzmq cannot take it now (its queue is at the
  /// high-water mark): it is not sent, counted in unsent(), and the caller may try again later. Any other
  /// failure is logged and reported as sent: every exchange of the protocol survives a lost message
  /// (resends, leases), so it is not the caller's to handle.
  bool send(std::vector<zmq::message_t>& frames);
  [[nodiscard]] std::uint64_t unsent() const noexcept { return unsent_; }
  /// Receives one multipart message without waiting; false when none is queued.
  bool receive(std::vector<zmq::message_t>& frames);

  /// What handle() found.
  enum class event {
    other,     ///< not a session message: the owner's
    welcome,   ///< WELCOME (taken)
    pong,      ///< PONG (taken)
    fallback,  ///< ERROR: ferryd refused the protocol version of HELLO; HELLO went again with an older one
  };
  /// Takes WELCOME and PONG. After either, instance_changed() says whether ferryd is a new instance.
  event handle(const std::vector<zmq::message_t>& frames, clock::time_point now);
  /// True when the last WELCOME or PONG came from another ferryd instance than the one before (a restart).
  [[nodiscard]] bool instance_changed() const noexcept { return instance_changed_; }
  [[nodiscard]] std::uint64_t instance() const noexcept { return instance_; }

  /// Reads the socket monitor. Returns true when the connection came back after a disconnect: HELLO has
  /// then been sent again and welcome() is reset until the new WELCOME arrives.
  bool check_reconnect();
  /// Sends PING when it is due and logs when ferryd has not answered for a while. Call every iteration.
  void tick(clock::time_point now);
  /// Milliseconds until tick() has something to do.
  [[nodiscard]] long until_next_tick(clock::time_point now) const noexcept;
  /// Adopts a heartbeat interval ferryd announced elsewhere (CONSUMING).
  void adopt_heartbeat(std::chrono::milliseconds announced) noexcept;
  [[nodiscard]] std::chrono::milliseconds heartbeat_interval() const noexcept { return heartbeat_; }

  /// The socket and the monitor, for zmq_poll (both ZMQ_POLLIN).
  void poll_items(zmq_pollitem_t* two) noexcept;
  /// True while a connection to ferryd is up (as of the last check_reconnect()), answered or not.
  [[nodiscard]] bool connected() const noexcept { return monitor_.connections() > 0; }
  /// True while ferryd answers heartbeats. Thread safety: any thread.
  [[nodiscard]] bool up() const noexcept { return up_.load(std::memory_order_relaxed); }
  [[nodiscard]] const forwarder_welcome& welcome() const noexcept { return welcome_; }
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] zmq::socket_t& socket() noexcept { return socket_; }

 private:
  static zmq::socket_t make_socket(context& ctx, const options& o);
  void send_hello();
  void heard(std::uint64_t instance, clock::time_point now);

  options options_;
  std::string endpoint_;
  zmq::socket_t socket_;
  connection_monitor monitor_;
  std::chrono::milliseconds heartbeat_;
  forwarder_welcome welcome_;
  std::uint32_t hello_version_;
  std::uint64_t unsent_ = 0;
  std::uint64_t instance_ = 0;
  bool instance_changed_ = false;
  bool disconnected_ = false;
  bool ever_heard_ = false;
  std::atomic<bool> up_{false};
  clock::time_point started_;
  clock::time_point last_heard_{};
  clock::time_point next_ping_{};
  clock::time_point next_unreachable_log_{};
};

}  // namespace ferry::detail
