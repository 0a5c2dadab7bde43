#include "record.hpp"

#include <xxhash.h>

#include <cstring>

namespace ferry::storage {
namespace {

template <typename T>
void put_le(char* p, T v) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    p[i] = static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i));
}

template <typename T>
T get_le(const char* p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return static_cast<T>(v);
}

char* begin_frame(std::string& out, std::size_t body_size) {
  const std::size_t at = out.size();
  out.resize(at + record_header_size + body_size);
  char* p = out.data() + at;
  std::memcpy(p, record_magic, 4);
  put_le<std::uint32_t>(p + 4, static_cast<std::uint32_t>(body_size));
  return p;
}

void seal_frame(char* frame, std::size_t body_size) {
  put_le<std::uint64_t>(frame + 8, XXH3_64bits(frame + record_header_size, body_size));
}

}  // namespace

void append_message_record(std::string& out, std::uint64_t seq, std::int64_t stored_at_us,
                           const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                           std::string_view payload, std::uint8_t flags) {
  const std::size_t body_size = message_fixed_size + envelope.size() + payload.size();
  char* frame = begin_frame(out, body_size);
  char* b = frame + record_header_size;
  b[0] = static_cast<char>(record_type::message);
  b[1] = static_cast<char>(flags);
  put_le<std::uint16_t>(b + 2, 0);
  put_le<std::uint32_t>(b + 4, static_cast<std::uint32_t>(envelope.size()));
  put_le<std::uint64_t>(b + 8, seq);
  put_le<std::int64_t>(b + 16, stored_at_us);
  std::memcpy(b + 24, id.bytes().data(), 16);
  put_le<std::uint64_t>(b + 40, key_hash);
  std::memcpy(b + message_fixed_size, envelope.data(), envelope.size());
  std::memcpy(b + message_fixed_size + envelope.size(), payload.data(), payload.size());
  seal_frame(frame, body_size);
}

void append_journal_record(std::string& out, const journal_record& r) {
  char* frame = begin_frame(out, journal_body_size);
  char* b = frame + record_header_size;
  b[0] = static_cast<char>(r.type);
  b[1] = static_cast<char>(r.detail);
  put_le<std::uint16_t>(b + 2, 0);
  put_le<std::uint32_t>(b + 4, r.value);
  put_le<std::uint64_t>(b + 8, r.seq);
  seal_frame(frame, journal_body_size);
}

void append_log_end_record(std::string& out, const log_end_record& r) {
  constexpr std::size_t body_size = 24;
  char* frame = begin_frame(out, body_size);
  char* b = frame + record_header_size;
  std::memset(b, 0, 8);
  b[0] = static_cast<char>(record_type::log_end);
  put_le<std::uint64_t>(b + 8, r.segment);
  put_le<std::uint64_t>(b + 16, r.durable);
  seal_frame(frame, body_size);
}

std::optional<log_end_record> parse_log_end(std::string_view body) noexcept {
  if (body.size() != 24 || body[0] != static_cast<char>(record_type::log_end)) return std::nullopt;
  return log_end_record{get_le<std::uint64_t>(body.data() + 8), get_le<std::uint64_t>(body.data() + 16)};
}

frame_status check_frame(const char* data, std::size_t available, std::string_view& body,
                         std::size_t& total) noexcept {
  if (available < record_header_size) return frame_status::incomplete;
  if (std::memcmp(data, record_magic, 4) != 0) return frame_status::bad;
  const auto size = get_le<std::uint32_t>(data + 4);
  if (size == 0 || size > max_record_body) return frame_status::bad;
  if (available - record_header_size < size) return frame_status::incomplete;
  if (XXH3_64bits(data + record_header_size, size) != get_le<std::uint64_t>(data + 8))
    return frame_status::bad;
  body = {data + record_header_size, size};
  total = record_header_size + size;
  return frame_status::ok;
}

std::optional<message_record> parse_message(std::string_view body) noexcept {
  if (body.size() < message_fixed_size || body[0] != static_cast<char>(record_type::message))
    return std::nullopt;
  const char* b = body.data();
  const auto env_size = get_le<std::uint32_t>(b + 4);
  if (env_size > body.size() - message_fixed_size) return std::nullopt;
  message_record r;
  r.seq = get_le<std::uint64_t>(b + 8);
  if (r.seq == 0 || r.seq > max_seq) return std::nullopt;
  r.stored_at_us = get_le<std::int64_t>(b + 16);
  r.id = *message_id::from_bytes({b + 24, 16});
  r.key_hash = get_le<std::uint64_t>(b + 40);
  r.flags = static_cast<std::uint8_t>(b[1]);
  r.envelope = body.substr(message_fixed_size, env_size);
  r.payload = body.substr(message_fixed_size + env_size);
  return r;
}

std::optional<journal_record> parse_journal(std::string_view body) noexcept {
  if (body.size() != journal_body_size) return std::nullopt;
  const char* b = body.data();
  const auto type = static_cast<std::uint8_t>(b[0]);
  if (type < 2 || type > 4) return std::nullopt;
  journal_record r;
  r.type = static_cast<record_type>(type);
  r.detail = static_cast<std::uint8_t>(b[1]);
  r.value = get_le<std::uint32_t>(b + 4);
  r.seq = get_le<std::uint64_t>(b + 8);
  // A watermark may name the seq after the last one; a settled run must end inside the seq space.
  if (r.seq > max_seq + 1 || (r.type == record_type::settle && r.value > max_seq - r.seq))
    return std::nullopt;
  return r;
}

std::uint64_t key_hash(std::string_view key) noexcept {
  if (key.empty()) return 0;
  const std::uint64_t h = XXH3_64bits(key.data(), key.size());
  return h == 0 ? 1 : h;
}

}  // namespace ferry::storage
