#pragma once
// How the ferry tool prints a received message: the payload alone (text) or one JSON object per line.
// Shared by every receiving command (pull, sub, consume) and by dlq list, so they all print the same schema.

#include <cstdint>
#include <string>
#include <string_view>

#include "detail/json_text.hpp"
#include "ferry/message.hpp"

namespace ferry::cli {

enum class output_format { text, json };

/// Appends `msg` as one line (ending in '\n') in `format` to `out`.
///
/// text: the payload bytes as they arrived, then '\n'.
/// json: {"id","topic","key","headers","attempt","timestamp"[,"origin","sequence"],"payload"} where id is
/// 32 hex digits, timestamp Unix microseconds, origin 16 hex digits (a 64-bit id does not fit a JSON
/// number exactly in most parsers), origin and sequence only when nonzero. The payload is a JSON string
/// when it is valid UTF-8, else base64 with "payload_base64":true.
void append_message(std::string& out, const ferry::message& msg, output_format format);

// is_valid_utf8 and append_json_string (a quoted JSON string, always valid JSON): detail/json_text.hpp.
using ferry::detail::append_json_string;
using ferry::detail::is_valid_utf8;

/// Appends `bytes` in standard base64 (RFC 4648, with padding).
void append_base64(std::string& out, std::string_view bytes);

/// Appends `headers` as a JSON object of strings.
void append_json_headers(std::string& out, const ferry::headers& headers);

/// Appends "payload":... as append_message() writes it: a JSON string when `payload` is valid UTF-8, else
/// base64 followed by "payload_base64":true.
void append_json_payload(std::string& out, std::string_view payload);

/// Appends a 64-bit id as a JSON string of 16 hex digits (most JSON parsers round such numbers).
void append_json_hex64(std::string& out, std::uint64_t value);

}  // namespace ferry::cli
