#pragma once
/// @file Durable consuming: a worker pool fed by ferryd, with acknowledgements.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "ferry/context.hpp"
#include "ferry/dedup_window.hpp"
#include "ferry/envelope.hpp"
#include "ferry/message.hpp"

namespace ferry {

/// Throw from a consumer's handler to send the message straight to the dead-letter queue
/// (`<queue>.dlq`) with this reason, without further attempts. Any other exception asks for a redelivery.
class reject_message : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throw from a consumer's handler to have the message delivered again no earlier than `delay` from now
/// ("retry in"), with this reason as its last error. It counts as a failed attempt, like any exception: at
/// ferryd's --max-attempts the message goes to the dead-letter queue instead. The delay replaces ferryd's
/// --backoff-ms for this attempt. Throws std::invalid_argument for a delay below 0 or above 24 hours.
class retry_message : public std::runtime_error {
 public:
  retry_message(std::chrono::milliseconds delay, const std::string& reason);
  [[nodiscard]] std::chrono::milliseconds delay() const noexcept { return delay_; }

 private:
  std::chrono::milliseconds delay_;
};

struct consumer_options {
  /// Handler threads. A thread whose handler calls are quick (under 100 µs) takes up to 16 of the
  /// messages waiting at once, its share among the threads, to save locking per message; a slower
  /// handler takes one at a time.
  unsigned threads = 1;
  /// Most messages held (being handled or waiting) at once; ferryd sends no more until some are answered.
  /// 0 picks 2 x threads + 8.
  std::uint32_t prefetch = 0;
  /// Filters redeliveries of messages this consumer already handled (for example when its ack was lost,
  /// or ferryd restarted before the ack reached its disk). On by default, remembering the last 100,000
  /// handled ids for up to 2 minutes (about 5 MiB); std::nullopt turns it off.
  std::optional<dedup_options> dedup = dedup_options{.max_ids = 100'000, .max_age = std::chrono::minutes(2)};
  /// How often ferryd is pinged. ferryd declares a consumer dead after its --heartbeat-timeout-ms.
  std::chrono::milliseconds heartbeat_interval{1000};
  /// Keeps the lease of every message this consumer holds (being handled, or waiting for a handler thread)
  /// from running out: once a third of ferryd's --lease-ms has passed it asks for a full lease more
  /// (EXTEND), up to ferryd's --max-lease-ms from the delivery. So a handler slower than the lease keeps its
  /// message while this consumer is alive, and a consumer that dies stops extending: its messages go to
  /// others at the heartbeat timeout. false: a handler that outlasts the lease sees its message delivered
  /// again elsewhere. Needs a ferryd that tells max_lease_ms in CONSUMING (older ones: no extension).
  bool extend_leases = true;
  decode_limits limits;
  socket_options socket;
};

/// Where a new subscription of a durable topic starts. A durable subscription that already exists resumes
/// after the last message it settled, whatever this says.
struct start_position {
  enum class kind { new_messages, first, seq, time };
  kind from = kind::new_messages;
  std::uint64_t seq = 0;                         ///< kind::seq: the first sequence number wanted
  std::chrono::system_clock::time_point time{};  ///< kind::time: the first message ferryd stored at or after

  /// Only messages published from now on (the default).
  static start_position new_messages() { return {}; }
  /// From the oldest message the topic retains.
  static start_position first() { return {kind::first, 0, {}}; }
  /// From sequence number `n` (the oldest retained one if that is later).
  static start_position at_seq(std::uint64_t n) { return {kind::seq, n, {}}; }
  /// From the first message ferryd stored at or after `t`.
  static start_position at_time(std::chrono::system_clock::time_point t) { return {kind::time, 0, t}; }
};

/// A subscription of one of ferryd's durable topics. Every subscription (every name) gets every message
/// published to the topic; the consumers sharing one name split its messages like the consumers of a queue,
/// with acknowledgements, leases, redelivery, --max-attempts and a dead-letter queue
/// (`<topic>@<name>.dlq`). ferryd stores a durable subscription's position: after a stop, a restart of
/// ferryd or kill -9, it resumes after the last message it settled. Each delivered message's sequence()
/// is its sequence number in the topic (and origin() the same for every message of the topic).
struct topic_subscription {
  std::string topic;
  /// The durable name (same rules as queue names). Empty: an ephemeral subscription, ended when this
  /// consumer stops or ferryd declares it dead; after a restart of ferryd it goes on from the message after
  /// the last one it received.
  std::string name;
  start_position start;
};

struct consumer_stats {
  std::uint64_t received = 0;      ///< deliveries taken from ferryd
  std::uint64_t handled = 0;       ///< handler returned: acknowledged
  std::uint64_t failed = 0;        ///< handler threw: negatively acknowledged (redelivered later)
  std::uint64_t rejected = 0;      ///< handler threw reject_message: sent to the dead-letter queue
  std::uint64_t duplicates = 0;    ///< redeliveries of handled messages, acknowledged without the handler
  std::uint64_t malformed = 0;     ///< deliveries that did not decode (acknowledged negatively)
  std::uint64_t resubscribed = 0;  ///< CONSUME sent again after ferryd restarted or forgot this consumer
};

/// Takes messages of one queue from ferryd and runs `handler` on each, on `threads` threads. A handler
/// that returns acknowledges the message; one that throws asks for a redelivery (the message goes to the
/// dead-letter queue after ferryd's --max-attempts), after ferryd's --backoff-ms or, for retry_message,
/// after its delay; one that throws reject_message dead-letters it now.
///
/// Guarantee: at least once, made effectively once by the dedup window: a message redelivered to this
/// consumer after its handler succeeded is acknowledged without running the handler again.
///
/// Thread safety: stop(), stats() and wait_ready() are safe from any thread except a handler thread;
/// request_stop() from any thread.
class consumer {
 public:
  /// Connects to ferryd at `forwarder` (e.g. tcp://127.0.0.1:5570) in the background, consumes `queue` and
  /// starts the threads. Throws ferry::error for a malformed endpoint, a bad queue name or bad options.
  consumer(context& ctx, const std::string& forwarder, const std::string& queue, message_handler handler,
           consumer_options options = {});
  /// The same for a subscription of a durable topic (see topic_subscription). Throws ferry::error for a
  /// malformed endpoint, a bad topic or subscription name, or bad options.
  consumer(context& ctx, const std::string& forwarder, topic_subscription subscription,
           message_handler handler, consumer_options options = {});
  /// Stops gracefully (see stop()).
  ~consumer();
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;

  /// Waits until ferryd accepted the subscription. Returns false on timeout.
  bool wait_ready(std::chrono::milliseconds timeout);
  /// Graceful stop: running handlers finish and are acknowledged; messages received but not started are
  /// handed back to ferryd (without counting as an attempt). Idempotent.
  void stop();
  /// Asks the handler threads to take no further message, without waiting. Safe from a handler (for
  /// example after the last message a program wants): the running handlers' messages are still
  /// acknowledged when they return, and stop() later hands back what was not started.
  void request_stop() noexcept;

  [[nodiscard]] consumer_stats stats() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace ferry
