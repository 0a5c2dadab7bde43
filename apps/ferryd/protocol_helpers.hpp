#pragma once
// Small helpers ferryd's request handlers share: reading frames and MessagePack maps from the network
// (never trusting them), building reply frames, and printing peer bytes in logs.

#include <cstdint>
#include <functional>
#include <msgpack.hpp>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "ferry/message_id.hpp"

namespace ferry::ferryd {

/// A random 64-bit value (getrandom, with a fallback).
std::uint64_t random_u64();

inline std::string_view view(const zmq::message_t& m) {
  return m.to_string_view();
}

inline zmq::message_t frame(std::string_view s) {
  return zmq::message_t(s.data(), s.size());
}

/// The bytes `fill` packs with a msgpack packer.
std::string packed(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill);

/// Unpacks a MessagePack value from the network (an options frame) within limits its size implies: no
/// array, map, string or binary longer than the frame, and nesting at most 32 deep. So a count in the bytes
/// never makes it allocate more than a few times the frame, and nothing built from it recurses deeply.
/// Throws a std::exception (msgpack::size_overflow for a count or depth over the limits) for anything else.
msgpack::object_handle unpack_untrusted(std::string_view bytes);

/// Reads an unsigned field from a small msgpack map frame; `fallback` when absent. False when the frame is
/// not a map or the field has the wrong type; `problem`, when given, then says which, for an error reply
/// (e.g. "\"prefetch\" is -1, not an unsigned integer").
bool map_uint(std::string_view bytes, std::string_view field, std::uint64_t& out, std::uint64_t fallback,
              std::string* problem = nullptr);

/// ENOSPC, EDQUOT or EFBIG: the disk (or a quota) is full.
bool is_space_error(int err);

/// The id of an envelope that does not decode, when its first fields are still readable (array, version
/// as a fixint, 16-byte bin), so a refusal names the message it is about. Nil otherwise.
message_id readable_id(std::string_view envelope);

/// Bytes from the network, fit for a log line or an error text (at most 64, non-printables as '?').
std::string printable(std::string_view bytes);

/// A ZeroMQ routing id for logs (hex).
std::string peer_name(std::string_view identity);

}  // namespace ferry::ferryd
