#include "ferry/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

#include "detail/log.hpp"

namespace ferry {
namespace {

spdlog::level::level_enum to_spdlog(log_level l) {
  switch (l) {
    case log_level::trace:
      return spdlog::level::trace;
    case log_level::debug:
      return spdlog::level::debug;
    case log_level::info:
      return spdlog::level::info;
    case log_level::warn:
      return spdlog::level::warn;
    case log_level::error:
      return spdlog::level::err;
    case log_level::off:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger() {
  if (auto existing = spdlog::get("ferry")) return existing;  // the application registered its own
  auto logger = spdlog::stderr_color_mt("ferry");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ [%n] %v", spdlog::pattern_time_type::utc);
  log_level level = log_level::info;
  if (const char* env = std::getenv("FERRY_LOG_LEVEL")) parse_log_level(env, level);
  logger->set_level(to_spdlog(level));
  return logger;
}

}  // namespace

namespace detail {

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> instance = make_logger();
  return *instance;
}

bool log_limiter::allow(std::uint64_t& suppressed) noexcept {
  const std::int64_t second =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  std::int64_t window = window_.load(std::memory_order_relaxed);
  if (window != second && window_.compare_exchange_strong(window, second, std::memory_order_relaxed)) {
    in_window_.store(0, std::memory_order_relaxed);
  }
  if (in_window_.fetch_add(1, std::memory_order_relaxed) < per_second_) {
    suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
    return true;
  }
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

std::string suppressed_note(std::uint64_t held) {
  return held == 0 ? std::string() : fmt::format(" ({} similar messages suppressed)", held);
}

}  // namespace detail

void set_log_level(log_level level) {
  detail::logger().set_level(to_spdlog(level));
}

bool parse_log_level(std::string_view text, log_level& out) noexcept {
  if (text == "trace")
    out = log_level::trace;
  else if (text == "debug")
    out = log_level::debug;
  else if (text == "info")
    out = log_level::info;
  else if (text == "warn" || text == "warning")
    out = log_level::warn;
  else if (text == "error")
    out = log_level::error;
  else if (text == "off")
    out = log_level::off;
  else
    return false;
  return true;
}

}  // namespace ferry
