#pragma once
// Moving ferry messages in and out of brokerless sockets, in wire v1 (three frames per message) and v2
// (docs/protocol.md, "Frames"):
//
//   v2 packed  one frame:   topic | 00 | [2, n] | n x (envelope, payload as MessagePack bin)
//   v2 split   two frames:  topic | 00 | [2, 1] | envelope      then the payload as a frame of its own
//   v1         three frames: topic, envelope, payload
//
// The part after `topic 00` is a *block*, which the forwarder protocol v2 uses as is for SEND and DELIVER.
// Every message of a v2 frame has the frame's topic, so a SUB socket's prefix filter (libzmq, on the
// publisher's side) still sees the topic first; `topic 00` subscribes to exactly one topic.

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "ferry/envelope.hpp"
#include "ferry/message.hpp"
#include "ferry/status.hpp"
#include "ferry/wire.hpp"

namespace ferry::detail {

inline constexpr std::uint8_t wire_v2_tag = 2;  // the first element of a block's header
inline constexpr char topic_separator = '\0';

// ---- blocks ----------------------------------------------------------------------------------------------

/// Bytes of a block header for `count` messages.
[[nodiscard]] std::size_t block_header_size(std::size_t count) noexcept;
/// Writes a block header; returns the position after it.
char* write_block_header(char* p, std::size_t count) noexcept;
/// Bytes `msg` takes in a block: its compact envelope, the bin header and the payload.
[[nodiscard]] std::size_t block_entry_size(const message& msg) noexcept;
/// Writes `msg` as a block entry; returns the position after it.
char* write_block_entry(char* p, const message& msg) noexcept;
/// Same, with an envelope already encoded (the forwarder's storage form).
[[nodiscard]] std::size_t block_entry_size(std::size_t envelope, std::size_t payload) noexcept;
char* write_block_entry(char* p, std::string_view envelope, std::string_view payload) noexcept;

/// Where a decoded entry's payload lies in the block.
struct payload_span {
  std::size_t offset = 0;  // from the start of the block
  std::size_t size = 0;
};

/// Decodes a block: its header, then each entry's envelope into `out[i]` and its payload's position into
/// `payloads[i]` (both grown to at least the count, which `count` receives). With `split` the block holds
/// one envelope and no payload (the payload is the next frame). Returns none, or the first problem (nothing
/// of a bad block is to be used). Never throws on bad input and never reads outside `block`.
[[nodiscard]] decode_error decode_block(std::string_view block, std::vector<message>& out,
                                        std::vector<payload_span>& payloads, std::size_t& count,
                                        const decode_limits& limits, bool split = false);

// ---- brokerless sockets ----------------------------------------------------------------------------------

/// Fits `wire` to receivers that take frames of at most `max_message_size` bytes (-1: no limit): a frame a
/// sender builds (a packed message or batch, or a split form's first frame) never exceeds it.
void fit_to_frame_limit(wire_options& wire, std::int64_t max_message_size) noexcept;

/// Checks that `msg` can be framed as `wire` says: limits of the default decode_limits (too_large), and a
/// topic without 0x00 in v2 (invalid).
[[nodiscard]] send_status check_sendable(const message& msg, const wire_options& wire) noexcept;

/// Sends `msg` as `wire` says. With `wait` false the first frame does not wait for room; otherwise it waits
/// as long as the socket's ZMQ_SNDTIMEO allows. A message goes out whole or not at all. On ok the payload is
/// consumed; on any other status `msg` is unchanged.
[[nodiscard]] send_status send_message(zmq::socket_t& socket, message& msg, bool wait,
                                       const wire_options& wire);

/// Sends `msgs` in order, packing runs of messages with the same topic into v2 frames (as many as
/// wire.max_batch_* allow; a large payload goes alone in the split form). In v1 each message is sent on its
/// own. Every message is checked before anything is sent: one that cannot be sent stops the batch there.
/// The sent messages' payloads are consumed; the others are unchanged.
[[nodiscard]] batch_status send_batch(zmq::socket_t& socket, std::span<message> msgs, bool wait,
                                      const wire_options& wire);

/// What one receive produced.
enum class receive_status { ok, would_block, rejected, closed };

/// Receives frame sets of either version and decodes every message in them. Reused buffers avoid
/// allocating per message.
class frame_reader {
 public:
  explicit frame_reader(const decode_limits& limits = {}) : limits_(limits) {}

  /// Receives one frame set (one v1 message, or one v2 frame of one or more messages). On ok, messages()
  /// holds them. On `rejected`, every frame of the bad set has been consumed and error() says why. With
  /// `wait` false returns would_block when nothing is queued.
  [[nodiscard]] receive_status receive(zmq::socket_t& socket, bool wait);
  /// The messages of the last ok receive; the caller may move them out.
  [[nodiscard]] std::span<message> messages() noexcept { return {batch_.data(), count_}; }
  [[nodiscard]] wire_version version() const noexcept { return version_; }
  [[nodiscard]] decode_error error() const noexcept { return error_; }

 private:
  receive_status fail(zmq::socket_t& socket, decode_error e);
  decode_error decode_v1();
  decode_error decode_v2(bool split);

  decode_limits limits_;
  std::vector<zmq::message_t> frames_;
  std::vector<message> batch_;
  std::vector<payload_span> payloads_;
  std::size_t count_ = 0;
  wire_version version_ = wire_version::v2;
  decode_error error_ = decode_error::none;
};

}  // namespace ferry::detail
