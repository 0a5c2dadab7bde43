#pragma once
/// @file Envelope v1: the MessagePack array that carries a message's id, time, attempt, key and headers,
/// between its topic and its payload (in one v2 frame, or as the middle frame of a v1 frame set).
///
/// The envelope is a MessagePack array `[version, id, timestamp_us, attempt, key, headers]`, or the same
/// with `origin, sequence` appended for messages of a publisher stream. docs/protocol.md specifies it. The
/// envelope's own version stays 1 in wire v2: v2 changes how messages are framed, not the envelope.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <zmq.hpp>

#include "ferry/message.hpp"

namespace ferry {

inline constexpr std::uint8_t envelope_version = 1;

/// Why a frame set was rejected. Every value is counted by whoever received the frames.
enum class decode_error : std::uint8_t {
  none = 0,
  frame_count,         ///< a frame set of more than three frames (1: v2 packed, 2: v2 split, 3: v1)
  topic_too_long,      ///< topic frame longer than decode_limits::max_topic
  envelope_too_large,  ///< an envelope longer than decode_limits::max_envelope
  truncated,           ///< the envelope, or a v2 frame, ends in the middle of a value
  not_an_array,        ///< the envelope is not a MessagePack array of 6 or 8 elements
  unknown_version,     ///< version is not 1
  bad_id,              ///< id is not a 16-byte bin
  bad_field,           ///< a field has the wrong MessagePack type or is out of range
  key_too_long,        ///< key longer than decode_limits::max_key
  too_many_headers,    ///< more headers than decode_limits::max_headers
  trailing_bytes,      ///< v1: bytes after the envelope array in its frame
  no_separator,        ///< v2: no 0x00 after the topic within decode_limits::max_topic + 1 bytes
  bad_header,          ///< v2: the frame header is not [2, count] with 1 <= count <= decode_limits::max_batch
  bad_payload,         ///< v2: a payload is not a MessagePack bin, or a split frame carries one as well
  batch_count,         ///< v2: bytes after the last message the header counts
};

/// A short, stable, human-readable name ("frame_count", "truncated", ...).
[[nodiscard]] std::string_view to_string(decode_error e) noexcept;

/// Bounds a decoder enforces; anything beyond is rejected, never allocated.
struct decode_limits {
  std::size_t max_topic = 255;
  std::size_t max_key = 255;
  std::size_t max_headers = 64;
  std::size_t max_envelope = 64 * 1024;
  std::size_t max_batch = 65'536;  ///< messages in one v2 frame
};

/// Checks that a receiver with `limits` will accept `msg`'s topic and envelope; senders call it so an
/// oversize message is refused at the sender (send_status::too_large) instead of dropped at every receiver.
[[nodiscard]] decode_error check_limits(const message& msg, const decode_limits& limits = {}) noexcept;

/// How wide the attempt field is written.
enum class envelope_form : std::uint8_t {
  compact,  ///< smallest encoding (what senders use)
  storage,  ///< attempt always a 5-byte uint32 at envelope_attempt_offset, so it can be patched in place
};

/// Byte offset of the attempt field's 0xce marker in an envelope written in envelope_form::storage.
inline constexpr std::size_t envelope_attempt_offset = 29;

/// Number of bytes encode_envelope() writes for `msg`.
[[nodiscard]] std::size_t envelope_size(const message& msg,
                                        envelope_form form = envelope_form::compact) noexcept;

/// Writes the envelope of `msg` into `out`, which must hold envelope_size(msg, form) bytes.
/// Returns the number of bytes written.
std::size_t encode_envelope(const message& msg, char* out,
                            envelope_form form = envelope_form::compact) noexcept;

/// The envelope of `msg` in a new frame (libzmq stores envelopes up to 33 bytes inline, without allocating).
[[nodiscard]] zmq::message_t encode_envelope(const message& msg, envelope_form form = envelope_form::compact);

/// Rewrites the attempt of an envelope written in envelope_form::storage. Returns false (and changes
/// nothing) when `envelope` is not in that form.
bool patch_envelope_attempt(char* envelope, std::size_t size, std::uint32_t attempt) noexcept;

/// Decodes an envelope into `out` (id, timestamp, attempt, key, headers, origin, sequence); topic and
/// payload are left alone. `bytes` must hold exactly one envelope. Never throws on bad input and never
/// reads outside `bytes`.
[[nodiscard]] decode_error decode_envelope(std::string_view bytes, message& out,
                                           const decode_limits& limits = {});
/// Decodes the envelope at the start of `bytes` (more may follow it, as in a v2 frame); `used` receives its
/// length.
[[nodiscard]] decode_error decode_envelope_prefix(std::string_view bytes, message& out,
                                                  const decode_limits& limits, std::size_t& used);

}  // namespace ferry
