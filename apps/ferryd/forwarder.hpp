#pragma once
// ferryd's event loop: one thread owns the ROUTER socket and every queue's in-memory state; a commit
// thread (group_commit) makes messages durable. docs/protocol.md specifies the messages handled here.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>

#include "data_dir.hpp"
#include "detail/wire.hpp"
#include "exit_codes.hpp"
#include "ferry/context.hpp"
#include "ferry/message.hpp"
#include "peer_table.hpp"
#include "queue.hpp"

namespace ferry::ferryd {

struct forwarder_options {
  std::filesystem::path data_dir;
  std::vector<std::string> bind{"tcp://127.0.0.1:5570"};
  // The live feed: a PUB socket on each of these publishing every topic message once it is stored, in wire
  // v2 frames a ferry::subscriber reads (each with its topic's origin and seq, so a gap is seen and FETCHed).
  std::vector<std::string> feed;
  fsync_policy fsync = fsync_policy::always;
  std::chrono::milliseconds fsync_interval{10};
  queue_config queue;
  std::chrono::milliseconds heartbeat_interval{1000};  // what clients are told to use
  std::chrono::milliseconds heartbeat_timeout{3000};   // silence after which a consumer is dead
  std::uint64_t max_message_bytes = 16ull << 20;
  std::uint64_t min_free_bytes = 64ull << 20;  // below this, producers are refused with disk_full
  std::chrono::milliseconds sync_delay{0};     // tests only: the commit thread waits this long before syncing
};

/// Which dead letters a DLQ request acts on: its options frame (docs/protocol.md, DLQ).
struct dlq_selection {
  std::uint64_t limit = 100;
  std::uint64_t from = 0;        // seq >= from
  std::uint64_t before = ~0ull;  // seq < before
  std::string reason;            // the ferry-dead-letter-reason header contains this ("": any)
};
struct dlq_walk {
  std::uint64_t done = 0;  // dead letters acted on
  std::uint64_t next = 0;  // one past the last looked at (`from` when none was): where to go on
  bool more = false;       // stopped at the limit or the scan cap, not at the end of the selection
};

class forwarder {
 public:
  /// Locks and recovers the data directory, binds the endpoints. Throws startup_error.
  explicit forwarder(forwarder_options options);
  ~forwarder();

  /// Runs until stop() or SIGTERM/SIGINT (when `handle_signals`), then shuts down cleanly: stops taking
  /// messages, finishes the group commit in progress and the one gathered, syncs journals, closes files.
  int run(bool handle_signals = true);
  /// Asks run() to return. Thread safety: safe from any thread and from a signal handler.
  void stop() noexcept;

  [[nodiscard]] const std::vector<std::string>& bound() const noexcept { return bound_; }
  /// An inproc endpoint of the same socket, for clients in this process made from context() (the
  /// metrics endpoint's STATS requests): no port, no security to set up.
  [[nodiscard]] const std::string& local_endpoint() const noexcept { return local_endpoint_; }
  [[nodiscard]] context& local_context() noexcept { return ctx_; }
  /// The live feed's endpoints, as bound (empty without forwarder_options::feed).
  [[nodiscard]] const std::vector<std::string>& feed_bound() const noexcept { return feed_bound_; }

 private:
  struct pending_append {
    std::uint64_t seq = 0;
    message_id id;
    std::string identity;              // producer to confirm; empty for internal moves
    std::uint32_t source_queue = ~0u;  // dead-letter or replay: the queue the message leaves
    std::uint64_t source_seq = 0;
    bool replay = false;
    std::unique_ptr<dead_letter_request> request;  // dead-letter moves only, to retry a failed one
  };
  struct queue_slot {
    std::unique_ptr<queue> q;
    std::vector<pending_append> gathering;
    std::vector<pending_append> committing;
    std::unordered_multimap<message_id, std::string> extra_waiters;  // resends of a message not yet durable
    std::unordered_set<std::uint64_t>
        replaying;  // a dead-letter queue's seqs whose replayed copy is on the way
    bool journal_dirty = false;
    bool retired = false;  // an ephemeral subscription that ended: kept only so indexes stay put
  };

