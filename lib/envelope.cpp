// Envelope v1 codec. Written by hand rather than through msgpack-cxx: the schema is fixed and tiny, this
// path runs for every message, and a direct reader decodes it without the parser's per-call allocations
// while checking every bound itself. The tests cross-check both directions against msgpack-cxx.
#include "ferry/envelope.hpp"

#include <cstring>
#include <limits>

namespace ferry {
namespace {

constexpr std::uint8_t nil = 0xc0;

std::size_t uint_size(std::uint64_t v) noexcept {
  if (v < 128) return 1;
  if (v <= 0xff) return 2;
  if (v <= 0xffff) return 3;
  if (v <= 0xffffffffu) return 5;
  return 9;
}

std::size_t str_size(std::size_t n) noexcept {
  if (n < 32) return 1 + n;
  if (n <= 0xff) return 2 + n;
  if (n <= 0xffff) return 3 + n;
  return 5 + n;
}

std::size_t map_header_size(std::size_t n) noexcept {
  return n < 16 ? 1 : (n <= 0xffff ? 3 : 5);
}

char* put_be(char* p, std::uint64_t v, int bytes) noexcept {
  for (int i = bytes - 1; i >= 0; --i) *p++ = static_cast<char>(v >> (8 * i));
  return p;
}

char* put_byte(char* p, std::uint8_t b) noexcept {
  *p++ = static_cast<char>(b);
  return p;
}

char* put_uint(char* p, std::uint64_t v) noexcept {
  if (v < 128) return put_byte(p, static_cast<std::uint8_t>(v));
  if (v <= 0xff) return put_be(put_byte(p, 0xcc), v, 1);
  if (v <= 0xffff) return put_be(put_byte(p, 0xcd), v, 2);
  if (v <= 0xffffffffu) return put_be(put_byte(p, 0xce), v, 4);
  return put_be(put_byte(p, 0xcf), v, 8);
}

char* put_str(char* p, std::string_view s) noexcept {
  const std::size_t n = s.size();
  if (n < 32) {
    p = put_byte(p, static_cast<std::uint8_t>(0xa0 | n));
  } else if (n <= 0xff) {
    p = put_be(put_byte(p, 0xd9), n, 1);
  } else if (n <= 0xffff) {
    p = put_be(put_byte(p, 0xda), n, 2);
  } else {
    p = put_be(put_byte(p, 0xdb), n, 4);
  }
  std::memcpy(p, s.data(), n);
  return p + n;
}

bool is_stream(const message& m) noexcept {
  return m.origin() != 0 || m.sequence() != 0;
}

// A bounds-checked reader over the types envelope v1 uses.
class reader {
 public:
  explicit reader(std::string_view bytes) noexcept
      : p_(reinterpret_cast<const std::uint8_t*>(bytes.data())), end_(p_ + bytes.size()) {}

  [[nodiscard]] bool at_end() const noexcept { return p_ == end_; }
  [[nodiscard]] std::size_t used(std::string_view from) const noexcept {
    return static_cast<std::size_t>(reinterpret_cast<const char*>(p_) - from.data());
  }

  // Each read returns decode_error::none or why it failed.
  decode_error array_header(std::uint32_t& n) noexcept {
    std::uint8_t t;
    if (!byte(t)) return decode_error::truncated;
    if ((t & 0xf0) == 0x90) {
      n = t & 0x0f;
      return decode_error::none;
    }
    if (t == 0xdc) return be(n, 2);
    if (t == 0xdd) return be(n, 4);
    return decode_error::not_an_array;
  }

  decode_error uint(std::uint64_t& v) noexcept {
    std::uint8_t t;
    if (!byte(t)) return decode_error::truncated;
    if (t < 0x80) {
      v = t;
      return decode_error::none;
    }
    switch (t) {
      case 0xcc:
        return be(v, 1);
      case 0xcd:
        return be(v, 2);
      case 0xce:
        return be(v, 4);
      case 0xcf:
        return be(v, 8);
      // Signed encodings of non-negative values are accepted: some packers use them.
      case 0xd0:
      case 0xd1:
      case 0xd2:
      case 0xd3: {
        std::int64_t s;
        if (auto e = signed_body(t, s); e != decode_error::none) return e;
        if (s < 0) return decode_error::bad_field;
        v = static_cast<std::uint64_t>(s);
        return decode_error::none;
      }
      default:
        return decode_error::bad_field;
    }
  }

