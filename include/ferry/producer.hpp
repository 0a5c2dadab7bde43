#pragma once
/// @file Durable producing: messages confirmed by ferryd once they are on disk.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ferry/context.hpp"
#include "ferry/message.hpp"
#include "ferry/status.hpp"

namespace ferry {

/// Why ferryd did not store a message. `code` is stable ("queue_full", "disk_full", "too_large",
/// "malformed", "bad_queue", "io_error"); `text` explains it for people.
struct refusal {
  message_id id;
  std::string code;
  std::string text;
};

struct producer_options {
  /// Messages sent but not yet confirmed or refused. send() waits for room beyond this.
  std::size_t max_in_flight = 10'000;
  /// How long send() waits for room in the window before it returns timed_out: 30 s by default (as long
  /// as confirm_timeout, so a window that stays full means ferryd confirmed nothing in that time). 0 never
  /// waits (would_block); -1 waits as long as it takes.
  std::chrono::milliseconds send_timeout{30'000};
  /// Unconfirmed messages are sent again (same id; ferryd drops the copy) at once when the connection to
  /// ferryd is re-established or ferryd restarted, and after this long in any case.
  std::chrono::milliseconds confirm_timeout{30'000};
  /// How often ferryd is pinged; a new ferryd instance (a restart) triggers an immediate resend.
  std::chrono::milliseconds heartbeat_interval{1000};
  /// Messages per SEND frame set (at most 4096, the protocol's limit).
  std::size_t max_batch = 512;
  /// Largest payload send() accepts (ferryd has its own limit and refuses larger ones with too_large).
  std::uint64_t max_payload = 16ull << 20;
  socket_options socket;
};

struct producer_stats {
  std::uint64_t sent = 0;       ///< accepted by send()
  std::uint64_t confirmed = 0;  ///< durable on ferryd
  std::uint64_t refused = 0;    ///< refused by ferryd (see the refuse handler)
  std::uint64_t resent = 0;     ///< copies sent again after a reconnect, a ferryd restart or a timeout
  std::uint64_t in_flight = 0;  ///< sent, neither confirmed nor refused yet
  /// SENDs libzmq could not take (with socket.immediate, while the connection to ferryd is down); what
  /// they held is sent again once the producer has reconnected.
  std::uint64_t send_retries = 0;
  bool forwarder_up = false;  ///< ferryd answered a heartbeat recently
};

/// Sends messages to ferryd and tracks each until ferryd confirms it is on disk (or refuses it).
///
/// Guarantee: a confirmed message survives a crash of ferryd (with fsync `always`). Unconfirmed messages
/// are resent with the same id until confirmed, including across ferryd restarts; ferryd's dedup window
/// turns the resends into no-ops, so a message is stored once.
///
/// Thread safety: send(), flush() and stats() are safe from any thread. Handlers run on the producer's
/// I/O thread: keep them short and do not call flush() from them.
class producer {
 public:
  using confirm_handler = std::function<void(const message_id&)>;
  using refuse_handler = std::function<void(const refusal&)>;

  /// Connects to ferryd at `forwarder` (e.g. tcp://127.0.0.1:5570) in the background.
  /// Throws ferry::error for a malformed endpoint or bad options.
  producer(context& ctx, const std::string& forwarder, producer_options options = {},
           confirm_handler on_confirm = {}, refuse_handler on_refuse = {});
  /// Stops the I/O thread. Messages still unconfirmed are abandoned: call flush() first.
  ~producer();
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;

  /// Queues `msg` for its queue (the message's topic). Gives it an id if it has none.
  /// Returns ok (the payload is consumed), timed_out (the window stayed full for send_timeout),
  /// would_block (full and send_timeout is 0), too_large, invalid (the topic is not a queue ferryd takes:
  /// 1-200 characters of A-Z a-z 0-9 . _ -, not starting with '.', not a dead-letter queue `*.dlq`), or
  /// closed; on those `msg` is untouched.
  [[nodiscard]] send_status send(message& msg);
  /// Publishes `msg` to the durable topic named by its topic (the same names as queues), stored once and
  /// delivered to every subscription of the topic (see ferry::consumer's topic_subscription). Confirmed,
  /// refused and resent like send(); returns what send() returns.
  [[nodiscard]] send_status publish(message& msg);

  /// Waits until every message sent so far is confirmed or refused. Returns false on timeout.
  bool flush(std::chrono::milliseconds timeout);

  [[nodiscard]] producer_stats stats() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace ferry
