#include "protocol_helpers.hpp"

#include <sys/random.h>

#include <fmt/format.h>
#include <cerrno>
#include <chrono>
#include <sstream>

namespace ferry::ferryd {

std::uint64_t random_u64() {
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v))
    v = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) *
        0x9E3779B97F4A7C15ull;
  return v;
}

std::string packed(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return {buf.data(), buf.size()};
}

msgpack::object_handle unpack_untrusted(std::string_view bytes) {
  const std::size_t n = bytes.size();
  constexpr std::size_t max_depth = 32;
  return msgpack::unpack(bytes.data(), n, nullptr, nullptr,
                         msgpack::unpack_limit(n, n / 2, n, n, n, max_depth));
}

bool map_uint(std::string_view bytes, std::string_view field, std::uint64_t& out, std::uint64_t fallback,
              std::string* problem) {
  out = fallback;
  if (bytes.empty()) return true;
  const auto fail = [&](std::string why) {
    if (problem != nullptr) *problem = std::move(why);
    return false;
  };
  try {
    msgpack::object_handle oh = unpack_untrusted(bytes);
    const msgpack::object& o = oh.get();
    if (o.type != msgpack::type::MAP) return fail("the frame is not a MessagePack map");
    for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) continue;
      if (std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) != field) continue;
      if (kv.val.type != msgpack::type::POSITIVE_INTEGER) {
        std::ostringstream value;
        value << kv.val;  // msgpack's own text form: -1, "64", 1.5, nil
        return fail(
            fmt::format("\"{}\" is {}, not an unsigned integer", printable(field), printable(value.str())));
      }
      out = kv.val.via.u64;
    }
    return true;
  } catch (const std::exception&) {
    return fail("the frame does not decode as MessagePack");
  }
}

bool is_space_error(int err) {
  return err == ENOSPC || err == EDQUOT || err == EFBIG;
}

message_id readable_id(std::string_view env) {
  const auto* b = reinterpret_cast<const unsigned char*>(env.data());
  if (env.size() >= 20 && (b[0] & 0xf0) == 0x90 && b[1] < 0x80 && b[2] == 0xc4 && b[3] == 16)
    return *message_id::from_bytes(env.substr(4, 16));
  return {};
}

std::string printable(std::string_view bytes) {
  std::string shown(bytes.substr(0, 64));
  for (auto& c : shown)
    if (c < 32 || c > 126) c = '?';
  return shown;
}

std::string peer_name(std::string_view identity) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : identity) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace ferry::ferryd
