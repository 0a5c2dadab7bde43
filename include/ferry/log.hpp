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

}  // namespace ferry
