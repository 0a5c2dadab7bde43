#include "ferry/dedup_window.hpp"

#include <algorithm>
#include <bit>

#include "ferry/error.hpp"

namespace ferry {
namespace {

// Table slots: the low 32 bits of the id's hash (its fingerprint, which also gives its home slot) and the
// 32-bit ring index. A probe compares fingerprints and touches the ring only on a match; moving entries
// during deletion needs no ring access at all.
constexpr std::uint64_t slot_of(std::uint64_t h, std::size_t index) noexcept {
  return (h << 32) | static_cast<std::uint32_t>(index);
}
constexpr std::uint32_t index_of(std::uint64_t slot) noexcept {
  return static_cast<std::uint32_t>(slot);
}
constexpr bool same_fingerprint(std::uint64_t slot, std::uint64_t h) noexcept {
  return (slot >> 32) == (h & 0xffffffffull);
}
constexpr std::size_t home_of(std::uint64_t slot, std::size_t mask) noexcept {
  return (slot >> 32) & mask;
}

}  // namespace

dedup_window::dedup_window(dedup_options options) : options_(options) {
  if (options_.max_ids == 0 || options_.max_ids > 0x7fffffffu)
    throw error("dedup window max_ids must be between 1 and 2^31-1");
  if (options_.max_age.count() <= 0) throw error("dedup window max_age must be positive");
}

std::size_t dedup_window::find_slot(const message_id& id, std::uint64_t h) const noexcept {
  if (table_.empty()) return table_.size();
  for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
    const std::uint64_t slot = table_[i];
    if (slot == empty) return table_.size();
    if (same_fingerprint(slot, h) && ring_[index_of(slot)].id == id) return i;
  }
}

void dedup_window::expire(clock::time_point now) noexcept {
  const std::int64_t cutoff =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch() - options_.max_age).count();
  while (count_ > 0 && ring_[head_].at_ns < cutoff) evict_oldest();
}

void dedup_window::remove_slot(std::size_t i) noexcept {
  // Backward-shift deletion keeps probe chains intact without tombstones.
  for (std::size_t j = (i + 1) & mask_; table_[j] != empty; j = (j + 1) & mask_) {
    const std::size_t k = home_of(table_[j], mask_);
    // Move j's entry back to i unless its home lies cyclically in (i, j].
    const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      table_[i] = table_[j];
      i = j;
    }
  }
  table_[i] = empty;
}

void dedup_window::evict_oldest() noexcept {
  entry& oldest = ring_[head_];
  if (oldest.at_ns != erased) {
    const std::size_t i = find_slot(oldest.id, hash(oldest.id));
    if (i != table_.size()) remove_slot(i);
  }
  head_ = (head_ + 1) % ring_.size();
  --count_;
}

bool dedup_window::erase(const message_id& id) noexcept {
  const std::size_t i = find_slot(id, hash(id));
  if (i == table_.size()) return false;
  ring_[index_of(table_[i])].at_ns = erased;  // its ring place is freed when it becomes the oldest
  remove_slot(i);
  return true;
}

void dedup_window::grow() {
  const std::size_t capacity = std::min(options_.max_ids, std::max<std::size_t>(1024, ring_.size() * 2));
  std::vector<entry> ring(capacity);
  for (std::size_t n = 0; n < count_; ++n) ring[n] = ring_[(head_ + n) % ring_.size()];
  ring_ = std::move(ring);
  head_ = 0;
  table_.assign(std::bit_ceil(capacity * 2), empty);
  mask_ = table_.size() - 1;
  for (std::size_t n = 0; n < count_; ++n) {
    if (ring_[n].at_ns == erased) continue;
    const std::uint64_t h = hash(ring_[n].id);
    std::size_t i = h & mask_;
    while (table_[i] != empty) i = (i + 1) & mask_;
    table_[i] = slot_of(h, n);
  }
}

bool dedup_window::contains(const message_id& id, clock::time_point now) {
  expire(now);
  return find_slot(id, hash(id)) != table_.size();
}

bool dedup_window::check_and_insert(const message_id& id, clock::time_point now, std::uint64_t value,
                                    std::uint64_t* previous) {
  expire(now);
  const std::uint64_t h = hash(id);
  if (const std::size_t i = find_slot(id, h); i != table_.size()) {
    if (previous != nullptr) *previous = ring_[index_of(table_[i])].value;
    return true;
  }
  if (count_ == ring_.size()) {
    if (ring_.size() < options_.max_ids) {
      grow();
    } else {
      evict_oldest();
    }
  }
  const std::size_t n = (head_ + count_) % ring_.size();
  ring_[n] =
      entry{id, std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count(), value};
  std::size_t i = h & mask_;
  while (table_[i] != empty) i = (i + 1) & mask_;
  table_[i] = slot_of(h, n);
  ++count_;
  return false;
}

void dedup_window::prefetch(const message_id* ids, std::size_t n) const noexcept {
  if (table_.empty()) return;
  for (std::size_t k = 0; k < n; ++k) __builtin_prefetch(&table_[hash(ids[k]) & mask_]);
  // A full window evicts its oldest ids, one per new id: their slots are looked up too.
  if (count_ == ring_.size() && !ring_.empty())
    for (std::size_t k = 0; k < n && k < count_; ++k) {
      const entry& old = ring_[(head_ + k) % ring_.size()];
      if (old.at_ns != erased) __builtin_prefetch(&table_[hash(old.id) & mask_]);
    }
}

void dedup_window::clear() noexcept {
  std::fill(table_.begin(), table_.end(), empty);
  head_ = 0;
  count_ = 0;
}

std::size_t dedup_window::memory_bytes() const noexcept {
  return ring_.capacity() * sizeof(entry) + table_.capacity() * sizeof(std::uint64_t);
}

}  // namespace ferry
