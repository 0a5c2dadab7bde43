#pragma once
// A counter with one writer thread and any number of readers: the writer does a plain load and store
// (no locked instruction on the hot path), readers see a value that is at most slightly stale.

#include <atomic>
#include <cstdint>

namespace ferry::detail {

class counter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t get() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

}  // namespace ferry::detail
