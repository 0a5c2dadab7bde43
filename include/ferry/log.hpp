#pragma once
/// @file ferry's one log. Everything ferry and ferryd log goes through the spdlog logger named "ferry".

#include <string_view>

namespace ferry {

enum class log_level : int { trace, debug, info, warn, error, off };

/// Sets the level of ferry's logger (default: info, or $FERRY_LOG_LEVEL when set:
/// trace|debug|info|warn|error|off). Thread safety: safe from any thread.
void set_log_level(log_level level);

/// Parses "trace", "debug", "info", "warn", "error" or "off". Returns false for anything else.
bool parse_log_level(std::string_view text, log_level& out) noexcept;

/// How a log line is written: text ("2026-12-06T12:00:00.123Z info [ferry] message", the default) or json,
/// one object per line: {"time":"2026-12-06T12:00:00.123456Z","level":"info","logger":"ferry","msg":"..."}
/// (level: trace, debug, info, warning, error or critical; msg escaped, always valid JSON).
enum class log_format : int { text, json };

/// Sets the format of ferry's logger. Thread safety: call it before other threads log.
void set_log_format(log_format format);

/// Parses "text" or "json". Returns false for anything else.
bool parse_log_format(std::string_view text, log_format& out) noexcept;

}  // namespace ferry
