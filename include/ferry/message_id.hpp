#pragma once
/// @file 128-bit time-ordered message ids.

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace ferry {

/// A 128-bit message id laid out like a UUIDv7: 48 bits of Unix milliseconds, then a per-thread counter and
/// random bits. Ids made in one thread sort in creation order; ids from different threads and processes are
/// unique with overwhelming probability. Byte order is big-endian, so comparing bytes compares time.
///
/// Thread safety: a value type; `generate()` may be called from any thread.
class message_id {
 public:
  static constexpr std::size_t size = 16;

  /// The nil id (all zero bytes): "not assigned yet".
  constexpr message_id() noexcept = default;
  explicit message_id(const std::array<std::uint8_t, size>& bytes) noexcept : bytes_(bytes) {}

  /// A fresh id. Costs one clock read (vDSO, no system call) and a few arithmetic operations.
  static message_id generate() noexcept;
  /// A fresh id for a message made at `unix_ms` (saves the clock read when the caller has the time).
  static message_id generate(std::uint64_t unix_ms) noexcept;

  /// Reads 16 raw bytes. Returns std::nullopt when `raw` is not exactly 16 bytes long.
  static std::optional<message_id> from_bytes(std::string_view raw) noexcept;
  /// Parses 32 hex digits (either case). Returns std::nullopt for anything else.
  static std::optional<message_id> from_hex(std::string_view hex) noexcept;

  [[nodiscard]] bool is_nil() const noexcept;
  /// Unix milliseconds stored in the first 48 bits.
  [[nodiscard]] std::uint64_t unix_ms() const noexcept;
  [[nodiscard]] std::string to_hex() const;
  [[nodiscard]] const std::array<std::uint8_t, size>& bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::string_view view() const noexcept {
    return {reinterpret_cast<const char*>(bytes_.data()), size};
  }

  friend auto operator<=>(const message_id&, const message_id&) = default;
  friend bool operator==(const message_id&, const message_id&) = default;

 private:
  std::array<std::uint8_t, size> bytes_{};
};

}  // namespace ferry

template <>
struct std::hash<ferry::message_id> {
  std::size_t operator()(const ferry::message_id& id) const noexcept {
    // Ids from one thread differ in a few middle bits only, so mix both halves (a murmur-style finalizer).
    std::uint64_t lo;
    std::memcpy(&lo, id.bytes().data() + 8, sizeof lo);
    std::uint64_t hi;
    std::memcpy(&hi, id.bytes().data(), sizeof hi);
    std::uint64_t x = lo ^ (hi * 0x9E3779B97F4A7C15ull);
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 29;
    return static_cast<std::size_t>(x);
  }
};
