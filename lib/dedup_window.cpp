#include "ferry/dedup_window.hpp"

#include <algorithm>
#include <bit>

#include "ferry/error.hpp"

namespace ferry {

dedup_window::dedup_window(dedup_options options) : options_(options) {
  if (options_.max_ids == 0 || options_.max_ids > 0x7fffffffu)
    throw error("dedup window max_ids must be between 1 and 2^31-1");
  if (options_.max_age.count() <= 0) throw error("dedup window max_age must be positive");
}

std::size_t dedup_window::home(const message_id& id) const noexcept {
  return std::hash<message_id>{}(id)&mask_;
}

std::size_t dedup_window::find_slot(const message_id& id) const noexcept {
  if (table_.empty()) return table_.size();
  for (std::size_t i = home(id);; i = (i + 1) & mask_) {
    const std::uint32_t slot = table_[i];
    if (slot == empty) return table_.size();
    if (ring_[slot].id == id) return i;
  }
}

void dedup_window::expire(clock::time_point now) noexcept {
  const std::int64_t cutoff =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch() - options_.max_age).count();
  while (count_ > 0 && ring_[head_].at_ns < cutoff) evict_oldest();
}

void dedup_window::evict_oldest() noexcept {
  // Backward-shift deletion keeps probe chains intact without tombstones.
  std::size_t i = find_slot(ring_[head_].id);
  for (std::size_t j = (i + 1) & mask_; table_[j] != empty; j = (j + 1) & mask_) {
    const std::size_t k = home(ring_[table_[j]].id);
    // Move j's entry back to i unless its home lies cyclically in (i, j].
    const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      table_[i] = table_[j];
      i = j;
    }
  }
  table_[i] = empty;
  head_ = (head_ + 1) % ring_.size();
  --count_;
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
    std::size_t i = home(ring_[n].id);
    while (table_[i] != empty) i = (i + 1) & mask_;
    table_[i] = static_cast<std::uint32_t>(n);
  }
}

bool dedup_window::contains(const message_id& id, clock::time_point now) {
  expire(now);
  return find_slot(id) != table_.size();
}

bool dedup_window::check_and_insert(const message_id& id, clock::time_point now) {
  expire(now);
  if (find_slot(id) != table_.size()) return true;
  if (count_ == ring_.size()) {
    if (ring_.size() < options_.max_ids) {
      grow();
    } else {
      evict_oldest();
    }
  }
  const std::size_t n = (head_ + count_) % ring_.size();
  ring_[n] = entry{id, std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count()};
  std::size_t i = home(id);
  while (table_[i] != empty) i = (i + 1) & mask_;
  table_[i] = static_cast<std::uint32_t>(n);
  ++count_;
  return false;
}

void dedup_window::clear() noexcept {
  std::fill(table_.begin(), table_.end(), empty);
  head_ = 0;
  count_ = 0;
}

std::size_t dedup_window::memory_bytes() const noexcept {
  return ring_.capacity() * sizeof(entry) + table_.capacity() * sizeof(std::uint32_t);
}

}  // namespace ferry
