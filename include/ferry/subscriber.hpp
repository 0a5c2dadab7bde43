#pragma once
/// @file The receiving side of brokerless topics (ZeroMQ SUB) with a handler thread.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/context.hpp"
#include "ferry/dedup_window.hpp"
#include "ferry/envelope.hpp"
#include "ferry/message.hpp"
#include "ferry/receive_stats.hpp"

namespace ferry {

namespace detail {
class receiver;
}

/// Gap repair from ferryd: for a subscriber of ferryd's live feed (`ferryd --feed`), which carries every
/// message stored in a durable topic with the topic's sequence number.
struct gap_repair {
  /// ferryd's endpoint (one of its --bind), where the missing messages are FETCHed.
  std::string forwarder;
  /// How long one gap may take to fetch; what is still missing then is counted in stats().gaps.
  std::chrono::milliseconds timeout{2000};
};

struct subscriber_options {
  socket_options socket;
  decode_limits limits;
  /// When set, a message whose id was seen within the window reaches the handler once.
  std::optional<dedup_options> dedup;
  /// When set, a gap in a stored topic's sequence (seen on ferryd's live feed) is filled from ferryd before
  /// the next message is handled: delivery stays in order and complete. Gaps of other publishers are only
  /// counted.
  std::optional<gap_repair> repair;
};

/// Receives every message whose topic starts with one of `prefixes` ("" matches all) and runs `handler` on
/// it, on one handler thread.
///
/// Gaps in a publisher's per-topic sequence (high-water-mark drops, reconnects) are counted in
/// stats().gaps. Guarantee: at most once; with options.repair on ferryd's live feed, every message stored
/// after the first one seen, in order (as long as ferryd is reachable and still retains the missing ones).
///
/// Thread safety: stop() and stats() are safe from any thread except the handler thread.
class subscriber {
 public:
  /// Subscribes, binds/connects as `where` says and starts the handler thread.
  /// Throws ferry::error for a bad or busy endpoint.
  subscriber(context& ctx, const endpoints& where, const std::vector<std::string>& prefixes,
             message_handler handler, subscriber_options options = {});
  ~subscriber();
  subscriber(subscriber&&) noexcept;
  subscriber& operator=(subscriber&&) noexcept;

  /// Stops taking messages, lets the running handler finish and joins the thread. Idempotent.
  void stop();
  [[nodiscard]] receive_stats stats() const noexcept;
  [[nodiscard]] const std::vector<std::string>& bound() const noexcept { return bound_; }

 private:
  std::vector<std::string> bound_;
  std::unique_ptr<detail::receiver> receiver_;
};

}  // namespace ferry
