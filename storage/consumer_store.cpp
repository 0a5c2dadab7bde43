#include "consumer_store.hpp"

#include <algorithm>
#include <cstring>

#include "ferry/error.hpp"

#include "detail/log.hpp"

namespace ferry::storage {

consumer_store::consumer_store(std::filesystem::path journal_file) : journal_(std::move(journal_file)) {}

void consumer_store::replay(recovery_report& report) {
  journal_.recover(report, [&](const journal_record& r) {
    switch (r.type) {
      case record_type::watermark:
        // detail 1: a subscription's start, which may lie beyond what the stream holds yet; it settles
        // what comes before it but says nothing of where the stream's sequence numbers stand.
        replayed_watermark_ = std::max(replayed_watermark_, r.seq);
        if (r.detail == watermark_start) {
          replayed_start_ = std::max(replayed_start_, r.seq);
        } else {
          replayed_settled_through_ = std::max(replayed_settled_through_, r.seq);
        }
        break;
      case record_type::settle:
        // `value` counts the seqs after `seq` the record settles too (a compacted run); 0 for one seq.
        // A run's attempt counts are dropped by finish_recovery().
        settled_.insert(r.seq, r.seq < UINT64_MAX - r.value ? r.seq + r.value + 1 : UINT64_MAX);
        attempts_.erase(r.seq);
        break;
      case record_type::attempts:
        attempts_[r.seq] = r.value;
        break;
      default:
        break;
    }
  });
  open_ = true;
}

void consumer_store::open() {
  if (open_) return;
  recovery_report ignored;
  journal_.recover(ignored, [](const journal_record&) {});
  open_ = true;
}

bool consumer_store::recovered(const message_record& rec, const record_location& where) {
  // Sequence numbers are dense: a missing one was never durable or was lost to damage; it counts as
  // settled. Only gaps above the first unsettled record are kept: finish_recovery() puts the watermark at
  // that record, so the ones below it are settled by it (a damaged stretch of an acknowledged prefix costs
  // no memory, however many sequence numbers it spans).
  if (last_recovered_ != 0 && lowest_unsettled_ != 0) gaps_.insert(last_recovered_ + 1, rec.seq);
  last_recovered_ = rec.seq;
  if (rec.seq < replayed_watermark_ || settled_.contains(rec.seq)) return false;
  ++unsettled_;
  ++per_segment_[where.segment];
  if (lowest_unsettled_ == 0) lowest_unsettled_ = rec.seq;
  return true;
}

std::uint64_t consumer_store::finish_recovery(std::uint64_t next_seq) {
  next_seq = std::max(next_seq, replayed_settled_through_);
  start_ = replayed_start_;  // a group that started late (a topic's subscription) keeps its start; queues: 1
  if (!settled_.empty()) next_seq = std::max(next_seq, settled_.end());
  low_watermark_ = lowest_unsettled_ != 0 ? lowest_unsettled_ : std::max(next_seq, replayed_watermark_);
  gaps_.for_each([&](std::uint64_t first, std::uint64_t end) { settled_.insert(first, end); });
  gaps_ = seq_ranges{};
  settled_.erase_below(low_watermark_);
  low_watermark_ = settled_.advance(low_watermark_);
  std::erase_if(attempts_,
                [&](const auto& kv) { return kv.first < low_watermark_ || settled_.contains(kv.first); });
  return next_seq;
}

void consumer_store::start_at(std::uint64_t first_seq,
                              const std::map<std::uint64_t, segment_info>& segments) {
  open();
  start_ = first_seq;
  low_watermark_ = std::max(low_watermark_, first_seq);
  journal_.append({record_type::watermark, watermark_start, 0, first_seq});
  if (const int err = journal_.flush(); err != 0)
    throw error("cannot write the journal of a new subscription: " + std::string(std::strerror(err)));
  if (const int err = journal_.sync(); err != 0)
    throw error("cannot sync the journal of a new subscription: " + std::string(std::strerror(err)));
  // Sequence numbers within a segment are dense (a failed write ends the segment's records), so the
  // messages at or after first_seq are counted from the segment's range.
  for (const auto& [base, seg] : segments) stored(base, seg.records, seg.last_seq);
}

void consumer_store::stored(std::uint64_t base, std::uint64_t records, std::uint64_t last_seq) noexcept {
  if (records == 0 || last_seq < start_) return;
  records = std::min(records, last_seq - start_ + 1);
  per_segment_[base] += records;
  unsettled_ += records;
}

void consumer_store::settle(std::uint64_t seq, std::uint64_t base, settle_reason reason) {
  if (settled(seq)) return;  // already settled (e.g. skipped by a topic's retention): counted once
  journal_.append({record_type::settle, static_cast<std::uint8_t>(reason), 0, seq});
  attempts_.erase(seq);
  if (const auto it = per_segment_.find(base); it != per_segment_.end()) {
    if (it->second > 0) --it->second;
    if (it->second == 0) per_segment_.erase(it);
  }
  if (unsettled_ > 0) --unsettled_;
  mark_settled(seq);
}

void consumer_store::skip(std::uint64_t seq) {
  mark_settled(seq);
}

std::uint64_t consumer_store::skip_before(std::uint64_t base, std::uint64_t seq) {
  if (seq <= low_watermark_) return 0;
  std::uint64_t skipped = 0;
  for (auto it = per_segment_.begin(); it != per_segment_.end() && it->first <= base;) {
    skipped += it->second;
    it = per_segment_.erase(it);
  }
  unsettled_ -= std::min(unsettled_, skipped);
  journal_.append({record_type::watermark, 0, 0, seq});
  low_watermark_ = seq;
  start_ = std::max(start_, seq);
  settled_.erase_below(seq);
  std::erase_if(attempts_, [&](const auto& kv) { return kv.first < seq; });
  low_watermark_ = settled_.advance(low_watermark_);
  return skipped;
}

void consumer_store::mark_settled(std::uint64_t seq) {
  // Settled seqs above the watermark wait in settled_ until everything below them is settled too.
  if (seq < low_watermark_) return;
  if (seq == low_watermark_) {
    ++low_watermark_;  // in order, the common case: nothing to remember
  } else {
    settled_.insert(seq);
  }
  low_watermark_ = settled_.advance(low_watermark_);
}

void consumer_store::record_attempts(std::uint64_t seq, std::uint32_t attempts) {
  journal_.append({record_type::attempts, 0, attempts, seq});
}

std::uint32_t consumer_store::take_recovered_attempts(std::uint64_t seq) {
  const auto it = attempts_.find(seq);
  if (it == attempts_.end()) return 0;
  const std::uint32_t n = it->second;
  attempts_.erase(it);
  return n;
}

std::uint32_t consumer_store::recovered_attempts(std::uint64_t seq) const {
  const auto it = attempts_.find(seq);
  return it == attempts_.end() ? 0 : it->second;
}

std::uint64_t consumer_store::unsettled_in(std::uint64_t base) const noexcept {
  const auto it = per_segment_.find(base);
  return it == per_segment_.end() ? 0 : it->second;
}

std::uint64_t consumer_store::first_unsettled_segment() const noexcept {
  return per_segment_.empty() ? 0 : per_segment_.begin()->first;
}

void consumer_store::compact(
    std::uint64_t threshold,
    const std::function<void(const std::function<void(std::uint64_t, std::uint32_t)>&)>& held) {
  if (journal_.file_bytes() <= threshold) return;
  std::string snap;
  // A watermark still at the start (nothing settled past it) is written as the start: it may lie beyond
  // the stream's end.
  append_journal_record(
      snap, {record_type::watermark, low_watermark_ <= start_ ? watermark_start : std::uint8_t{0}, 0,
             low_watermark_});
  // One record per run of settled seqs: `value` counts the seqs after `seq` it settles too.
  settled_.for_each([&](std::uint64_t first, std::uint64_t end) {
    while (first < end) {
      const std::uint64_t n = std::min<std::uint64_t>(end - first, std::uint64_t{UINT32_MAX} + 1);
      append_journal_record(snap, {record_type::settle, 0, static_cast<std::uint32_t>(n - 1), first});
      first += n;
    }
  });
  for (const auto& [seq, n] : attempts_) append_journal_record(snap, {record_type::attempts, 0, n, seq});
  held([&](std::uint64_t seq, std::uint32_t n) {
    if (n > 0) append_journal_record(snap, {record_type::attempts, 0, n, seq});
  });
  if (journal_.file_bytes() <= 4 * snap.size()) return;
  try {
    journal_.rewrite(snap);
  } catch (const std::exception& e) {
    detail::logger().warn("journal compaction failed (the old journal stays in use): {}", e.what());
  }
}

}  // namespace ferry::storage