  queue_slot* find_queue(std::string_view name);
  queue_slot& open_queue(const std::string& name);
  void recover_all();
  // Topics (topics.cpp): a topic's slot is found by its name in topic_index_, its subscriptions' slots by
  // "topic@name" in queue_index_ like queues.
  queue_slot* find_topic(std::string_view name);
  /// Opens (recovering from disk) a topic and the durable subscriptions stored with it.
  queue_slot& open_topic(const std::string& name);
  queue_slot& open_topic_from_disk(const std::string& name);
  /// A new subscription of `topic` starting at `first_seq`. Throws ferry::error.
  queue_slot& create_subscription(queue_slot& topic, const std::string& name, std::uint64_t first_seq);
  /// An ephemeral subscription whose last consumer went: it is forgotten and its journal deleted.
  void retire_if_ephemeral(queue_slot& slot);
  void on_subscribe(const std::string& identity, std::vector<zmq::message_t>& frames);  // topics.cpp
  void on_fetch(const std::string& identity, std::vector<zmq::message_t>& frames);      // topics.cpp
  /// Publishes on the live feed the message records of `records` (a topic's committed batch) with a seq up
  /// to `through`, in frames of at most fwd::max_deliver messages.
  void publish_feed(queue& topic, std::string_view records, std::uint64_t through);  // topics.cpp

  // The verb table (forwarder.cpp); each handler gets the sender's routing id and every frame of the request
  // (frames[0] is the routing id, frames[1] the verb).
  void handle_message(std::vector<zmq::message_t>& frames);
  void on_hello(const std::string& identity, std::vector<zmq::message_t>& frames);    // sessions.cpp
  void on_ping(const std::string& identity, std::vector<zmq::message_t>& frames);     // sessions.cpp
  void on_send(const std::string& identity, std::vector<zmq::message_t>& frames);     // produce.cpp
  void on_consume(const std::string& identity, std::vector<zmq::message_t>& frames);  // sessions.cpp
  void on_cancel(const std::string& identity, std::vector<zmq::message_t>& frames);   // sessions.cpp
  void on_answer(const std::string& identity, std::vector<zmq::message_t>& frames);   // sessions.cpp
  void on_extend(const std::string& identity, std::vector<zmq::message_t>& frames);   // sessions.cpp
  void on_stats(const std::string& identity, std::vector<zmq::message_t>& frames);    // admin.cpp
  void on_dlq(const std::string& identity, std::vector<zmq::message_t>& frames);      // admin.cpp

  // One SEND's context while its messages are stored one by one.
  struct send_context {
    const std::string& identity;
    bool topic;        // PUBLISH to a topic rather than SEND to a queue
    queue_slot* slot;  // the queue (or topic), once it exists
    steady::time_point now;
    std::int64_t now_us;
    bool no_space;
  };
  void store_one(send_context& ctx, std::string_view name, message& m, decode_error err, const message_id& id,
                 std::string_view payload);
  /// REFUSE for one message (and a rate-limited log line naming its queue).
  void refuse(const std::string& identity, const message_id& id, std::string_view code,
              const std::string& text, std::string_view queue_name);
  void send_error(const std::string& identity, std::string_view code, const std::string& text);
  /// CONSUMING | name | {prefetch, lease_ms, heartbeat_ms, instance, then `extra_fields` more from `extra`}.
  void send_consuming(const std::string& identity, std::string_view name, std::uint64_t prefetch,
                      std::uint32_t extra_fields,
                      const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& extra);
  void send_frames(const std::string& identity, std::vector<zmq::message_t>& frames);
  void queue_confirm(const std::string& identity, const message_id& id);

