#include "detail/wire.hpp"

#include <algorithm>
#include <cstring>
#include <memory>

namespace ferry::detail {
namespace {

char* put_be(char* p, std::uint64_t v, int bytes) noexcept {
  for (int i = bytes - 1; i >= 0; --i) *p++ = static_cast<char>(v >> (8 * i));
  return p;
}

std::size_t uint_size(std::uint64_t v) noexcept {
  return v < 128 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

char* put_uint(char* p, std::uint64_t v) noexcept {
  if (v < 128) {
    *p++ = static_cast<char>(v);
    return p;
  }
  if (v <= 0xff) {
    *p++ = static_cast<char>(0xcc);
    return put_be(p, v, 1);
  }
  if (v <= 0xffff) {
    *p++ = static_cast<char>(0xcd);
    return put_be(p, v, 2);
  }
  if (v <= 0xffffffffu) {
    *p++ = static_cast<char>(0xce);
    return put_be(p, v, 4);
  }
  *p++ = static_cast<char>(0xcf);
  return put_be(p, v, 8);
}

std::size_t bin_header_size(std::size_t n) noexcept {
  return n <= 0xff ? 2 : n <= 0xffff ? 3 : 5;
}

char* put_bin_header(char* p, std::size_t n) noexcept {
  if (n <= 0xff) {
    *p++ = static_cast<char>(0xc4);
    return put_be(p, n, 1);
  }
  if (n <= 0xffff) {
    *p++ = static_cast<char>(0xc5);
    return put_be(p, n, 2);
  }
  *p++ = static_cast<char>(0xc6);
  return put_be(p, n, 4);
}

// Bounds-checked reads of the few MessagePack items a block header and a payload use. Each returns none,
// truncated when the bytes end inside the item, or bad_header (bad_payload for a bin) when the item has
// another type or value.
class cursor {
 public:
  explicit cursor(std::string_view s) noexcept
      : begin_(reinterpret_cast<const unsigned char*>(s.data())), p_(begin_), end_(begin_ + s.size()) {}
  [[nodiscard]] std::size_t pos() const noexcept { return static_cast<std::size_t>(p_ - begin_); }
  [[nodiscard]] std::size_t left() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  void skip(std::size_t n) noexcept { p_ += n; }

  decode_error be(std::uint64_t& v, int bytes) noexcept {
    if (left() < static_cast<std::size_t>(bytes)) return decode_error::truncated;
    v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | *p_++;
    return decode_error::none;
  }
  decode_error array_header(std::uint64_t& n) noexcept {
    if (left() == 0) return decode_error::truncated;
    const unsigned char t = *p_++;
    if ((t & 0xf0) == 0x90) {
      n = t & 0x0f;
      return decode_error::none;
    }
    if (t == 0xdc) return be(n, 2);
    if (t == 0xdd) return be(n, 4);
    return decode_error::bad_header;
  }
  // A non-negative integer in any MessagePack integer encoding.
  decode_error uint(std::uint64_t& v) noexcept {
    if (left() == 0) return decode_error::truncated;
    const unsigned char t = *p_++;
    if (t < 0x80) {
      v = t;
      return decode_error::none;
    }
    if (t >= 0xcc && t <= 0xcf) return be(v, 1 << (t - 0xcc));
    if (t >= 0xd0 && t <= 0xd3) {
      const int bytes = 1 << (t - 0xd0);
      if (const auto e = be(v, bytes); e != decode_error::none) return e;
      const int shift = 64 - 8 * bytes;
      return static_cast<std::int64_t>(v << shift) >> shift >= 0 ? decode_error::none
                                                                 : decode_error::bad_header;
    }
    return decode_error::bad_header;
  }
  decode_error bin_header(std::uint64_t& n) noexcept {
    if (left() == 0) return decode_error::truncated;
    const unsigned char t = *p_++;
    if (t < 0xc4 || t > 0xc6) return decode_error::bad_payload;
    return be(n, 1 << (t - 0xc4));
  }

 private:
  const unsigned char* begin_;
  const unsigned char* p_;
  const unsigned char* end_;
};

// The smallest a block entry can be: a 6-element envelope of one-byte fields and a 16-byte id (24 bytes),
// and an empty bin (2 bytes). A header claiming more entries than fit is refused before anything is sized.
constexpr std::size_t min_entry = 26;

// The header [2, count]: truncated when the block ends inside it, bad_header when it says something else.
decode_error read_block_header(cursor& c, const decode_limits& limits, bool split, std::uint64_t& count) {
  std::uint64_t fields = 0, tag = 0;
  if (const auto e = c.array_header(fields); e != decode_error::none) return e;
  if (fields != 2) return decode_error::bad_header;
  if (const auto e = c.uint(tag); e != decode_error::none) return e;
  if (tag != wire_v2_tag) return decode_error::bad_header;
  if (const auto e = c.uint(count); e != decode_error::none) return e;
  if (count == 0 || count > limits.max_batch || (split && count != 1)) return decode_error::bad_header;
  return decode_error::none;
}

std::size_t v2_frame_size(const message& msg, std::size_t entries) noexcept {
  return msg.topic().size() + 1 + block_header_size(1) + entries;
}

}  // namespace

// ---- blocks ----------------------------------------------------------------------------------------------

std::size_t block_header_size(std::size_t count) noexcept {
  return 2 + uint_size(count);
}

char* write_block_header(char* p, std::size_t count) noexcept {
  *p++ = static_cast<char>(0x92);
  *p++ = static_cast<char>(wire_v2_tag);
  return put_uint(p, count);
}

std::size_t block_entry_size(std::size_t envelope, std::size_t payload) noexcept {
  return envelope + bin_header_size(payload) + payload;
}

std::size_t block_entry_size(const message& msg) noexcept {
  return block_entry_size(envelope_size(msg), msg.payload().size());
}

char* write_block_entry(char* p, std::string_view envelope, std::string_view payload) noexcept {
  std::memcpy(p, envelope.data(), envelope.size());
  p = put_bin_header(p + envelope.size(), payload.size());
  std::memcpy(p, payload.data(), payload.size());
  return p + payload.size();
}

char* write_block_entry(char* p, const message& msg) noexcept {
  p += encode_envelope(msg, p);
  const std::string_view payload = msg.payload();
  p = put_bin_header(p, payload.size());
  std::memcpy(p, payload.data(), payload.size());
  return p + payload.size();
}

decode_error decode_block(std::string_view block, std::vector<message>& out,
                          std::vector<payload_span>& payloads, std::size_t& decoded,
                          const decode_limits& limits, bool split) {
  decoded = 0;
  cursor c(block);
  std::uint64_t count = 0;
  if (const auto e = read_block_header(c, limits, split, count); e != decode_error::none) return e;
  if (count > c.left() / min_entry + 1) return decode_error::truncated;
  if (out.size() < count) out.resize(count);
  if (payloads.size() < count) payloads.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t used = 0;
    if (const auto e = decode_envelope_prefix(block.substr(c.pos()), out[i], limits, used);
        e != decode_error::none)
      return e;
    c.skip(used);
    if (split) {
      if (c.left() != 0) return decode_error::bad_payload;
      payloads[i] = {};
      continue;
    }
    std::uint64_t n = 0;
    if (const auto e = c.bin_header(n); e != decode_error::none) return e;
    if (n > c.left()) return decode_error::truncated;
    payloads[i] = {c.pos(), static_cast<std::size_t>(n)};
    c.skip(static_cast<std::size_t>(n));
  }
  if (c.left() != 0) return decode_error::batch_count;
  decoded = static_cast<std::size_t>(count);
  return decode_error::none;
}

// ---- sending ---------------------------------------------------------------------------------------------

void fit_to_frame_limit(wire_options& wire, std::int64_t max_message_size) noexcept {
  if (max_message_size <= 0) return;
  // Room for what a frame holds besides payloads: topic, separator, block header, and (for a packed message)
  // its envelope, up to the default decode_limits.
  const decode_limits limits;
  const std::size_t overhead = limits.max_topic + 1 + 16 + limits.max_envelope + 16;
  const auto max = static_cast<std::size_t>(max_message_size);
  const std::size_t room = max > overhead ? max - overhead : 1;
  wire.split_payload = std::clamp<std::size_t>(wire.split_payload, 1, room);
  wire.max_batch_bytes = std::clamp<std::size_t>(wire.max_batch_bytes, 1, room);
}

send_status check_sendable(const message& msg, const wire_options& wire) noexcept {
  if (check_limits(msg) != decode_error::none) return send_status::too_large;
  if (wire.version == wire_version::v2 && msg.topic().find(topic_separator) != std::string::npos)
    return send_status::invalid;
  return send_status::ok;
}

namespace {

send_status translate(const zmq::error_t& e) {
  if (e.num() == ETERM || e.num() == ENOTSOCK) return send_status::closed;
  if (e.num() == EHOSTUNREACH) return send_status::would_block;
  throw e;
}

zmq::send_flags first_flags(bool wait, bool more) {
  zmq::send_flags f = more ? zmq::send_flags::sndmore : zmq::send_flags::none;
  return wait ? f : (f | zmq::send_flags::dontwait);
}

send_status send_v1(zmq::socket_t& socket, message& msg, bool wait) {
  zmq::message_t topic(msg.topic().data(), msg.topic().size());
  zmq::message_t envelope = encode_envelope(msg);
  try {
    if (!socket.send(topic, first_flags(wait, true)))
      return wait ? send_status::timed_out : send_status::would_block;
    // libzmq accepts the remaining frames of a message whose first frame it took.
    (void)socket.send(envelope, zmq::send_flags::sndmore);
    (void)socket.send(msg.payload_frame(), zmq::send_flags::none);
    return send_status::ok;
  } catch (const zmq::error_t& e) {
    return translate(e);
  }
}

char* write_v2_prefix(char* p, std::string_view topic, std::size_t count) noexcept {
  std::memcpy(p, topic.data(), topic.size());
  p += topic.size();
  *p++ = topic_separator;
  return write_block_header(p, count);
}

send_status send_frame(zmq::socket_t& socket, zmq::message_t& frame, bool wait) {
  try {
    if (!socket.send(frame, first_flags(wait, false)))
      return wait ? send_status::timed_out : send_status::would_block;
    return send_status::ok;
  } catch (const zmq::error_t& e) {
    return translate(e);
  }
}

send_status send_split(zmq::socket_t& socket, message& msg, bool wait) {
  zmq::message_t head(v2_frame_size(msg, envelope_size(msg)));
  char* p = write_v2_prefix(static_cast<char*>(head.data()), msg.topic(), 1);
  encode_envelope(msg, p);
  try {
    if (!socket.send(head, first_flags(wait, true)))
      return wait ? send_status::timed_out : send_status::would_block;
    (void)socket.send(msg.payload_frame(), zmq::send_flags::none);  // moved, not copied
    return send_status::ok;
  } catch (const zmq::error_t& e) {
    return translate(e);
  }
}

// Sends msgs[0..n) (one topic, none split) packed in one frame.
send_status send_packed(zmq::socket_t& socket, std::span<message> msgs, std::size_t entry_bytes, bool wait) {
  const std::string_view topic = msgs.front().topic();
  zmq::message_t frame(topic.size() + 1 + block_header_size(msgs.size()) + entry_bytes);
  char* p = write_v2_prefix(static_cast<char*>(frame.data()), topic, msgs.size());
  for (const message& m : msgs) p = write_block_entry(p, m);
  return send_frame(socket, frame, wait);
}

}  // namespace

send_status send_message(zmq::socket_t& socket, message& msg, bool wait, const wire_options& wire) {
  if (const send_status s = check_sendable(msg, wire); s != send_status::ok) return s;
  msg.stamp();
  if (wire.version == wire_version::v1) return send_v1(socket, msg, wait);
  if (msg.payload().size() >= wire.split_payload) return send_split(socket, msg, wait);
  return send_packed(socket, {&msg, 1}, block_entry_size(msg), wait);
}

batch_status send_batch(zmq::socket_t& socket, std::span<message> msgs, bool wait, const wire_options& wire) {
  batch_status r;
  std::size_t sendable = 0;
  send_status problem = send_status::ok;
  for (; sendable < msgs.size(); ++sendable) {
    problem = check_sendable(msgs[sendable], wire);
    if (problem != send_status::ok) break;
    msgs[sendable].stamp();
  }
  // A frame holds at least one message, and no more than a receiver with the default limits accepts.
  const std::size_t max_messages =
      std::clamp<std::size_t>(wire.max_batch_messages, 1, decode_limits{}.max_batch);
  while (r.sent < sendable) {
    message& first = msgs[r.sent];
    if (wire.version == wire_version::v1 || first.payload().size() >= wire.split_payload) {
      r.status =
          wire.version == wire_version::v1 ? send_v1(socket, first, wait) : send_split(socket, first, wait);
      if (r.status != send_status::ok) return r;
      ++r.sent;
      ++r.frames;
      continue;
    }
    // The longest run from here with one topic, within the batch limits and without a split payload.
    std::size_t end = r.sent;
    std::size_t bytes = 0;
    while (end < sendable && end - r.sent < max_messages) {
      const message& m = msgs[end];
      if (m.topic() != first.topic() || m.payload().size() >= wire.split_payload) break;
      const std::size_t entry = block_entry_size(m);
      if (end > r.sent && bytes + entry > wire.max_batch_bytes) break;
      bytes += entry;
      ++end;
    }
    r.status = send_packed(socket, msgs.subspan(r.sent, end - r.sent), bytes, wait);
    if (r.status != send_status::ok) return r;
    r.sent = end;
    ++r.frames;
  }
  r.status = problem;
  return r;
}

// ---- receiving -------------------------------------------------------------------------------------------

receive_status frame_reader::fail(zmq::socket_t& socket, decode_error e) {
  // Frames beyond the three kept are read and dropped, so a bad set is consumed whole.
  zmq::message_t scratch;
  while (socket.get(zmq::sockopt::rcvmore)) (void)socket.recv(scratch);
  error_ = e;
  count_ = 0;
  return receive_status::rejected;
}

receive_status frame_reader::receive(zmq::socket_t& socket, bool wait) {
  count_ = 0;
  try {
    if (frames_.size() < 3) frames_.resize(3);
    if (!socket.recv(frames_[0], wait ? zmq::recv_flags::none : zmq::recv_flags::dontwait))
      return receive_status::would_block;
    std::size_t n = 1;
    while (frames_[n - 1].more()) {
      if (n == 3) return fail(socket, decode_error::frame_count);
      (void)socket.recv(frames_[n]);
      ++n;
    }
    decode_error e = decode_error::none;
    if (n == 3) {
      version_ = wire_version::v1;
      e = decode_v1();
    } else {
      version_ = wire_version::v2;
      e = decode_v2(n == 2);
    }
    if (e != decode_error::none) return fail(socket, e);
    error_ = decode_error::none;
    return receive_status::ok;
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM || e.num() == ENOTSOCK) return receive_status::closed;
    if (e.num() == EAGAIN) return receive_status::would_block;
    throw;
  }
}

