#pragma once
// The durable progress of one consumer group over a stream: which messages are settled (acknowledged,
// dead-lettered, purged or replayed) and how often each unsettled one was delivered. It lives in a
// journal next to the stream's segments (docs/storage.md); in memory it is a low watermark (every seq
// below is settled), the settled seqs above it, and per segment the number of unsettled messages, so the
// stream can delete a segment once no consumer group needs it.
//
// Thread safety: owned and used by one thread (ferryd's loop); the journal's descriptor is handed to the
// commit thread for syncing.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "journal.hpp"
#include "record.hpp"
#include "segment_log.hpp"
#include "seq_ranges.hpp"

namespace ferry::storage {

class consumer_store {
 public:
  /// The `detail` of a watermark record that holds a subscription's start (see start_at()).
  static constexpr std::uint8_t watermark_start = 1;

  explicit consumer_store(std::filesystem::path journal_file);
  consumer_store(const consumer_store&) = delete;
  consumer_store& operator=(const consumer_store&) = delete;

  // ---- recovery, in this order: replay(), then stored() for every record the stream recovers, then
  //      finish_recovery() ------------------------------------------------------------------------------
  /// Replays the journal (repairing a torn tail) and opens it for appending. Throws ferry::error.
  void replay(recovery_report& report);
  /// A record the stream recovered. Returns true when it is unsettled (it then counts in its segment).
  bool recovered(const message_record& rec, const record_location& where);
  /// Ends recovery: `next_seq` is the stream's next sequence number. Returns the first seq the stream may
  /// hand out (never one the journal already settled).
  std::uint64_t finish_recovery(std::uint64_t next_seq);
  /// Opens the journal of a stream created after start-up. Throws ferry::error.
  void open();
  /// A consumer group created after start-up over a stream that already holds `segments`: it starts at
  /// `first_seq` (everything before counts as settled). Opens the journal, writes the start as a watermark
  /// record and syncs it, so a restart resumes the group there. Throws ferry::error.
  void start_at(std::uint64_t first_seq, const std::map<std::uint64_t, segment_info>& segments);
  /// The first seq this group takes (1 for a queue; a topic's subscription may start later).
  [[nodiscard]] std::uint64_t start() const noexcept { return start_; }

  // ---- settlement ---------------------------------------------------------------------------------------
  /// True when `seq` is settled (or was never stored).
  [[nodiscard]] bool settled(std::uint64_t seq) const noexcept {
    return seq < low_watermark_ || settled_.contains(seq);
  }
  /// `records` new messages, the last of them `last_seq`, became durable in segment `base`: those at or
  /// after start() are unsettled.
  void stored(std::uint64_t base, std::uint64_t records, std::uint64_t last_seq) noexcept;
  /// Settles `seq`, held in segment `base` (journal record and counts).
  void settle(std::uint64_t seq, std::uint64_t base, settle_reason reason);
  /// `seq` was never stored (its write failed): it counts as settled, without a journal record.
  void skip(std::uint64_t seq);
  /// Segment `base` and every older one are gone from the stream (a topic's retention deleted them), and
  /// `seq` follows the last message they held: everything before it counts as settled (a watermark
  /// record). Returns how many of those messages were unsettled.
  std::uint64_t skip_before(std::uint64_t base, std::uint64_t seq);
  /// Journals the number of deliveries of `seq` so far.
  void record_attempts(std::uint64_t seq, std::uint32_t attempts);
  /// Deliveries of `seq` recovered from the journal for a message not yet read back (0 when none), and
  /// forgets it: from then on the reader holds the count.
  std::uint32_t take_recovered_attempts(std::uint64_t seq);
  /// The count take_recovered_attempts() would return, without forgetting it.
  [[nodiscard]] std::uint32_t recovered_attempts(std::uint64_t seq) const;

  [[nodiscard]] std::uint64_t unsettled() const noexcept { return unsettled_; }
  [[nodiscard]] std::uint64_t unsettled_in(std::uint64_t base) const noexcept;
  [[nodiscard]] std::uint64_t low_watermark() const noexcept { return low_watermark_; }
  /// Segment base of the oldest segment holding an unsettled message, or 0 when none does.
  [[nodiscard]] std::uint64_t first_unsettled_segment() const noexcept;

  // ---- the journal file ---------------------------------------------------------------------------------
  [[nodiscard]] journal& file() noexcept { return journal_; }
  /// Rewrites the journal compactly when it has grown past `threshold` bytes and is mostly history.
  /// `held` is called with an emitter for the attempt counts the reader holds in memory. Logs and keeps
  /// the old journal when the rewrite fails.
  void compact(std::uint64_t threshold,
               const std::function<void(const std::function<void(std::uint64_t seq, std::uint32_t)>&)>& held);

 private:
  void mark_settled(std::uint64_t seq);

  journal journal_;
  bool open_ = false;
  std::uint64_t unsettled_ = 0;
  std::uint64_t low_watermark_ = 1;                     // every seq below is settled
  std::uint64_t start_ = 1;                             // the first seq this group takes
  seq_ranges settled_;                                  // settled seqs above the watermark
  std::map<std::uint64_t, std::uint64_t> per_segment_;  // segment base -> unsettled messages in it
  // Deliveries so far of unsettled messages the reader has not read back yet (recovered from the journal).
  std::unordered_map<std::uint64_t, std::uint32_t> attempts_;
  // Recovery only.
  std::uint64_t replayed_watermark_ = 1;
  std::uint64_t replayed_settled_through_ = 1;  // the highest watermark that settled stored messages
  std::uint64_t replayed_start_ = 1;            // the highest start record (subscriptions only)
  std::uint64_t last_recovered_ = 0;
  std::uint64_t lowest_unsettled_ = 0;
  seq_ranges gaps_;  // seqs missing from the stream above its first unsettled record
};

}  // namespace ferry::storage
