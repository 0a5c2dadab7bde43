#pragma once
/// @file A bounded, time-windowed set of recently seen message ids.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ferry/message_id.hpp"

namespace ferry {

/// Bounds of a dedup window: an id is remembered until `max_ids` newer ids have been seen or it is older
/// than `max_age`, whichever comes first.
struct dedup_options {
  std::size_t max_ids = 1'000'000;
  std::chrono::milliseconds max_age{std::chrono::minutes(2)};
};

/// Remembers recently seen ids so a redelivered or retried message is recognised.
///
/// Each check is O(1): an open-addressing table of 32-bit slots over a ring of (id, time) entries.
/// Memory: 32 bytes per remembered id (24 in the ring, 8 in the table at half load), so 32 MiB per million
/// ids; it grows with use up to that bound and is never larger.
///
/// Thread safety: none; guard it with a mutex when several threads share one.
class dedup_window {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::size_t bytes_per_id = 32;

  explicit dedup_window(dedup_options options = {});

  /// Returns true when `id` is in the window (a duplicate). Otherwise remembers it and returns false.
  bool check_and_insert(const message_id& id, clock::time_point now = clock::now());
  /// True when `id` is in the window. Expires old ids first.
  [[nodiscard]] bool contains(const message_id& id, clock::time_point now = clock::now());
  /// Forgets every id.
  void clear() noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] const dedup_options& options() const noexcept { return options_; }
  /// Bytes currently allocated.
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  struct entry {
    message_id id;
    std::int64_t at_ns;
  };
  static constexpr std::uint32_t empty = 0xffffffffu;

  void expire(clock::time_point now) noexcept;
  void evict_oldest() noexcept;
  void grow();
  [[nodiscard]] std::size_t home(const message_id& id) const noexcept;
  [[nodiscard]] std::size_t find_slot(const message_id& id) const noexcept;  // slot or table_.size()

  dedup_options options_;
  std::vector<entry> ring_;         // circular, oldest at head_
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::vector<std::uint32_t> table_;  // ring indexes, `empty` when free; size a power of two
  std::size_t mask_ = 0;
};

}  // namespace ferry
