#pragma once
/// @file Counters shared by every receiving pattern.

#include <cstdint>

namespace ferry {

/// Counters of a worker pool or subscriber, monotonic since it started.
struct receive_stats {
  std::uint64_t received = 0;    ///< well-formed messages taken from the socket
  std::uint64_t handled = 0;     ///< handler calls that returned normally
  std::uint64_t failed = 0;      ///< handler calls that threw (the exception is logged, the pool goes on)
  std::uint64_t malformed = 0;   ///< malformed frame sets dropped (logged with the reason)
  std::uint64_t duplicates = 0;  ///< messages the dedup window recognised and kept from the handler
  std::uint64_t dropped = 0;     ///< messages already queued locally when the receiver stopped, not handled
  std::uint64_t gaps = 0;      ///< subscribers only: messages missing from publisher sequences (not repaired)
  std::uint64_t repaired = 0;  ///< subscribers with gap repair: missing messages fetched from ferryd and
                               ///< handled in their place (they are not counted in `received`)
  std::uint64_t v1_frames = 0;  ///< well-formed frame sets of wire v1 (one message each)
  std::uint64_t v2_frames = 0;  ///< well-formed frames of wire v2 (one message, or a batch of them)
};

}  // namespace ferry
