#pragma once
// A set of sequence numbers kept as disjoint half-open ranges [first, end), merged as they touch: the
// settled seqs above a consumer group's watermark. Out-of-order acknowledgements leave a few short
// ranges; a damaged stretch of a log leaves one long one, which costs one node whatever its length.
//
// Thread safety: none; owned by one thread.

#include <cstdint>
#include <iterator>
#include <map>

namespace ferry::storage {

class seq_ranges {
 public:
  [[nodiscard]] bool empty() const noexcept { return ranges_.empty(); }
  [[nodiscard]] bool contains(std::uint64_t seq) const noexcept {
    auto it = ranges_.upper_bound(seq);
    if (it == ranges_.begin()) return false;
    return seq < std::prev(it)->second;
  }
  /// The first seq of the lowest range; the set must not be empty.
  [[nodiscard]] std::uint64_t lowest() const noexcept { return ranges_.begin()->first; }
  /// One past the highest seq held; the set must not be empty.
  [[nodiscard]] std::uint64_t end() const noexcept { return ranges_.rbegin()->second; }
  /// How many ranges (not seqs) the set holds.
  [[nodiscard]] std::size_t ranges() const noexcept { return ranges_.size(); }

  /// Adds [first, end); an empty range adds nothing.
  void insert(std::uint64_t first, std::uint64_t end) {
    if (first >= end) return;
    auto it = ranges_.upper_bound(first);
    if (it != ranges_.begin()) {
      auto before = std::prev(it);
      if (before->second >= first) {  // touches or overlaps the range before: extend that one
        if (before->second >= end) return;
        first = before->first;
        it = before;
      }
    }
    // Swallow every range that starts within (or right after) the new one.
    while (it != ranges_.end() && it->first <= end) {
      if (it->second > end) end = it->second;
      it = ranges_.erase(it);
    }
    ranges_[first] = end;
  }
  void insert(std::uint64_t seq) { insert(seq, seq + 1); }

  /// Removes every seq below `seq`.
  void erase_below(std::uint64_t seq) {
    auto it = ranges_.begin();
    while (it != ranges_.end() && it->second <= seq) it = ranges_.erase(it);
    if (it != ranges_.end() && it->first < seq) {
      const std::uint64_t end = it->second;
      ranges_.erase(it);
      ranges_[seq] = end;
    }
  }

  /// When the lowest range starts at `watermark`, removes it and returns its end (the new watermark);
  /// otherwise returns `watermark`.
  std::uint64_t advance(std::uint64_t watermark) {
    if (ranges_.empty() || ranges_.begin()->first != watermark) return watermark;
    const std::uint64_t end = ranges_.begin()->second;
    ranges_.erase(ranges_.begin());
    return end;
  }

  /// Calls `f(first, end)` for every range, lowest first.
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [first, end] : ranges_) f(first, end);
  }

 private:
  std::map<std::uint64_t, std::uint64_t> ranges_;  // first -> end (exclusive)
};

}  // namespace ferry::storage
