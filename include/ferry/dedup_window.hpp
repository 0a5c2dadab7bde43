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
/// Each check is O(1): an open-addressing table over a ring of (id, time) entries. Table slots carry a
/// 32-bit fingerprint of the id next to its ring index, so a probe that misses rarely touches the ring.
/// At most 2^31 ids (the table's home slot comes from the fingerprint's bits).
/// Each id may carry a 64-bit value given when it was first seen (ferryd keeps the message's sequence
/// number there). Memory: 48 bytes per remembered id (32 in the ring, 16 in the table at half load), so
/// 48 MiB per million ids; it grows with use up to that bound and is never larger.
///
/// Thread safety: none; guard it with a mutex when several threads share one.
class dedup_window {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::size_t bytes_per_id = 48;

  explicit dedup_window(dedup_options options = {});

  /// Returns true when `id` is in the window (a duplicate), and then sets `*previous` (when given) to the
  /// value it was remembered with. Otherwise remembers it with `value` and returns false.
  bool check_and_insert(const message_id& id, clock::time_point now = clock::now(), std::uint64_t value = 0,
                        std::uint64_t* previous = nullptr);
  /// True when `id` is in the window. Expires old ids first.
  [[nodiscard]] bool contains(const message_id& id, clock::time_point now = clock::now());
  /// Forgets `id` (for an id remembered too early, such as a message whose storing then failed).
  /// Returns false when it was not in the window.
  bool erase(const message_id& id) noexcept;
  /// Forgets every id.
  void clear() noexcept;
  /// A hint before checking `n` ids at once (a batch): starts loading the table slots their checks and the
  /// evictions they cause will touch, so the checks that follow wait on memory once instead of once each.
  void prefetch(const message_id* ids, std::size_t n) const noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] const dedup_options& options() const noexcept { return options_; }
  /// Bytes currently allocated.
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  struct entry {
    message_id id;
    std::int64_t at_ns;  // erased entries keep their place in the ring with at_ns = erased
    std::uint64_t value;
  };
  static constexpr std::uint64_t empty = ~std::uint64_t{0};
  static constexpr std::int64_t erased = -1;

  void expire(clock::time_point now) noexcept;
  void evict_oldest() noexcept;
  void remove_slot(std::size_t i) noexcept;
  void grow();
  [[nodiscard]] static std::uint64_t hash(const message_id& id) noexcept {
    return std::hash<message_id>{}(id);
  }
  [[nodiscard]] std::size_t find_slot(const message_id& id,
                                      std::uint64_t h) const noexcept;  // or table_.size()

  dedup_options options_;
  std::vector<entry> ring_;  // circular, oldest at head_
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::vector<std::uint64_t> table_;  // (hash low 32 bits << 32 | ring index), `empty` when free; power of 2
  std::size_t mask_ = 0;
};

}  // namespace ferry