  decode_error integer(std::int64_t& v) noexcept {
    std::uint8_t t;
    if (!peek(t)) return decode_error::truncated;
    if (t >= 0xe0) {  // negative fixint
      ++p_;
      v = static_cast<std::int8_t>(t);
      return decode_error::none;
    }
    if (t >= 0xd0 && t <= 0xd3) {
      ++p_;
      return signed_body(t, v);
    }
    std::uint64_t u;
    if (auto e = uint(u); e != decode_error::none) return e;
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return decode_error::bad_field;
    v = static_cast<std::int64_t>(u);
    return decode_error::none;
  }

  // A str, or nil when allow_nil (nil reads as an empty view).
  decode_error str(std::string_view& s, bool allow_nil) noexcept {
    std::uint8_t t;
    if (!byte(t)) return decode_error::truncated;
    std::uint32_t n = 0;
    if ((t & 0xe0) == 0xa0) {
      n = t & 0x1f;
    } else if (t == 0xd9 || t == 0xda || t == 0xdb) {
      if (auto e = be(n, t == 0xd9 ? 1 : t == 0xda ? 2 : 4); e != decode_error::none) return e;
    } else if (t == nil && allow_nil) {
      s = {};
      return decode_error::none;
    } else {
      return decode_error::bad_field;
    }
    return take(n, s);
  }

  decode_error bin(std::string_view& s) noexcept {
    std::uint8_t t;
    if (!byte(t)) return decode_error::truncated;
    std::uint32_t n = 0;
    if (t == 0xc4 || t == 0xc5 || t == 0xc6) {
      if (auto e = be(n, t == 0xc4 ? 1 : t == 0xc5 ? 2 : 4); e != decode_error::none) return e;
    } else {
      return decode_error::bad_id;
    }
    return take(n, s);
  }

  // A map header, or nil (read as an empty map).
  decode_error map_header_or_nil(std::uint32_t& n) noexcept {
    std::uint8_t t;
    if (!byte(t)) return decode_error::truncated;
    if ((t & 0xf0) == 0x80) {
      n = t & 0x0f;
      return decode_error::none;
    }
    if (t == 0xde) return be(n, 2);
    if (t == 0xdf) return be(n, 4);
    if (t == nil) {
      n = 0;
      return decode_error::none;
    }
    return decode_error::bad_field;
  }

