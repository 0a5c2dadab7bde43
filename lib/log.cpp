#include "ferry/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "detail/json_text.hpp"
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

constexpr const char* text_pattern = "%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ [%n] %v";

// %* in the JSON pattern: the message as a quoted JSON string.
class json_message_flag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    std::string quoted;
    detail::append_json_string(quoted, std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(quoted.data(), quoted.data() + quoted.size());
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message_flag>();
  }
};

std::shared_ptr<spdlog::logger> make_logger() {
  if (auto existing = spdlog::get("ferry")) return existing;  // the application registered its own
  auto logger = spdlog::stderr_color_mt("ferry");
  logger->set_pattern(text_pattern, spdlog::pattern_time_type::utc);
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

void set_log_format(log_format format) {
  if (format == log_format::text) {
    detail::logger().set_pattern(text_pattern, spdlog::pattern_time_type::utc);
    return;
  }
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<json_message_flag>('*').set_pattern(
      R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","msg":%*})");
  detail::logger().set_formatter(std::move(formatter));
}

bool parse_log_format(std::string_view text, log_format& out) noexcept {
  if (text == "text")
    out = log_format::text;
  else if (text == "json")
    out = log_format::json;
  else
    return false;
  return true;
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
