#pragma once
/// @file Administering ferryd: its counters (STATS) and its dead-letter queues (DLQ).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ferry/context.hpp"
#include "ferry/message.hpp"
#include "ferry/message_id.hpp"

namespace ferry {

/// One queue in ferryd's STATS (docs/protocol.md, STATS). Counters count since ferryd started; depth,
/// in_flight, parked, consumers, disk_bytes, delayed and next_due_ms are current values. A field an older
/// ferryd does not send is 0.
struct queue_stats {
  std::uint64_t depth = 0;          ///< stored messages not yet settled
  std::uint64_t in_flight = 0;      ///< deliveries with a live lease
  std::uint64_t parked = 0;         ///< messages held back behind a busy key
  std::uint64_t consumers = 0;      ///< subscribed connections
  std::uint64_t confirmed = 0;      ///< messages stored and confirmed (resent copies not included)
  std::uint64_t delivered = 0;      ///< deliveries, redeliveries included
  std::uint64_t acked = 0;          ///< messages settled by ACK
  std::uint64_t nacked = 0;         ///< NACKs that took effect
  std::uint64_t redelivered = 0;    ///< deliveries with attempt > 1
  std::uint64_t expired = 0;        ///< leases that expired
  std::uint64_t dead_lettered = 0;  ///< messages moved to the dead-letter queue
  std::uint64_t deduplicated = 0;   ///< resent copies confirmed without being stored again
  std::uint64_t refused = 0;        ///< REFUSEs for this queue
  std::uint64_t rejected = 0;       ///< REJECTs (a handler's reject_message) that took effect
  std::uint64_t stale_acks = 0;     ///< ACK, NACK or REJECT tokens that settled nothing
  std::uint64_t disk_bytes = 0;     ///< bytes of the queue's log segments
  std::uint64_t delayed = 0;        ///< messages waiting out a redelivery delay (back-off, NACK's delay)
  std::uint64_t next_due_ms = 0;    ///< milliseconds until the first delayed message is due (0: none)
  std::uint64_t extended = 0;       ///< lease extensions that took effect (EXTEND)
  std::uint64_t ttl_expired = 0;    ///< messages past their time to live, not delivered
  // A topic's subscription ("topic@name") only; 0 for queues.
  std::uint64_t position = 0;           ///< the first seq of the topic it has not settled
  std::uint64_t retention_skipped = 0;  ///< messages the topic's retention deleted before it settled them
  std::uint64_t truncated_starts = 0;   ///< subscribes whose start lay before the oldest retained message

  friend bool operator==(const queue_stats&, const queue_stats&) = default;
};

/// One durable topic in ferryd's STATS. Its subscriptions are in forwarder_stats::queues as
/// "topic@name", where depth is the subscription's lag and in_flight its pending acks.
struct topic_stats {
  std::uint64_t first_seq = 0;      ///< oldest retained message (last_seq + 1 when none)
  std::uint64_t last_seq = 0;       ///< newest stored message (0: none yet)
  std::uint64_t messages = 0;       ///< messages retained
  std::uint64_t disk_bytes = 0;     ///< bytes of the topic's log segments
  std::uint64_t published = 0;      ///< messages stored and confirmed (resent copies not included)
  std::uint64_t deduplicated = 0;   ///< resent copies confirmed without being stored again
  std::uint64_t refused = 0;        ///< REFUSEs for this topic
  std::uint64_t subscriptions = 0;  ///< subscriptions, durable and ephemeral
  std::uint64_t fed = 0;            ///< messages published on ferryd's live feed (--feed)
  std::uint64_t fetches = 0;        ///< FETCH requests answered (subscribers repairing gaps)
  std::uint64_t fetched = 0;        ///< messages those requests read back

  friend bool operator==(const topic_stats&, const topic_stats&) = default;
};

/// ferryd's STATS reply. A field an older ferryd does not send is 0 (or empty); fields a newer one adds
/// are ignored.
struct forwarder_stats {
  std::string server;                  ///< "ferryd <version>"
  std::uint64_t instance = 0;          ///< random, drawn at each start: a change means ferryd restarted
  double uptime_s = 0;                 ///< seconds since start
  std::uint64_t commits = 0;           ///< group commits done
  std::uint64_t fsyncs = 0;            ///< fdatasync calls made by the commit thread
  double fsync_seconds = 0;            ///< total seconds spent in those calls
  std::uint64_t malformed_frames = 0;  ///< malformed input dropped (bad envelopes, frame counts, verbs)
  std::uint64_t disk_full = 0;  ///< 1 while producers are refused with disk_full (low space, a failed write)
  std::map<std::string, queue_stats> queues;  ///< every queue ferryd knows, dead-letter queues included
  std::map<std::string, topic_stats> topics;  ///< every durable topic