 private:
  bool byte(std::uint8_t& b) noexcept {
    if (p_ == end_) return false;
    b = *p_++;
    return true;
  }
  bool peek(std::uint8_t& b) const noexcept {
    if (p_ == end_) return false;
    b = *p_;
    return true;
  }
  template <typename T>
  decode_error be(T& out, int bytes) noexcept {
    if (end_ - p_ < bytes) return decode_error::truncated;
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | *p_++;
    out = static_cast<T>(v);
    return decode_error::none;
  }
  decode_error signed_body(std::uint8_t t, std::int64_t& v) noexcept {
    const int bytes = 1 << (t - 0xd0);
    std::uint64_t raw;
    if (auto e = be(raw, bytes); e != decode_error::none) return e;
    const int shift = 64 - 8 * bytes;  // sign-extend
    v = static_cast<std::int64_t>(raw << shift) >> shift;
    return decode_error::none;
  }
  decode_error take(std::uint32_t n, std::string_view& s) noexcept {
    if (static_cast<std::size_t>(end_ - p_) < n) return decode_error::truncated;
    s = {reinterpret_cast<const char*>(p_), n};
    p_ += n;
    return decode_error::none;
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

}  // namespace

std::string_view to_string(decode_error e) noexcept {
  switch (e) {
    case decode_error::none:
      return "none";
    case decode_error::frame_count:
      return "frame_count";
    case decode_error::topic_too_long:
      return "topic_too_long";
    case decode_error::envelope_too_large:
      return "envelope_too_large";
    case decode_error::truncated:
      return "truncated";
    case decode_error::not_an_array:
      return "not_an_array";
    case decode_error::unknown_version:
      return "unknown_version";
    case decode_error::bad_id:
      return "bad_id";
    case decode_error::bad_field:
      return "bad_field";
    case decode_error::key_too_long:
      return "key_too_long";
    case decode_error::too_many_headers:
      return "too_many_headers";
    case decode_error::trailing_bytes:
      return "trailing_bytes";
    case decode_error::no_separator:
      return "no_separator";
    case decode_error::bad_header:
      return "bad_header";
    case decode_error::bad_payload:
      return "bad_payload";
    case decode_error::batch_count:
      return "batch_count";
  }
  return "unknown";
}

decode_error check_limits(const message& msg, const decode_limits& limits) noexcept {
  if (msg.topic().size() > limits.max_topic) return decode_error::topic_too_long;
  if (msg.key().size() > limits.max_key) return decode_error::key_too_long;
  if (msg.headers().size() > limits.max_headers) return decode_error::too_many_headers;
  // Without headers an envelope is at most 64 bytes plus the key: only headers can make it too large.
  constexpr std::size_t without_headers = 64;
  if (msg.headers().empty() && without_headers + msg.key().size() <= limits.max_envelope)
    return decode_error::none;
  if (envelope_size(msg, envelope_form::storage) > limits.max_envelope)
    return decode_error::envelope_too_large;
  return decode_error::none;
}

std::size_t envelope_size(const message& msg, envelope_form form) noexcept {
  std::size_t n = 1 + 1 + 18 + 9;  // array header, version, id, timestamp
  n += form == envelope_form::storage ? 5 : uint_size(msg.attempt());
  n += msg.has_key() ? str_size(msg.key().size()) : 1;
  n += map_header_size(msg.headers().size());
  for (const auto& [name, value] : msg.headers()) n += str_size(name.size()) + str_size(value.size());
  if (is_stream(msg)) n += uint_size(msg.origin()) + uint_size(msg.sequence());
  return n;
}

std::size_t encode_envelope(const message& msg, char* out, envelope_form form) noexcept {
  char* p = out;
  p = put_byte(p, is_stream(msg) ? 0x98 : 0x96);
  p = put_byte(p, envelope_version);
  p = put_byte(p, 0xc4);
  p = put_byte(p, 16);
  std::memcpy(p, msg.id().bytes().data(), 16);
  p += 16;
  const std::int64_t ts = msg.timestamp_us();
  p = put_be(put_byte(p, ts >= 0 ? 0xcf : 0xd3), static_cast<std::uint64_t>(ts), 8);
  if (form == envelope_form::storage) {
    p = put_be(put_byte(p, 0xce), msg.attempt(), 4);
  } else {
    p = put_uint(p, msg.attempt());
  }
  p = msg.has_key() ? put_str(p, msg.key()) : put_byte(p, nil);
  const std::size_t h = msg.headers().size();
  if (h < 16) {
    p = put_byte(p, static_cast<std::uint8_t>(0x80 | h));
  } else if (h <= 0xffff) {
    p = put_be(put_byte(p, 0xde), h, 2);
  } else {
    p = put_be(put_byte(p, 0xdf), h, 4);
  }
  for (const auto& [name, value] : msg.headers()) {
    p = put_str(p, name);
    p = put_str(p, value);
  }
  if (is_stream(msg)) {
    p = put_uint(p, msg.origin());
    p = put_uint(p, msg.sequence());
  }
  return static_cast<std::size_t>(p - out);
}

zmq::message_t encode_envelope(const message& msg, envelope_form form) {
  zmq::message_t frame(envelope_size(msg, form));
  encode_envelope(msg, static_cast<char*>(frame.data()), form);
  return frame;
}

bool patch_envelope_attempt(char* envelope, std::size_t size, std::uint32_t attempt) noexcept {
  if (size < envelope_attempt_offset + 5) return false;
  auto* p = reinterpret_cast<std::uint8_t*>(envelope);
  if ((p[0] != 0x96 && p[0] != 0x98) || p[2] != 0xc4 || p[3] != 16 || p[envelope_attempt_offset] != 0xce)
    return false;
  put_be(envelope + envelope_attempt_offset + 1, attempt, 4);
  return true;
}

namespace {

std::uint64_t be64(const unsigned char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// The envelopes senders write most: 6 fields, 64-bit timestamp, no key, no headers, with the attempt as
// a fixint (compact form, 32 bytes) or a uint32 (storage form, 36 bytes). Recognised by their fixed bytes
// at the start of `bytes` and decoded without the general reader; `used` gets the length.
bool decode_common(std::string_view bytes, message& out, std::size_t& used) noexcept {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 32 || b[0] != 0x96 || b[1] != envelope_version || b[2] != 0xc4 || b[3] != 16 ||
      b[20] != 0xcf)
    return false;
  std::uint32_t attempt = 0;
  std::size_t at = 29;
  if (b[29] < 0x80) {
    attempt = b[29];
    at = 30;
  } else if (b[29] == 0xce && bytes.size() >= 36) {
    attempt = static_cast<std::uint32_t>(b[30]) << 24 | static_cast<std::uint32_t>(b[31]) << 16 |
              static_cast<std::uint32_t>(b[32]) << 8 | b[33];
    at = 34;
  } else {
    return false;
  }
  if (b[at] != nil || b[at + 1] != 0x80) return false;
  const auto id = message_id::from_bytes(bytes.substr(4, 16));
  if (id->is_nil()) return false;  // the general path names the error
  const std::uint64_t ts = be64(b + 21);
  if (ts > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
  out.set_id(*id);
  out.set_timestamp_us(static_cast<std::int64_t>(ts));
  out.set_attempt(attempt);
  if (out.has_key()) out.set_key(std::string());
  if (!out.headers().empty()) out.headers().clear();
  out.set_stream(0, 0);
  used = at + 2;
  return true;
}

// The general decoder; nothing is allocated before the whole envelope checks out.
decode_error decode_fields(std::string_view bytes, message& out, const decode_limits& limits,
                           std::size_t& used) {
  const std::string_view whole = bytes;
  reader r(bytes);
  std::uint32_t fields = 0;
  if (auto e = r.array_header(fields); e != decode_error::none) return e;
  if (fields != 6 && fields != 8) return decode_error::not_an_array;

  std::uint64_t version = 0;
  if (auto e = r.uint(version); e != decode_error::none)
    return e == decode_error::truncated ? e : decode_error::unknown_version;
  if (version != envelope_version) return decode_error::unknown_version;

  std::string_view id_bytes;
  if (auto e = r.bin(id_bytes); e != decode_error::none)
    return e == decode_error::truncated ? e : decode_error::bad_id;
  const auto id = message_id::from_bytes(id_bytes);
  if (!id || id->is_nil()) return decode_error::bad_id;  // nil means "no id": every message must carry one

  std::int64_t timestamp = 0;
  if (auto e = r.integer(timestamp); e != decode_error::none) return e;

  std::uint64_t attempt = 0;
  if (auto e = r.uint(attempt); e != decode_error::none) return e;
  if (attempt > std::numeric_limits<std::uint32_t>::max()) return decode_error::bad_field;

  std::string_view key;
  if (auto e = r.str(key, true); e != decode_error::none) return e;
  if (key.size() > limits.max_key) return decode_error::key_too_long;

  std::uint32_t header_count = 0;
  if (auto e = r.map_header_or_nil(header_count); e != decode_error::none) return e;
  if (header_count > limits.max_headers) return decode_error::too_many_headers;
  ferry::headers decoded_headers;
  for (std::uint32_t i = 0; i < header_count; ++i) {
    std::string_view name;
    std::string_view value;
    if (auto e = r.str(name, false); e != decode_error::none) return e;
    if (auto e = r.str(value, false); e != decode_error::none) return e;
    decoded_headers.insert_or_assign(std::string(name), std::string(value));
  }

  std::uint64_t origin = 0;
  std::uint64_t sequence = 0;
  if (fields == 8) {
    if (auto e = r.uint(origin); e != decode_error::none) return e;
    if (auto e = r.uint(sequence); e != decode_error::none) return e;
  }
  used = r.used(whole);

  out.set_id(*id);
  out.set_timestamp_us(timestamp);
  out.set_attempt(static_cast<std::uint32_t>(attempt));
  out.set_key(std::string(key));
  out.headers() = std::move(decoded_headers);
  out.set_stream(origin, sequence);
  return decode_error::none;
}

}  // namespace

decode_error decode_envelope(std::string_view bytes, message& out, const decode_limits& limits) {
  if (bytes.size() > limits.max_envelope) return decode_error::envelope_too_large;
  std::size_t used = 0;
  const decode_error e = decode_envelope_prefix(bytes, out, limits, used);
  if (e != decode_error::none) return e;
  return used == bytes.size() ? decode_error::none : decode_error::trailing_bytes;
}

decode_error decode_envelope_prefix(std::string_view bytes, message& out, const decode_limits& limits,
                                    std::size_t& used) {
  if (decode_common(bytes, out, used)) return decode_error::none;
  if (bytes.size() <= limits.max_envelope) return decode_fields(bytes, out, limits, used);
  // No envelope is read past max_envelope: one that does not end within it is too large, not truncated.
  const decode_error e = decode_fields(bytes.substr(0, limits.max_envelope), out, limits, used);
  return e == decode_error::truncated ? decode_error::envelope_too_large : e;
}

}  // namespace ferry
