#pragma once
// One durable queue: a stream (storage/stream.hpp: its log on disk, sequence numbers, dedup window) with
// one consumer_store (storage/consumer_store.hpp: settlements and attempt counts in a journal), and the
// delivery state in memory: read cursor, ready and parked messages, leases, subscriptions (docs/storage.md,
// docs/protocol.md "The forwarder protocol").
//
// Delivery order: first deliveries leave in the order messages were stored (a read cursor walks the
// log, so memory does not grow with the backlog). A message with a key is never in flight together with
// another message of the same key, and messages of one key are delivered in order: the ones that come
// up while their key is busy are parked (bounded) until it is free. Redeliveries go out before newer
// messages. Each delivery carries a token; a token from an expired lease settles nothing.
//
// Thread safety: owned and used by the forwarder's loop thread only.

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "consumer_store.hpp"
#include "ferry/dedup_window.hpp"
#include "group_commit.hpp"
#include "log_cursor.hpp"
#include "stream.hpp"

namespace ferry::ferryd {

// The storage names ferryd uses.
using storage::commit_batch;
using storage::commit_result;
using storage::fsync_policy;
using storage::group_commit;
using storage::journal;
using storage::key_hash;
using storage::message_record;
using storage::record_location;
using storage::recovery_report;
using storage::segment_info;
using storage::segment_writer;
using storage::settle_reason;

using steady = std::chrono::steady_clock;

struct queue_config {
  std::uint32_t max_attempts = 5;
  std::chrono::milliseconds lease{30'000};
  // The longest a delivery may be held by extending its lease (EXTEND), counted from the delivery.
  std::chrono::milliseconds max_lease{3'600'000};
  // Redelivery back-off: after a failed attempt n (1 for the first delivery) the message waits backoff[n-1]
  // (the last entry for later attempts) before it is delivered again. Empty: at once. A NACK's own delay
  // takes its place. With backoff_nack_only, lease expiry and a dead consumer redeliver at once.
  std::vector<std::chrono::milliseconds> backoff;
  bool backoff_nack_only = false;
  // Expiry: a message older than this (since it was stored) is not delivered; 0: never. A message's own
  // ferry-ttl-ms header takes its place. An expired message is dead-lettered (reason "expired: ...") or,
  // with drop_expired, settled and dropped; counted in ttl_expired either way.
  std::chrono::milliseconds message_ttl{0};
  bool drop_expired = false;
  std::uint64_t segment_bytes = 64ull << 20;
  std::uint64_t max_messages = 0;  // 0: unlimited
  std::size_t max_parked = 100'000;
  dedup_options dedup{.max_ids = 262'144, .max_age = std::chrono::minutes(2)};
  std::uint64_t dedup_retain_bytes = 1ull
                                     << 30;  // settled segments kept so the dedup window survives restarts
  // Topics only: whole segments (never the one being written) are deleted once the oldest is older than
  // retain_age, or the topic holds more than retain_bytes or retain_messages. 0: no limit.
  std::chrono::milliseconds retain_age{0};
  std::uint64_t retain_bytes = 0;
  std::uint64_t retain_messages = 0;
};

/// Counters of one queue, monotonic since start-up.
struct queue_counters {
  std::uint64_t confirmed = 0;
  std::uint64_t delivered = 0;
  std::uint64_t acked = 0;
  std::uint64_t nacked = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t expired = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t deduplicated = 0;
  std::uint64_t refused = 0;
  std::uint64_t stale_acks = 0;
  std::uint64_t rejected = 0;  // REJECTs from consumers
  std::uint64_t extended = 0;  // leases extended (EXTEND tokens that took effect)
  std::uint64_t ttl_expired =
      0;  // messages past their time to live, not delivered (dead-lettered or dropped)
  // Subscriptions: messages the topic's retention deleted before this subscription settled them.
  std::uint64_t retention_skipped = 0;
  // Subscriptions: SUBSCRIBEs whose start lay before the oldest retained message (told so in CONSUMING).
  std::uint64_t truncated_starts = 0;
  // Topics: messages published on the live feed, FETCH requests and the messages they read.
  std::uint64_t fed = 0;
  std::uint64_t fetches = 0;
  std::uint64_t fetched = 0;
};

/// A consumer connection's subscription to this queue.
struct subscription {
  std::string identity;
  std::uint32_t prefetch = 1;
  std::uint32_t version = 1;                  // protocol version of its DELIVERs (CONSUME's "version")
  std::uint32_t unacked = 0;                  // deliveries not answered yet, expired ones included
  std::unordered_set<std::uint64_t> expired;  // tokens whose lease ran out but may still be answered
  // DELIVERs being assembled during one dispatch: tokens, and the messages as block entries (envelope,
  // payload as bin) one after the other, with where each entry's parts lie (for protocol v1's frames).
  struct entry_span {
    std::size_t begin = 0, envelope = 0, payload_at = 0, payload = 0, end = 0;
  };
  std::string out_tokens;
  std::string out_entries;
  std::vector<entry_span> out_spans;
  [[nodiscard]] std::uint32_t credit() const noexcept { return unacked >= prefetch ? 0 : prefetch - unacked; }
};

/// A message the queue wants moved to its dead-letter queue.
struct dead_letter_request {
  std::uint64_t seq = 0;
  record_location where;
  std::uint32_t attempts = 0;
  std::string reason;
  steady::time_point not_before{};  // a failed move waits before it is tried again
};

/// What a `queue` object is. A durable queue owns its stream and its one consumer store. A durable topic
/// owns a stream and no store of its own: each of its subscriptions is a `queue` of kind subscription that
/// reads the topic's stream with a consumer store (journal) of its own, so every subscription gets every
/// message, and the processes sharing one subscription split them like the consumers of a queue.
enum class queue_kind { queue, topic, subscription };

class queue {
 public:
  /// A durable queue (kind queue) or a topic (kind topic) whose stream lives in `dir`.
  queue(std::string name, std::uint32_t index, std::filesystem::path dir, queue_config config,
        std::uint64_t token_prefix, queue_kind kind = queue_kind::queue);
  /// A subscription of `topic` whose journal is `journal_file`. Register it with topic.attach() before the
  /// topic recovers, or start it with start_at() afterwards.
  queue(std::string name, std::uint32_t index, queue& topic, std::filesystem::path journal_file,
        queue_config config, std::uint64_t token_prefix);

  [[nodiscard]] queue_kind kind() const noexcept { return kind_; }
  /// A topic's messages carry this as their origin: the XXH3-64 hash of "topic:<name>" (never 0).
  [[nodiscard]] std::uint64_t origin() const noexcept { return origin_; }
  /// For a topic: its subscriptions. For a subscription: its topic (nullptr otherwise).
  [[nodiscard]] const std::vector<queue*>& subscriptions() const noexcept { return subscriptions_; }
  [[nodiscard]] queue* topic() const noexcept { return topic_; }
  /// A topic takes `sub` (of kind subscription, over this topic's stream) as one of its subscriptions.
  void attach(queue& sub);
  /// A topic forgets `sub` (an ephemeral subscription that ended).
  void detach(queue& sub);
  /// A subscription created after start-up begins at `first_seq` of its topic (see
  /// storage::consumer_store::start_at). Throws ferry::error.
  void start_at(std::uint64_t first_seq);
  /// The stream's sequence numbers: the next to be given, the last committed.
  [[nodiscard]] std::uint64_t next_seq() const noexcept { return stream_->next_seq(); }
  [[nodiscard]] std::uint64_t committed_through() const noexcept { return stream_->committed_through(); }
  /// The first seq a subscription created at `time_us` (ferryd's clock: stored_at) would start at: the
  /// first message stored at or after it. Reads the one segment where that happens.
  [[nodiscard]] std::uint64_t first_seq_at(std::int64_t time_us) const;
  /// The oldest seq the stream still holds (next_seq() when it holds none).
  [[nodiscard]] std::uint64_t first_retained() const noexcept;
  /// A subscription's position: the lowest seq it has not settled.
  [[nodiscard]] std::uint64_t low_watermark() const noexcept { return store_.low_watermark(); }
  /// Messages retention skipped for this subscription since it was last subscribed to (and resets it).
  std::uint64_t take_skipped_unseen() noexcept { return std::exchange(skipped_unseen_, 0); }

  /// Replays the journal, scans the log (repairing a torn tail), rebuilds the dedup window from recent
  /// records and positions the read cursor. A queue without a directory gets one at its first append.
  /// Throws ferry::error when the directory is unusable.
  void recover(recovery_report& log_report, recovery_report& journal_report);
  /// A subscription's journal, replayed before its topic's stream is recovered (see recover()).
  void replay_journal(recovery_report& journal_report) { store_.replay(journal_report); }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint32_t index() const noexcept { return index_; }
  [[nodiscard]] const std::shared_ptr<segment_writer>& writer() const noexcept { return stream_->writer(); }
  [[nodiscard]] storage::journal& state_journal() noexcept { return store_.file(); }
  [[nodiscard]] const std::filesystem::path& state_journal_path() noexcept { return store_.file().path(); }
  [[nodiscard]] queue_counters& counters() noexcept { return counters_; }
  [[nodiscard]] const queue_counters& counters() const noexcept { return counters_; }
  [[nodiscard]] const queue_config& config() const noexcept { return config_; }

  // ---- producing -------------------------------------------------------------------------------------
  /// Remembers `id` in the dedup window with the seq the next append() will use. Returns nullopt for a
  /// new id (append() or append_failed_admission() must follow), or the seq of the first copy of a resend.
  std::optional<std::uint64_t> admit(const message_id& id, steady::time_point now) {
    return stream_->admit(id, now);
  }
  /// True when the message with `seq` is stored and not settled.
  [[nodiscard]] bool unsettled(std::uint64_t seq) const noexcept {
    return seq < stream_->next_seq() && stream_->commit_finished(seq) && !store_.settled(seq);
  }
  /// Remembers `id` afresh (its earlier copy is gone) with the seq the next append() will use.
  void readmit(const message_id& id, steady::time_point now) { stream_->readmit(id, now); }
  /// True when the message with `seq` went through a finished commit (a resend of it is confirmed at once);
  /// false while it waits in a batch.
  [[nodiscard]] bool commit_finished(std::uint64_t seq) const noexcept {
    return stream_->commit_finished(seq);
  }
  /// See storage::stream::checkpoint.
  int checkpoint() { return kind_ == queue_kind::subscription ? -1 : stream_->checkpoint(); }
  /// Before admitting a batch of ids: starts loading what their dedup checks touch.
  void prefetch(const message_id* ids, std::size_t n) const noexcept { stream_->prefetch(ids, n); }
  /// True when `id` is in the dedup window.
  [[nodiscard]] bool seen(const message_id& id, steady::time_point now) { return stream_->seen(id, now); }
  /// True when accepting `n` more messages would exceed max_messages.
  [[nodiscard]] bool full(std::size_t n = 1) const noexcept;
  /// Appends a record to the batch being gathered; returns its seq. `stored_at_us` is ferryd's clock;
  /// `flags` storage::record_flag_ttl when the envelope has a ferry-ttl-ms header.
  std::uint64_t append(const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                       std::string_view payload, std::int64_t stored_at_us, std::uint8_t flags = 0);
  [[nodiscard]] bool has_pending() const noexcept { return stream_->has_pending(); }
  [[nodiscard]] std::size_t unwritten_bytes() const noexcept {
    return kind_ == queue_kind::subscription ? 0 : stream_->unwritten_bytes();
  }
  /// Takes the gathered records for the commit thread.
  std::string take_pending() { return stream_->take_pending(); }
  /// Takes back a written batch's buffer so the next batch reuses its memory (no page faults per batch).
  void recycle(std::string&& buffer) { stream_->recycle(std::move(buffer)); }
  /// Applies a commit outcome.
  void committed(const segment_writer::outcome& out);
  /// Forgets a message whose append failed: its id may be sent again, its seq counts as settled.
  void append_failed(const message_id& id, std::uint64_t seq);
  /// Forgets an id admitted but then refused before it was appended.
  void append_failed_admission(const message_id& id) { stream_->forget(id); }

  // ---- consuming -------------------------------------------------------------------------------------
  subscription& subscribe(const std::string& identity, std::uint32_t prefetch, std::uint32_t version = 1);
  /// The consumer went away (heartbeat timeout, error) or cancelled: its deliveries go back to the queue.
  /// With `penalty` false (a clean cancel) their attempt count is restored.
  void unsubscribe(const std::string& identity, bool penalty);
  [[nodiscard]] bool has_subscriber(const std::string& identity) const noexcept {
    return subs_.count(identity) != 0;
  }
  [[nodiscard]] std::size_t subscribers() const noexcept { return subs_.size(); }

  enum class answer { settled, stale, unknown };
  answer ack(const std::string& identity, std::uint64_t token);
  /// `delay`: redeliver no earlier than this from now (a consumer's "retry in"); nullopt follows the queue's
  /// back-off schedule.
  answer nack(const std::string& identity, std::uint64_t token, std::string reason,
              std::optional<std::chrono::milliseconds> delay = std::nullopt);
  answer reject(const std::string& identity, std::uint64_t token, std::string reason);
  /// Moves the lease of `token` to `by` from `now`, but never past max_lease from its delivery and never
  /// earlier than it is. settled: extended (or already at its maximum); stale/unknown: nothing changed.
  answer extend(const std::string& identity, std::uint64_t token, std::chrono::milliseconds by,
                steady::time_point now);

  /// Hands messages to subscribers with free credit; fills each subscription's out_* fields and appends
  /// attempt records to the journal. Returns the number of deliveries.
  std::size_t dispatch(steady::time_point now);
  [[nodiscard]] bool has_work() const noexcept;
  /// Subscriptions with an assembled DELIVER.
  [[nodiscard]] std::unordered_map<std::string, std::unique_ptr<subscription>>& subs() noexcept {
    return subs_;
  }

  /// Returns expired leases to the queue.
  void expire_leases(steady::time_point now);
  /// Returns to the queue the messages whose redelivery delay has passed.
  void release_due(steady::time_point now);
  /// Moves every lease's deadline `by` later (time ferryd was not running does not count against them).
  void extend_leases(steady::duration by);

  // ---- dead letters ------------------------------------------------------------------------------------
  std::vector<dead_letter_request> take_dead_letters() { return std::exchange(dead_letters_, {}); }
  void dead_lettered(std::uint64_t seq);  // the DLQ copy is durable: settle
  /// The move did not happen (or is not finished): try again after `delay`.
  void dead_letter_failed(dead_letter_request req, std::chrono::milliseconds delay);
  /// Reads a stored record (for dead-lettering and listing).
  bool read(const record_location& where, std::string& buffer, message_record& out) const {
    return stream_->log().read(where, buffer, out);
  }

  /// Non-destructive listing of up to `limit` waiting messages with `from` <= seq < `before`, in seq order
  /// (dead-letter inspection).
  struct listed {
    std::uint64_t seq;
    record_location where;
  };
  std::vector<listed> list(std::size_t limit, std::uint64_t from = 0, std::uint64_t before = ~0ull) const;
  /// Settles a waiting (not in-flight) message with `reason` (replay, purge). False when not waiting.
  bool settle_waiting(std::uint64_t seq, settle_reason reason);

  // ---- housekeeping ------------------------------------------------------------------------------------
  /// Deletes segments whose messages are all settled (keeping recent ones for the dedup window) and
  /// compacts the journal when it has grown. Call when the commit thread is idle.
  void housekeeping(std::int64_t now_us);

  [[nodiscard]] std::uint64_t depth() const noexcept { return store_.unsettled(); }
  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_.size(); }
  [[nodiscard]] std::size_t parked() const noexcept { return parked_total_; }
  /// Messages waiting out a redelivery delay, and when the first of them is due (nullopt when none).
  [[nodiscard]] std::size_t delayed() const noexcept { return delayed_.size(); }
  [[nodiscard]] std::optional<steady::time_point> next_due() const noexcept {
    if (delayed_.empty()) return std::nullopt;
    return delayed_.begin()->first;
  }
  [[nodiscard]] std::uint64_t disk_bytes() const noexcept {
    return kind_ == queue_kind::subscription ? 0 : stream_->disk_bytes();
  }
  /// Messages the stream holds (a topic's retained messages).
  [[nodiscard]] std::uint64_t stream_messages() const noexcept;
  /// A topic's stored messages from `from` on (FETCH): appends up to `max_count` of them to `entries` as
  /// block entries (envelope, payload as bin; at least one whatever `max_bytes` says) and returns how many.
  /// `next` receives the seq after the last one taken (or where reading would start: `from`, or the oldest
  /// retained message when `from` lies before it).
  std::size_t fetch(std::uint64_t from, std::size_t max_count, std::size_t max_bytes, std::string& entries,
                    std::uint64_t& next) const;

 private:
  struct waiting {
    std::uint64_t seq = 0;
    record_location where;
    std::uint32_t attempts = 0;
    std::uint64_t key_hash = 0;
  };
  struct delivery {
    waiting msg;
    subscription* sub = nullptr;
    steady::time_point deadline;
    steady::time_point limit;  // the latest deadline an EXTEND may set: delivered + max_lease
  };
  struct key_state {
    bool busy = false;        // a message of this key is in flight or being dead-lettered
    std::uint32_t ready = 0;  // messages of this key in ready_
    std::deque<waiting> parked;
  };
  struct peeked {
    waiting msg;
    std::int64_t stored_at_us = 0;
    std::uint8_t flags = 0;
    std::string_view envelope;
    std::string_view payload;
  };

  bool peek(peeked& out);
  /// What a message's record says about when it may be delivered: decoded from its envelope only when
  /// `flags` says it has a ferry-ttl-ms or ferry-not-before header.
  struct timing {
    std::optional<std::chrono::milliseconds> expired;  // past this time to live (its own, else the queue's)
    std::int64_t not_before_ms = 0;                    // ferry-not-before (Unix ms); 0: none
  };
  timing timing_of(std::int64_t stored_at_us, std::uint8_t flags, std::string_view envelope) const;
  /// Takes an expired message out of delivery: to the dead-letter queue, or settled (drop_expired).
  /// Its key must be marked busy.
  void expire(const waiting& w, std::chrono::milliseconds ttl);
  void advance(const peeked& p);
  void settle(std::uint64_t seq, std::uint64_t segment, settle_reason reason);
  void return_to_ready(waiting msg);
  /// A failed attempt (NACK, lease expiry, dead consumer): back to the queue after `delay`, or after the
  /// back-off schedule's delay for its attempt when nullopt (and `scheduled`), else at once.
  void return_after_failure(waiting msg, std::optional<std::chrono::milliseconds> delay, bool scheduled,
                            steady::time_point now);
  void release_key(std::uint64_t key_hash);
  subscription* best_subscription();
  void deliver(subscription& sub, const waiting& msg, std::string_view envelope, std::string_view payload,
               steady::time_point now);
  void record_attempts(std::uint64_t seq, std::uint32_t attempts);
  void ensure_on_disk();
  void position_cursor();
  /// A topic's retention (see queue_config::retain_age).
  void retain(std::int64_t now_us);
  /// A subscription loses every message through `last_seq` (held in segment `base`, which retention is
  /// about to delete): they count as settled, are dropped from memory and the cursor moves past them.
  void skip_through(std::uint64_t last_seq, std::uint64_t base);

  std::string name_;
  std::uint32_t index_;
  std::filesystem::path dir_;
  queue_config config_;
  queue_kind kind_;
  std::shared_ptr<storage::stream> stream_;
  storage::consumer_store store_;
  std::vector<queue*> subscriptions_;  // a topic's
  queue* topic_ = nullptr;             // a subscription's
  std::uint64_t skipped_unseen_ = 0;   // see take_skipped_unseen
  std::uint64_t origin_ = 0;           // a topic's: see origin()
  queue_counters counters_;
  std::unordered_map<std::uint64_t, std::string> last_error_;  // why the last attempt failed, by seq

  // delivery
  storage::log_cursor cursor_;  // over committed records not yet delivered for the first time
  std::map<std::uint64_t, waiting> ready_;
  std::unordered_map<std::uint64_t, key_state> keys_;
  std::size_t parked_total_ = 0;
  // Messages waiting out a redelivery delay, by due time; their keys stay busy meanwhile (so the next
  // message of a key does not overtake one that failed). In memory: a restart makes them due at once.
  std::multimap<steady::time_point, waiting> delayed_;
  std::unordered_map<std::uint64_t, delivery> in_flight_;  // by token
  std::priority_queue<std::pair<steady::time_point, std::uint64_t>,
                      std::vector<std::pair<steady::time_point, std::uint64_t>>, std::greater<>>
      leases_;
  std::unordered_map<std::string, std::unique_ptr<subscription>> subs_;
  std::uint64_t token_prefix_;
  std::uint64_t next_token_ = 1;
  std::uint64_t rr_ = 0;
  std::string read_buffer_;

  // dead letters
  std::vector<dead_letter_request> dead_letters_;
  std::unordered_map<std::uint64_t, waiting> dead_lettering_;
};

}  // namespace ferry::ferryd
