#pragma once
// A map from message ids to values for the producer's messages in flight: open addressing over a slab,
// no allocation per entry (freed slab places are reused), erase without tombstones. Values never move.

#include <bit>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <vector>

#include "ferry/message_id.hpp"

namespace ferry::detail {

template <typename V>
class id_map {
 public:
  /// Holds up to `capacity` entries; inserting more grows it (rare: the producer's window bounds it).
  explicit id_map(std::size_t capacity) { rebuild(std::max<std::size_t>(capacity, 16)); }

  /// Inserts or finds `id`. Returns the value and whether it was inserted.
  std::pair<V*, bool> try_emplace(const message_id& id, V&& value) {
    const std::uint64_t h = std::hash<message_id>{}(id);
    if (V* found = find(id, h)) return {found, false};
    if (size_ + 1 > slots_.size() / 2) rebuild(slots_.size());
    std::uint32_t index;
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
      entries_[index] = entry{id, std::move(value)};
    } else {
      index = static_cast<std::uint32_t>(entries_.size());
      entries_.push_back(entry{id, std::move(value)});
    }
    std::size_t i = h & mask_;
    while (slots_[i] != free_slot) i = (i + 1) & mask_;
    slots_[i] = pack(h, index);
    ++size_;
    return {&entries_[index].value, true};
  }

  V* find(const message_id& id) { return find(id, std::hash<message_id>{}(id)); }

  /// Removes `id`; returns false when absent.
  bool erase(const message_id& id) {
    const std::uint64_t h = std::hash<message_id>{}(id);
    std::size_t i = h & mask_;
    for (;; i = (i + 1) & mask_) {
      if (slots_[i] == free_slot) return false;
      if (fingerprint(slots_[i]) == static_cast<std::uint32_t>(h) && entries_[index_of(slots_[i])].id == id)
        break;
    }
    const std::uint32_t index = index_of(slots_[i]);
    entries_[index].value = V{};  // release what it holds now
    free_.push_back(index);
    // Backward-shift deletion.
    for (std::size_t j = (i + 1) & mask_; slots_[j] != free_slot; j = (j + 1) & mask_) {
      const std::size_t k = fingerprint(slots_[j]) & mask_;
      const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = free_slot;
    --size_;
    return true;
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

  /// Calls f(id, value) for every entry.
  template <typename F>
  void for_each(F&& f) {
    for (const std::uint64_t s : slots_)
      if (s != free_slot) f(entries_[index_of(s)].id, entries_[index_of(s)].value);
  }

 private:
  struct entry {
    message_id id;
    V value;
  };
  static constexpr std::uint64_t free_slot = ~std::uint64_t{0};
  static std::uint64_t pack(std::uint64_t h, std::uint32_t index) { return (h << 32) | index; }
  static std::uint32_t fingerprint(std::uint64_t slot) { return static_cast<std::uint32_t>(slot >> 32); }
  static std::uint32_t index_of(std::uint64_t slot) { return static_cast<std::uint32_t>(slot); }

  V* find(const message_id& id, std::uint64_t h) {
    for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
      const std::uint64_t s = slots_[i];
      if (s == free_slot) return nullptr;
      if (fingerprint(s) == static_cast<std::uint32_t>(h) && entries_[index_of(s)].id == id)
        return &entries_[index_of(s)].value;
    }
  }

  void rebuild(std::size_t at_least_entries) {
    std::vector<std::uint64_t> old = std::move(slots_);
    slots_.assign(std::bit_ceil(std::max<std::size_t>(at_least_entries * 2, 32)), free_slot);
    mask_ = slots_.size() - 1;
    for (const std::uint64_t s : old) {
      if (s == free_slot) continue;
      std::size_t i = fingerprint(s) & mask_;
      while (slots_[i] != free_slot) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<std::uint64_t> slots_;
  std::size_t mask_ = 0;
  std::deque<entry> entries_;  // a deque: values stay put as it grows
  std::vector<std::uint32_t> free_;
  std::size_t size_ = 0;
};

}  // namespace ferry::detail