  void dispatch_all(steady::time_point now);
  void expire_silent_consumers(steady::time_point now);
  void move_dead_letters();
  /// Calls `act` for up to `sel.limit` (at most `cap`) selected dead letters of `dlq` that are waiting,
  /// oldest first, with the stored record and its decoded envelope (nullptr when the record cannot be read
  /// or does not decode; such a one never matches a reason); looks at no more than 1,000,000. `act`
  /// returns whether it acted.
  dlq_walk walk_dead_letters(
      queue& dlq, const dlq_selection& sel, std::uint64_t cap,
      const std::function<bool(const queue::listed&, const message_record*, message*)>& act);
  /// DLQ replay and purge: selected dead letters of `name` back to it, or settled.
  dlq_walk replay_dead_letters(const std::string& name, queue_slot& dlq, const dlq_selection& sel);
  dlq_walk purge_dead_letters(queue_slot& dlq, const dlq_selection& sel);
  void flush_journals();
  void flush_outgoing();
  void maybe_submit();
  void handle_commit(commit_result& result);
  [[noreturn]] void fail_sync(int err);
  void on_timer(steady::time_point now);
  /// After the loop wakes: time ferryd was not running counts for no consumer's silence and no lease.
  void credit_stall(steady::time_point woke, std::chrono::milliseconds waited);
  static constexpr std::chrono::milliseconds stall_threshold{1000};
  bool disk_full(steady::time_point now);
  /// Measures free space (once a second, or `at_once`) and sets low_disk_.
  void check_free_space(steady::time_point now, bool at_once = false);
  /// Counts `bytes` about to be written against the free space; false (and low_disk_) when that would take
  /// it under --min-free-mb.
  bool reserve_space(std::uint64_t bytes);
  /// Commits what was accepted, syncs the journals, closes the socket. Returns the exit status.
  int shutdown();

  forwarder_options options_;
  data_dir_lock lock_;
  std::uint64_t instance_;
  context ctx_;
  std::string local_endpoint_;
  zmq::socket_t router_;
  std::vector<std::string> bound_;
  std::optional<zmq::socket_t> feed_;  // with forwarder_options::feed
  std::vector<std::string> feed_bound_;
  std::vector<std::pair<std::string_view, std::string_view>> feed_entries_;  // one frame's (reused)
  int commit_fd_ = -1;
  std::unique_ptr<group_commit> commit_;
  std::uint64_t batch_number_ = 0;

  std::deque<queue_slot> queues_;  // a deque: slots stay put while queues are added
  std::unordered_map<std::string, std::uint32_t> queue_index_;  // queues, subscriptions, dead letters
  std::unordered_map<std::string, std::uint32_t> topic_index_;
  peer_table peers_;
  std::unordered_map<std::string, std::string> confirms_out_;
  std::string* last_confirm_ = nullptr;  // into confirms_out_ (element pointers survive rehashing)
  std::string last_confirm_identity_;
  // DELIVER messages assembled by dispatch, sent once the journal holds their attempt counts.
  std::vector<std::pair<std::string, std::vector<zmq::message_t>>> pending_delivers_;

  message scratch_;
  std::vector<message> send_batch_;  // a v2 SEND's messages, decoded (reused)
  std::vector<detail::payload_span> send_payloads_;
  std::vector<message_id> batch_ids_;
  std::string envelope_buffer_;
  std::string read_buffer_;
  std::atomic<bool> stop_{false};
  steady::time_point next_timer_;
  steady::time_point last_wake_;
  steady::time_point disk_full_until_;
  steady::time_point next_disk_check_;
  steady::time_point last_journal_sync_;
  bool low_disk_ = false;
  bool free_known_ = false;
  std::uint64_t free_at_check_ = 0;        // free bytes at the last measurement
  std::uint64_t written_since_check_ = 0;  // bytes accepted for writing since
  std::uint64_t malformed_frames_ = 0;
  std::uint64_t commits_ = 0;
  std::uint64_t committed_records_ = 0;
  steady::time_point started_;
};

}  // namespace ferry::ferryd