  friend bool operator==(const forwarder_stats&, const forwarder_stats&) = default;
};

/// A message in a dead-letter queue, as DLQ list returns it.
struct dead_letter {
  std::uint64_t seq = 0;          ///< position in the dead-letter queue's log
  message_id id;                  ///< nil when ferryd could not read the stored copy
  std::int64_t timestamp_us = 0;  ///< when the message was made (Unix microseconds)
  std::string key;                ///< "" when none
  ferry::headers headers;         ///< with ferry-attempts, ferry-dead-letter-reason, ferry-source-queue
  std::int64_t stored_at_us = 0;  ///< when it was dead-lettered (Unix microseconds)
  std::string payload;
};

/// Which dead letters a DLQ operation acts on: the oldest `limit` waiting ones with from_seq <= seq <
/// before_seq whose ferry-dead-letter-reason header contains `reason`.
struct dlq_filter {
  std::uint64_t limit = 100;         ///< ferryd takes at most 10,000 for list, 1,000,000 otherwise
  std::uint64_t from_seq = 0;        ///< e.g. the next_seq of an earlier answer, to go on from there
  std::uint64_t before_seq = ~0ull;  ///< e.g. the queue's next seq when a paced replay began
  std::string reason;                ///< "" for any; at most 1024 bytes
};

/// Where a DLQ operation stopped, to go on from there with dlq_filter::from_seq.
struct dlq_position {
  std::uint64_t next_seq = 0;  ///< one past the last dead letter looked at (from_seq when none was)
  bool more = false;           ///< it stopped at the limit, not at the end of what was selected
};

/// The answer to DLQ list.
struct dlq_listing {
  std::string queue;                  ///< the dead-letter queue's name ("jobs.dlq")
  std::uint64_t depth = 0;            ///< its unsettled messages, listed or not
  std::vector<dead_letter> messages;  ///< oldest first
  dlq_position position;
};

/// The answer to DLQ replay or purge.
struct dlq_result {
  std::uint64_t done = 0;     ///< dead letters replayed or purged
  std::uint64_t depth = 0;    ///< the dead-letter queue's unsettled messages afterwards
  std::uint64_t end_seq = 0;  ///< the seq its next dead letter will get: before_seq for "those there are now"
  dlq_position position;
};

/// Asks ferryd for its counters and lists, replays or purges its dead letters, over one DEALER
/// connection (docs/protocol.md, STATS and DLQ). Each call sends one request and waits for its answer.
///
/// Throws (every call): ferry::error when ferryd does not answer within `timeout` (the connection is then
/// made afresh, so a late answer is never taken for the next one), answers ERROR, or sends a reply that
/// does not decode; the message names the endpoint and what to check.
/// Ownership: `ctx` must outlive the admin, whose socket it made.
/// Thread safety: none; use an admin from one thread at a time.
class admin {
 public:
  static constexpr std::chrono::milliseconds default_timeout{5000};

  /// Connects to ferryd at `forwarder` (e.g. tcp://127.0.0.1:5570) in the background.
  /// Throws ferry::error for a malformed endpoint.
  admin(context& ctx, const std::string& forwarder);
  ~admin();
  admin(admin&&) noexcept;
  admin& operator=(admin&&) noexcept;

  /// STATS: ferryd's counters and every queue's.
  [[nodiscard]] forwarder_stats stats(std::chrono::milliseconds timeout = default_timeout);

  /// DLQ list: up to `limit` dead letters of `queue` (the source queue: "jobs" for jobs.dlq), oldest
  /// first; ferryd lists at most 10,000 per request. A queue without dead letters gives an empty list.
  [[nodiscard]] dlq_listing dlq_list(const std::string& queue, std::uint64_t limit = 100,
                                     std::chrono::milliseconds timeout = default_timeout);
  /// DLQ replay: moves up to `limit` dead letters of `queue` back to it (without the ferry-* headers,
  /// from attempt 1 again). Returns how many. After a timeout some may have been moved.
  std::uint64_t dlq_replay(const std::string& queue, std::uint64_t limit = 100,
                           std::chrono::milliseconds timeout = default_timeout);
  /// DLQ purge: deletes up to `limit` dead letters of `queue`. Returns how many. After a timeout some may
  /// have been deleted.
  std::uint64_t dlq_purge(const std::string& queue, std::uint64_t limit = 100,
                          std::chrono::milliseconds timeout = default_timeout);

  /// The same three operations on the dead letters `filter` selects (a paced or filtered redrive: one
  /// request per call; go on from the answer's position).
  [[nodiscard]] dlq_listing dlq_list(const std::string& queue, const dlq_filter& filter,
                                     std::chrono::milliseconds timeout = default_timeout);
  dlq_result dlq_replay(const std::string& queue, const dlq_filter& filter,
                        std::chrono::milliseconds timeout = default_timeout);
  dlq_result dlq_purge(const std::string& queue, const dlq_filter& filter,
                       std::chrono::milliseconds timeout = default_timeout);

  [[nodiscard]] const std::string& forwarder() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace ferry
