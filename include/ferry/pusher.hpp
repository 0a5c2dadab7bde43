#pragma once
/// @file The sending side of a brokerless work queue (ZeroMQ PUSH).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "ferry/context.hpp"
#include "ferry/message.hpp"
#include "ferry/status.hpp"

namespace ferry {

struct pusher_options {
  socket_options socket;
  /// How long send() waits for room when every worker's queue is at the high-water mark (or no worker is
  /// connected yet). -1 waits as long as it takes; 0 never waits (send returns would_block).
  std::chrono::milliseconds send_timeout{-1};
  /// Largest payload send() accepts, in bytes; larger ones return too_large. Defaults to the socket's
  /// max_message_size, so a receiver with the same settings never disconnects us for a frame it refuses.
  std::int64_t max_payload = -1;
};

/// Counters of one pusher (monotonic since construction).
struct pusher_stats {
  std::uint64_t sent = 0;
  std::uint64_t would_block = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t too_large = 0;
};

/// Sends work to one or many worker pools; each message reaches one worker (round-robin over connected
/// peers).
///
/// Guarantee: at most once. A message handed to ZeroMQ is queued for a worker; if that worker dies, or the
/// process exits before the queue drains, the message is lost. send() never drops silently: when there is
/// no room it waits (up to send_timeout) or returns a status saying so. Use ferryd for confirmed, durable
/// delivery.
///
/// Thread safety: not thread-safe; use one pusher per thread (they may share a context and endpoints).
class pusher {
 public:
  /// Binds and connects as `where` says. Throws ferry::error for a bad or busy endpoint.
  pusher(context& ctx, const endpoints& where, pusher_options options = {});

  /// Sends `msg` to one worker. Gives the message an id and timestamp if it has none.
  /// Returns ok (the payload is consumed), or would_block / timed_out / too_large / closed with `msg`
  /// left to the caller.
  [[nodiscard]] send_status send(message& msg);

  /// Endpoints bound, with `*` ports resolved (for tcp://127.0.0.1:*).
  [[nodiscard]] const std::vector<std::string>& bound() const noexcept { return bound_; }
  [[nodiscard]] pusher_stats stats() const noexcept;

 private:
  pusher_options options_;
  zmq::socket_t socket_;
  std::vector<std::string> bound_;
  pusher_stats stats_;
};

}  // namespace ferry
