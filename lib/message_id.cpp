#include "ferry/message_id.hpp"

#include <pthread.h>
#include <sys/random.h>

#include <atomic>
#include <chrono>

namespace ferry {
namespace {

// Bumped in the child after fork(), so a child never repeats its parent's id stream.
std::atomic<std::uint64_t> fork_generation{0};
void after_fork_in_child() noexcept {
  fork_generation.fetch_add(1, std::memory_order_relaxed);
}
const int atfork_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);

constexpr std::uint32_t counter_bits = 30;
constexpr std::uint64_t tag_mask = (std::uint64_t{1} << 44) - 1;

struct generator_state {
  std::uint64_t generation = ~std::uint64_t{0};
  std::uint64_t last_ms = 0;
  std::uint32_t counter = 0;
  std::uint64_t tag = 0;  // 44 random bits per thread (and per process after fork)
};
thread_local generator_state state;

std::uint64_t random_tag() noexcept {
  std::uint64_t value = 0;
  if (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value)) {
    // No entropy source: fall back to address and time, still distinct per thread.
    value = reinterpret_cast<std::uintptr_t>(&state) ^
            static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) *
                0x9E3779B97F4A7C15ull;
  }
  return value & tag_mask;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

message_id message_id::generate() noexcept {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return generate(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count()));
}

message_id message_id::generate(std::uint64_t ms) noexcept {
  (void)atfork_registered;
  generator_state& s = state;
  const std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (s.generation != generation) {
    s.generation = generation;
    s.tag = random_tag();
    s.counter = 0;
  }
  if (ms > s.last_ms) {
    s.last_ms = ms;
    s.counter = 0;
  } else if (++s.counter == (std::uint32_t{1} << counter_bits)) {
    // A billion ids in one millisecond, or the clock went back: borrow the next millisecond so ids keep
    // increasing within this thread.
    ++s.last_ms;
    s.counter = 0;
  }
  const std::uint64_t t = s.last_ms;
  const std::uint32_t c = s.counter;
  std::array<std::uint8_t, size> b;
  b[0] = static_cast<std::uint8_t>(t >> 40);
  b[1] = static_cast<std::uint8_t>(t >> 32);
  b[2] = static_cast<std::uint8_t>(t >> 24);
  b[3] = static_cast<std::uint8_t>(t >> 16);
  b[4] = static_cast<std::uint8_t>(t >> 8);
  b[5] = static_cast<std::uint8_t>(t);
  b[6] = static_cast<std::uint8_t>(0x70 | ((c >> 26) & 0x0F));  // version 7
  b[7] = static_cast<std::uint8_t>(c >> 18);
  b[8] = static_cast<std::uint8_t>(0x80 | ((c >> 12) & 0x3F));  // RFC 9562 variant
  b[9] = static_cast<std::uint8_t>(c >> 4);
  b[10] = static_cast<std::uint8_t>(((c & 0x0F) << 4) | ((s.tag >> 40) & 0x0F));
  b[11] = static_cast<std::uint8_t>(s.tag >> 32);
  b[12] = static_cast<std::uint8_t>(s.tag >> 24);
  b[13] = static_cast<std::uint8_t>(s.tag >> 16);
  b[14] = static_cast<std::uint8_t>(s.tag >> 8);
  b[15] = static_cast<std::uint8_t>(s.tag);
  return message_id(b);
}

std::optional<message_id> message_id::from_bytes(std::string_view raw) noexcept {
  if (raw.size() != size) return std::nullopt;
  std::array<std::uint8_t, size> b;
  std::memcpy(b.data(), raw.data(), size);
  return message_id(b);
}

std::optional<message_id> message_id::from_hex(std::string_view hex) noexcept {
  if (hex.size() != 2 * size) return std::nullopt;
  std::array<std::uint8_t, size> b;
  for (std::size_t i = 0; i < size; ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    b[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return message_id(b);
}

bool message_id::is_nil() const noexcept {
  for (auto byte : bytes_)
    if (byte != 0) return false;
  return true;
}

std::uint64_t message_id::unix_ms() const noexcept {
  std::uint64_t t = 0;
  for (int i = 0; i < 6; ++i) t = (t << 8) | bytes_[static_cast<std::size_t>(i)];
  return t;
}

std::string message_id::to_hex() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(2 * size, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[bytes_[i] >> 4];
    out[2 * i + 1] = digits[bytes_[i] & 0x0F];
  }
  return out;
}

}  // namespace ferry
