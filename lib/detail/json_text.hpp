#pragma once
// JSON text for what ferry writes as JSON lines: the CLI's --format json and the JSON log format.

#include <string>
#include <string_view>

namespace ferry::detail {

/// True when `bytes` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
[[nodiscard]] bool is_valid_utf8(std::string_view bytes) noexcept;

/// Appends `text` as a quoted JSON string. Quotes, backslashes and control characters are escaped; bytes
/// that are not valid UTF-8 become U+FFFD, so the output is always valid JSON.
void append_json_string(std::string& out, std::string_view text);

}  // namespace ferry::detail
