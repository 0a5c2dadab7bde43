#pragma once
/// @file The receiving side of a brokerless work queue: N handler threads over one ZeroMQ PULL socket.

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

struct worker_pool_options {
  /// Handler threads. With more than one, an idle thread takes the next message.
  unsigned threads = 1;
  socket_options socket;
  decode_limits limits;
  /// When set, a message whose id was seen within the window reaches the handler once.
  std::optional<dedup_options> dedup;
};

/// Receives work from pushers and runs `handler` on it.
///
/// Guarantee: at most once. Messages queued in a pool that dies are lost; messages queued in a pool that
/// is stopped are counted as `dropped`. Use ferryd when that matters.
///
/// Thread safety: stop() and stats() are safe from any thread except a handler thread of this pool.
class worker_pool {
 public:
  /// Binds/connects as `where` says and starts the threads. Throws ferry::error for a bad or busy endpoint.
  worker_pool(context& ctx, const endpoints& where, message_handler handler,
              worker_pool_options options = {});
  /// Stops gracefully (see stop()).
  ~worker_pool();
  worker_pool(worker_pool&&) noexcept;
  worker_pool& operator=(worker_pool&&) noexcept;

  /// Graceful stop: takes no new messages, lets running handlers finish, counts what was queued but not
  /// handled as `dropped`, and returns when every thread has ended. Idempotent.
  void stop();

  [[nodiscard]] receive_stats stats() const noexcept;
  /// Endpoints bound, with `*` ports resolved.
  [[nodiscard]] const std::vector<std::string>& bound() const noexcept { return bound_; }

 private:
  std::vector<std::string> bound_;
  std::unique_ptr<detail::receiver> receiver_;
};

}  // namespace ferry
