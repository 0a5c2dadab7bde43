#pragma once
/// @file The sending side of a brokerless work queue (ZeroMQ PUSH).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ferry/context.hpp"
#include "ferry/message.hpp"
#include "ferry/status.hpp"
#include "ferry/wire.hpp"

namespace ferry {
namespace detail {
class connection_monitor;
}

struct pusher_options {
  socket_options socket;
  /// How long send() waits for room when every worker's queue is at the high-water mark (or no worker is
  /// connected yet), then returns timed_out: 10 s by default. 0 never waits (send returns would_block);
  /// -1 waits as long as it takes.
  std::chrono::milliseconds send_timeout{10'000};
  /// Largest payload send() accepts, in bytes; larger ones return too_large. Defaults to the socket's
  /// max_message_size, so a receiver with the same settings never disconnects us for a frame it refuses.
  std::int64_t max_payload = -1;
  /// How messages are framed: wire v2 by default (one frame per message, or per batch); v1 for receivers
  /// that predate it.
  wire_options wire;
};

/// Counters of one pusher (monotonic since construction).
struct pusher_stats {
  std::uint64_t sent = 0;
  std::uint64_t would_block = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t too_large = 0;
  std::uint64_t invalid = 0;    ///< messages that cannot be framed (a topic with 0x00 in wire v2)
  std::uint64_t frames = 0;     ///< frames (v2) or frame sets (v1) sent: fewer than `sent` with batches
  std::uint64_t connects = 0;   ///< connections made or accepted so far (a reconnect counts again)
  std::uint64_t connected = 0;  ///< connections up now (a current value, not a counter)
};

/// Sends work to one or many worker pools; each message reaches one worker (round-robin over connected
/// peers).
///
/// Guarantee: at most once. A message handed to ZeroMQ is queued for a worker; if that worker dies, or the
/// process exits before the queue drains, the message is lost. send() never drops silently: when there is
/// no room it waits (up to send_timeout) or returns a status saying so. Use ferryd for confirmed, durable
/// delivery.
///
/// Connection state is logged: a connection made or lost, at info; while a send waits with no worker
/// connected, "pusher: cannot reach ENDPOINT (retrying)" (or, bound, "no worker has connected to ENDPOINT
/// yet") after a second and every 5 s. The pusher reads its connection events while a send waits, every
/// 1024 sends and in stats(); an idle pusher logs nothing.
///
/// Thread safety: not thread-safe; use one pusher per thread (they may share a context and endpoints).
class pusher {
 public:
  /// Binds and connects as `where` says. Throws ferry::error for a bad or busy endpoint.
  pusher(context& ctx, const endpoints& where, pusher_options options = {});
  ~pusher();
  pusher(pusher&&) noexcept;
  pusher& operator=(pusher&&) = delete;

  /// Sends `msg` to one worker. Gives the message an id and timestamp if it has none.
  /// Returns ok (the payload is consumed), or would_block / timed_out / too_large / closed with `msg`
  /// left to the caller.
  [[nodiscard]] send_status send(message& msg);

  /// Sends `msgs` in order, packing runs of messages with the same topic into one v2 frame each (up to
  /// options.wire's batch limits), so many small messages cost one ZeroMQ frame. A frame goes to one worker
  /// pool as a whole: batching trades balance across pools for rate. Returns how many were sent from the
  /// front (all, with status ok); the rest stay with the caller, unchanged but for the id and timestamp
  /// that every message without one is given first.
  [[nodiscard]] batch_status send_batch(std::span<message> msgs);

  /// Endpoints bound, with `*` ports resolved (for tcp://127.0.0.1:*).
  [[nodiscard]] const std::vector<std::string>& bound() const noexcept { return bound_; }
  /// The counters, and the connections as of now.
  [[nodiscard]] pusher_stats stats() const;

 private:
  using clock = std::chrono::steady_clock;
  void count(send_status s, std::uint64_t n) noexcept;
  [[nodiscard]] bool payload_too_large(const message& msg) const noexcept;
  /// Waits until the socket may take a message or `deadline` passes (false then), logging connection
  /// events meanwhile.
  bool wait_for_room(clock::time_point deadline);
  [[nodiscard]] clock::time_point deadline() const noexcept;
  /// Takes the connection events queued so far and logs them; says when no worker is connected.
  void read_connections() const;

  pusher_options options_;
  zmq::socket_t socket_;
  // Reading connection events changes nothing a caller sees but the connection counts: stats() stays const.
  mutable std::unique_ptr<detail::connection_monitor> monitor_;
  std::vector<std::string> connect_to_;
  std::vector<std::string> bound_;
  pusher_stats stats_;
  std::uint32_t sends_since_events_ = 0;
  clock::time_point started_;
  mutable clock::time_point next_unreachable_log_;
};

}  // namespace ferry
