#pragma once
/// @file Wire versions and how a sender frames messages (docs/protocol.md, "Frames").

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ferry {

/// How messages are framed on a brokerless socket. Receivers accept both, so a fleet upgrades one service
/// at a time: upgrade every receiver first, then switch senders to v2 (the default).
enum class wire_version : std::uint8_t {
  v1 = 1,  ///< three frames per message: topic | envelope | payload
  v2 = 2,  ///< one frame per message or batch: topic 0x00 [2, count] (envelope payload)...
};

[[nodiscard]] constexpr std::string_view to_string(wire_version v) noexcept {
  return v == wire_version::v1 ? "v1" : "v2";
}

/// How a sender frames what it sends.
struct wire_options {
  wire_version version = wire_version::v2;
  /// v2: a payload of at least this many bytes travels in a frame of its own (the split form), moved into
  /// it without a copy; smaller ones are copied into the message's one frame. Measured on a 2-core VM: from
  /// about 32 KiB the copy costs more than the second frame (docs/benchmarks.md).
  std::size_t split_payload = 32 * 1024;
  /// v2 batches: most bytes of envelopes and payloads packed into one frame; a larger batch is sent as
  /// several frames.
  std::size_t max_batch_bytes = 256 * 1024;
  /// v2 batches: most messages packed into one frame.
  std::size_t max_batch_messages = 4096;
};

}  // namespace ferry
