#pragma once
// Reading values out of a decoded MessagePack map leniently, for replies whose fields may be added or
// left out by other versions of ferryd: a missing or wrongly typed value reads as empty or 0.
// Include after <msgpack.hpp> (compiled with MSGPACK_NO_BOOST).

#include <msgpack.hpp>

#include <cstdint>
#include <string_view>

namespace ferry::detail::msgpack_read {

/// The bytes of a str or bin; empty for anything else.
inline std::string_view text(const msgpack::object& o) noexcept {
  if (o.type == msgpack::type::STR) return {o.via.str.ptr, o.via.str.size};
  if (o.type == msgpack::type::BIN) return {o.via.bin.ptr, o.via.bin.size};
  return {};
}

/// The value of the str key `key` in `map`, or nullptr (also when `map` is not a map).
inline const msgpack::object* find(const msgpack::object& map, std::string_view key) noexcept {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && text(kv.key) == key) return &kv.val;
  }
  return nullptr;
}

inline std::string_view text(const msgpack::object* o) noexcept {
  return o != nullptr ? text(*o) : std::string_view();
}

inline std::uint64_t u64(const msgpack::object* o) noexcept {
  return o != nullptr && o->type == msgpack::type::POSITIVE_INTEGER ? o->via.u64 : 0;
}

inline std::int64_t i64(const msgpack::object* o) noexcept {
  if (o == nullptr) return 0;
  if (o->type == msgpack::type::POSITIVE_INTEGER) return static_cast<std::int64_t>(o->via.u64);
  if (o->type == msgpack::type::NEGATIVE_INTEGER) return o->via.i64;
  return 0;
}

inline double f64(const msgpack::object* o) noexcept {
  if (o == nullptr) return 0;
  if (o->type == msgpack::type::FLOAT32 || o->type == msgpack::type::FLOAT64) return o->via.f64;
  if (o->type == msgpack::type::POSITIVE_INTEGER) return static_cast<double>(o->via.u64);
  if (o->type == msgpack::type::NEGATIVE_INTEGER) return static_cast<double>(o->via.i64);
  return 0;
}

}  // namespace ferry::detail::msgpack_read
