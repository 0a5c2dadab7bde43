#pragma once
/// @file Outcomes of hot-path calls. "Would block", "timed out" and "closed" are normal results, not errors.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ferry {

/// The result of a send. On anything but `ok`, the message stays with the caller, unchanged.
enum class send_status : std::uint8_t {
  ok,           ///< handed to ZeroMQ (brokerless) or queued for the forwarder
  would_block,  ///< the high-water mark is reached and the send was not allowed to wait
  timed_out,    ///< no room appeared within the send timeout
  too_large,    ///< the message is larger than the configured maximum size
  closed,       ///< the sender or its context is shutting down
  invalid,      ///< the message cannot be framed (a topic holding 0x00 in wire v2) or, for a producer, its
                ///< topic is not a queue name ferryd accepts
};

[[nodiscard]] constexpr std::string_view to_string(send_status s) noexcept {
  switch (s) {
    case send_status::ok:
      return "ok";
    case send_status::would_block:
      return "would_block";
    case send_status::timed_out:
      return "timed_out";
    case send_status::too_large:
      return "too_large";
    case send_status::closed:
      return "closed";
    case send_status::invalid:
      return "invalid";
  }
  return "unknown";
}

/// The result of sending a batch: the first `sent` messages went out; `status` says why the rest did not
/// (ok when all did). The messages not sent stay with the caller, unchanged.
struct batch_status {
  send_status status = send_status::ok;
  std::size_t sent = 0;
  std::size_t frames = 0;  ///< ZeroMQ frames (v2) or frame sets (v1) they took
};

}  // namespace ferry
