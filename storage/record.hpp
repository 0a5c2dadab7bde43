#pragma once
// On-disk record framing, shared by segment files and journals (docs/storage.md).
//
//   header, 16 bytes:  magic "FRY1" | body length u32 | XXH3-64 of the body u64      (little-endian)
//   body:              type u8 | ...
//
// Message record body (type 1), 48 bytes then the variable parts:
//   type u8 | flags u8 | reserved u16 | envelope length u32 | seq u64 | stored_at_us i64 | id 16 bytes |
//   key hash u64 | envelope (storage form) | payload
// flags: bit 0 (record_flag_ttl) says the envelope has a ferry-ttl-ms header, bit 1
// (record_flag_not_before) a ferry-not-before header; other bits are 0.
// Journal record body (types 2..4), 16 bytes:
//   type u8 | detail u8 | reserved u16 | value u32 | seq u64
// Log-end record body (type 5, the only record of a log's `log_end` file), 24 bytes:
//   type u8 | reserved 7 bytes | segment base u64 | durable bytes u64

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/message_id.hpp"

namespace ferry::storage {

inline constexpr char record_magic[4] = {'F', 'R', 'Y', '1'};
inline constexpr std::size_t record_header_size = 16;
inline constexpr std::size_t message_fixed_size = 48;
inline constexpr std::size_t journal_body_size = 16;
/// Larger bodies are treated as corruption when scanning.
inline constexpr std::uint32_t max_record_body = 1u << 30;
/// Sequence numbers run from 1 to max_seq (2^62: a million messages a second for 146,000 years). A record
/// that names a larger one is treated as corruption, so `seq + 1` and a settled run's end never overflow.
inline constexpr std::uint64_t max_seq = std::uint64_t{1} << 62;

enum class record_type : std::uint8_t {
  message = 1,
  settle = 2,     // detail: settle_reason
  attempts = 3,   // value: deliveries so far
  watermark = 4,  // seq: every message below it is settled
  log_end = 5,    // a log's durable end: segment base and the bytes of it synced and confirmed
};

enum class settle_reason : std::uint8_t {
  acked = 1,
  dead_lettered = 2,
  purged = 3,
  replayed = 4,
  expired = 5,  // past its time to live, dropped
};

/// Message record flags: the envelope carries a ferry-ttl-ms header, or a ferry-not-before header (so
/// delivery decodes it to check; records without either are never decoded for that).
inline constexpr std::uint8_t record_flag_ttl = 0x01;
inline constexpr std::uint8_t record_flag_not_before = 0x02;

/// A message record as read back: views into the buffer it was parsed from.
struct message_record {
  std::uint64_t seq = 0;
  std::int64_t stored_at_us = 0;
  message_id id;
  std::uint64_t key_hash = 0;
  std::uint8_t flags = 0;
  std::string_view envelope;
  std::string_view payload;
};

struct journal_record {
  record_type type = record_type::settle;
  std::uint8_t detail = 0;
  std::uint32_t value = 0;
  std::uint64_t seq = 0;
};

/// Total bytes a message record takes on disk.
[[nodiscard]] constexpr std::size_t message_record_size(std::size_t envelope, std::size_t payload) noexcept {
  return record_header_size + message_fixed_size + envelope + payload;
}

/// How long before `now_us` a record was stored, from its stored_at_us as read back: 0 for a time after
/// `now_us` (the clock was set back since), and saturated instead of overflowing for any value the bytes
/// hold. Use it rather than subtracting: a record's time comes from disk.
[[nodiscard]] constexpr std::int64_t stored_age_us(std::int64_t now_us, std::int64_t stored_at_us) noexcept {
  if (stored_at_us >= now_us) return 0;
  std::int64_t age = 0;
  return __builtin_sub_overflow(now_us, stored_at_us, &age) ? std::numeric_limits<std::int64_t>::max() : age;
}

/// Appends a framed message record to `out`.
void append_message_record(std::string& out, std::uint64_t seq, std::int64_t stored_at_us,
                           const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                           std::string_view payload, std::uint8_t flags = 0);
/// Appends a framed journal record to `out`.
void append_journal_record(std::string& out, const journal_record& r);

/// A log's durable end (see storage/stream.hpp, "checkpoint").
struct log_end_record {
  std::uint64_t segment = 0;
  std::uint64_t durable = 0;
};
void append_log_end_record(std::string& out, const log_end_record& r);
std::optional<log_end_record> parse_log_end(std::string_view body) noexcept;

/// What a scan found at one position.
enum class frame_status { ok, incomplete, bad };

/// Checks the frame starting at `data` (at most `available` bytes): magic, length, checksum.
/// On ok, `body` views the body and `total` is header + body.
frame_status check_frame(const char* data, std::size_t available, std::string_view& body,
                         std::size_t& total) noexcept;

/// Parses a message body. Returns nullopt when the body is not a well-formed message record.
std::optional<message_record> parse_message(std::string_view body) noexcept;
/// Parses a journal body. Returns nullopt when it is not a well-formed journal record.
std::optional<journal_record> parse_journal(std::string_view body) noexcept;

/// Hash of a message key for ordering (0 means "no key"; a real key never hashes to 0).
[[nodiscard]] std::uint64_t key_hash(std::string_view key) noexcept;

}  // namespace ferry::storage
