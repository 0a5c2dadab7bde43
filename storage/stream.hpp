#pragma once
// A stream: one append-only, segmented log of messages with sequence numbers, the batch being gathered for
// the next group commit, and the dedup window of recent ids (so a resent message is stored once). A durable
// queue is a stream with one consumer_store; a durable topic will be a stream with one per subscription.
//
// Producing: admit() an id (a resend is recognised), append() its record to the gathering batch,
// take_pending() hands the batch to the commit thread, committed() applies what it reports. Reading:
// log() reads records back and lists segments; remove_segments() deletes the ones no reader needs.
//
// Thread safety: owned and used by one thread (ferryd's loop); only writer() is handed to the commit
// thread.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/dedup_window.hpp"
#include "ferry/message_id.hpp"
#include "segment_log.hpp"
#include "segment_writer.hpp"

namespace ferry::storage {

struct stream_config {
  std::uint64_t segment_bytes = 64ull << 20;
  dedup_options dedup{.max_ids = 262'144, .max_age = std::chrono::minutes(2)};
  /// Settled segments kept (up to this many bytes, if younger than the dedup window) so the window can
  /// be rebuilt after a restart.
  std::uint64_t dedup_retain_bytes = 1ull << 30;
  /// Settled segment files kept for reuse (renamed, then written over) instead of deleted: writing over
  /// cached pages costs a fraction of filling new ones. 0 deletes them.
  std::size_t spare_segments = 2;
};

class stream {
 public:
  using clock = dedup_window::clock;

  stream(std::filesystem::path dir, stream_config config);
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  /// Scans every segment in order (repairing a torn tail), calls `visit` for each valid record, rebuilds
  /// the dedup window from records younger than its age (`now_us`: the wall clock) and prepares the
  /// writer to continue the newest segment. A stream without a directory recovers as empty.
  /// Throws ferry::error when the directory is unusable.
  void recover(recovery_report& report, std::int64_t now_us, const segment_log::visitor& visit);
  /// Makes sure sequence numbers continue at or after `seq` (a consumer store may know of later ones).
  void continue_at(std::uint64_t seq) noexcept;

  /// True once the directory exists (created by the first append, made durable with its parents).
  [[nodiscard]] bool on_disk() const noexcept { return on_disk_; }
  /// Creates the directory (and syncs its parents). Throws ferry::error.
  void create_on_disk();

  // ---- producing -------------------------------------------------------------------------------------
  /// Remembers `id` with the seq the next append() will use. Returns nullopt for a new id (append() or
  /// forget() must follow), or the seq of the first copy of a resend.
  std::optional<std::uint64_t> admit(const message_id& id, clock::time_point now);
  /// Remembers `id` afresh (its earlier copy is gone) with the seq the next append() will use.
  void readmit(const message_id& id, clock::time_point now);
  /// Forgets an id admitted but not stored (refused, or its write failed).
  void forget(const message_id& id) noexcept { dedup_.erase(id); }
  /// Before admitting `n` ids at once (a SEND's block): see dedup_window::prefetch.
  void prefetch(const message_id* ids, std::size_t n) const noexcept { dedup_.prefetch(ids, n); }
  /// True when `id` is in the dedup window.
  [[nodiscard]] bool seen(const message_id& id, clock::time_point now) { return dedup_.contains(id, now); }

  /// Appends a record to the gathering batch; returns its seq. Creates the directory on first use.
  std::uint64_t append(const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                       std::string_view payload, std::int64_t stored_at_us, std::uint8_t flags = 0);
  [[nodiscard]] bool has_pending() const noexcept { return !pending_.empty(); }
  /// Messages appended and not yet written: gathering plus the batch being committed.
  [[nodiscard]] std::size_t unwritten() const noexcept { return pending_count_ + committing_count_; }
  /// Bytes appended and not yet written: the gathering batch and the one being committed.
  [[nodiscard]] std::size_t unwritten_bytes() const noexcept { return pending_.size() + committing_bytes_; }
  /// Takes the gathered records for the commit thread.
  std::string take_pending();
  /// Takes back a written batch's buffer so the next batch reuses its memory (no page faults per batch).
  void recycle(std::string&& buffer);
  /// Applies a commit outcome: the segments written become readable.
  void committed(const segment_writer::outcome& out);
  /// True when `seq` went through a finished commit (a resend of it is confirmed at once); false while it
  /// waits in a batch.
  [[nodiscard]] bool commit_finished(std::uint64_t seq) const noexcept { return seq <= committed_through_; }

  [[nodiscard]] std::uint64_t next_seq() const noexcept { return next_seq_; }
  [[nodiscard]] std::uint64_t committed_through() const noexcept { return committed_through_; }

  // ---- reading -----------------------------------------------------------------------------------------
  [[nodiscard]] segment_log& log() noexcept { return log_; }
  [[nodiscard]] const segment_log& log() const noexcept { return log_; }
  [[nodiscard]] const std::shared_ptr<segment_writer>& writer() const noexcept { return writer_; }
  [[nodiscard]] std::uint64_t disk_bytes() const noexcept { return log_.bytes(); }
  /// Spare segment files held for reuse.
  [[nodiscard]] std::size_t spares() const { return spares_ ? spares_->size() : 0; }

  // ---- the durable end ---------------------------------------------------------------------------------
  /// Records in the file `log_end` how far the log is durable (the newest segment and its committed bytes)
  /// when that moved since the last call, and returns the file's descriptor for the caller to sync with its
  /// next batch (-1: nothing to sync). Call only when every commit reported so far was synced (`--fsync
  /// always`, or right after a final sync at shutdown). Recovery uses it to tell a torn write (after it)
  /// from corruption of confirmed data (before it). Returns -1 (and logs once) when the file cannot be
  /// written: the checkpoint only sharpens reports, nothing depends on it.
  int checkpoint();

  /// Deletes every segment but the active one for which `unneeded` is true (no reader needs it), except
  /// recent ones kept for the dedup window (see stream_config::dedup_retain_bytes).
  void remove_segments(std::int64_t now_us, const std::function<bool(const segment_info&)>& unneeded);
  /// Deletes segment `base` now (a topic's retention), whatever the dedup window: a resend of one of its
  /// messages is stored again. Never the segment being written.
  void remove_segment(std::uint64_t base);

 private:
  std::filesystem::path dir_;
  stream_config config_;
  bool on_disk_ = false;
  segment_log log_;
  std::shared_ptr<spare_segments> spares_;
  std::shared_ptr<segment_writer> writer_;
  dedup_window dedup_;
  std::uint64_t next_seq_ = 1;
  std::string pending_;
  std::string spare_;
  std::size_t pending_count_ = 0;
  std::size_t committing_count_ = 0;
  std::size_t committing_bytes_ = 0;
  std::uint64_t committing_through_ = 0;  // last seq in the batch being written
  std::uint64_t committed_through_ = 0;   // last seq of the last finished commit
  int log_end_fd_ = -1;
  log_end_record checkpointed_;
  bool checkpoint_failed_ = false;
};

}  // namespace ferry::storage