decode_error frame_reader::decode_v1() {
  if (frames_[0].size() > limits_.max_topic) return decode_error::topic_too_long;
  if (batch_.empty()) batch_.resize(1);
  message& m = batch_[0];
  if (const auto e = decode_envelope(frames_[1].to_string_view(), m, limits_); e != decode_error::none)
    return e;
  m.set_topic(std::string(frames_[0].to_string_view()));
  m.set_payload(std::move(frames_[2]));
  count_ = 1;
  return decode_error::none;
}

decode_error frame_reader::decode_v2(bool split) {
  zmq::message_t& frame = frames_[0];
  const std::string_view bytes = frame.to_string_view();
  const std::size_t look = std::min(bytes.size(), limits_.max_topic + 1);
  const void* sep = std::memchr(bytes.data(), topic_separator, look);
  if (sep == nullptr)
    return bytes.size() > limits_.max_topic ? decode_error::topic_too_long : decode_error::no_separator;
  const std::size_t topic_size = static_cast<std::size_t>(static_cast<const char*>(sep) - bytes.data());
  const std::size_t block_at = topic_size + 1;
  std::size_t n = 0;
  if (const auto e = decode_block(bytes.substr(block_at), batch_, payloads_, n, limits_, split);
      e != decode_error::none)
    return e;
  const std::string_view topic = bytes.substr(0, topic_size);
  for (std::size_t i = 0; i < n; ++i) batch_[i].set_topic(std::string(topic));
  if (split) {
    batch_[0].set_payload(std::move(frames_[1]));
  } else if (n == 1) {
    batch_[0].set_payload_slice(std::move(frame), block_at + payloads_[0].offset, payloads_[0].size);
  } else {
    auto shared = std::make_shared<const zmq::message_t>(std::move(frame));
    for (std::size_t i = 0; i < n; ++i)
      batch_[i].set_payload_slice(shared, block_at + payloads_[i].offset, payloads_[i].size);
  }
  count_ = n;
  return decode_error::none;
}

}  // namespace ferry::detail
