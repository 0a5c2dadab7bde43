#pragma once
/// @file The sending side of brokerless topics (ZeroMQ XPUB).

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "ferry/context.hpp"
#include "ferry/message.hpp"
#include "ferry/status.hpp"
#include "ferry/wire.hpp"

namespace ferry {

/// What a publisher does when a subscriber's queue is at the high-water mark.
enum class when_full : std::uint8_t {
  drop,   ///< ZeroMQ's default: that subscriber misses the message (it sees a sequence gap)
  block,  ///< publish() waits for room (up to send_timeout), then returns timed_out; nothing is dropped
};

struct publisher_options {
  socket_options socket;
  ferry::when_full when_full = ferry::when_full::drop;
  /// With when_full::block: how long publish() waits for room before it returns timed_out, 10 s by default.
  /// 0 never waits (would_block); -1 waits as long as it takes.
  std::chrono::milliseconds send_timeout{10'000};
  /// How messages are framed: wire v2 by default; v1 for subscribers that predate it.
  wire_options wire;
};

/// Counters of one publisher.
struct publisher_stats {
  std::uint64_t published = 0;
  std::uint64_t timed_out = 0;      ///< when_full::block only
  std::uint64_t subscriptions = 0;  ///< subscribe requests seen (one per prefix per subscriber)
  std::uint64_t frames = 0;  ///< frames (v2) or frame sets (v1) sent: fewer than published with batches
};

/// Publishes messages to every subscriber whose prefix matches the topic.
///
/// Each message carries this publisher's origin id and a per-topic sequence number starting at 1, so a
/// subscriber detects and counts what it missed. Guarantee: at most once.
///
/// Thread safety: not thread-safe; use one publisher per thread.
class publisher {
 public:
  /// Binds/connects as `where` says. Throws ferry::error for a bad or busy endpoint.
  publisher(context& ctx, const endpoints& where, publisher_options options = {});

  /// Publishes `msg` under its topic. Returns ok (the payload is consumed) or, with when_full::block,
  /// timed_out / would_block with `msg` left to the caller.
  [[nodiscard]] send_status publish(message& msg);

  /// Publishes `msgs` in order, each with the next sequence number of its topic; runs of messages with the
  /// same topic go out packed in one v2 frame each (up to options.wire's batch limits), so many small
  /// messages cost one ZeroMQ frame. Returns how many were published from the front (all, with status ok);
  /// the rest stay with the caller, unchanged. With when_full::drop a subscriber at its high-water mark
  /// misses a whole frame (it sees the gap).
  [[nodiscard]] batch_status publish_batch(std::span<message> msgs);

  /// Waits until at least `count` subscribe requests have reached this publisher, so the first messages
  /// are not lost to the slow-joiner effect. Returns false on timeout.
  bool wait_for_subscriptions(std::uint64_t count, std::chrono::milliseconds timeout);

  /// This publisher's origin id (random, never 0).
  [[nodiscard]] std::uint64_t origin() const noexcept { return origin_; }
  [[nodiscard]] const std::vector<std::string>& bound() const noexcept { return bound_; }
  [[nodiscard]] publisher_stats stats();

 private:
  void read_subscriptions(int timeout_ms);
  std::uint64_t& sequence_of(const std::string& topic);
  [[nodiscard]] bool waits() const noexcept {
    return options_.when_full == when_full::block && options_.send_timeout.count() != 0;
  }

  publisher_options options_;
  zmq::socket_t socket_;
  std::vector<std::string> bound_;
  std::uint64_t origin_;
  std::unordered_map<std::string, std::uint64_t> sequences_;
  std::string last_topic_;                  // publishers often repeat a topic: skip the lookup then
  std::uint64_t* last_sequence_ = nullptr;  // element pointers survive rehashing
  publisher_stats stats_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> old_streams_;  // publish_batch's rollback
};

}  // namespace ferry
