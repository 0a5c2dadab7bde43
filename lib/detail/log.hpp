#pragma once
// The logger behind ferry/log.hpp. Private: spdlog is not part of ferry's public API.

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace ferry::detail {

/// The shared "ferry" logger (stderr, created on first use). Thread safety: spdlog loggers are thread-safe.
spdlog::logger& logger();

/// Lets through at most `per_second` events per second and counts the rest, so a flood of bad frames or
/// failing handlers cannot flood the log. Thread safety: safe from any thread.
class log_limiter {
 public:
  explicit log_limiter(std::uint32_t per_second = 10) : per_second_(per_second) {}
  /// True when this event may be logged. `suppressed` receives how many were held back since the last
  /// event that was let through.
  bool allow(std::uint64_t& suppressed) noexcept;

 private:
  std::uint32_t per_second_;
  std::atomic<std::int64_t> window_{0};
  std::atomic<std::uint32_t> in_window_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

/// " (N similar messages suppressed)" after a log line a log_limiter let through having held back N; "" for
/// 0.
std::string suppressed_note(std::uint64_t held);

}  // namespace ferry::detail
