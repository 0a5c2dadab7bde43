#pragma once
// The receive side shared by worker_pool and subscriber: one thread owns the socket, decodes, filters
// duplicates and either calls the handler itself (one handler thread) or hands messages to N handler
// threads through a small bounded queue, so an idle handler takes the next message (no blind round-robin).

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "detail/counter.hpp"
#include "detail/log.hpp"
#include "ferry/context.hpp"
#include "ferry/dedup_window.hpp"
#include "ferry/envelope.hpp"
#include "ferry/message.hpp"
#include "ferry/receive_stats.hpp"

namespace ferry::detail {

/// Called in the receiving thread for each well-formed message before dedup and dispatch; returns how many
/// messages it found missing before this one (sequence gaps), 0 when none.
using message_observer = std::function<std::uint64_t(const message&)>;
/// Called in the receiving thread when the observer found `missing` messages missing before `msg`: appends
/// to `found`, in order, those it could get from elsewhere (they are handled before `msg`) and returns how
/// many stay missing.
using gap_repairer =
    std::function<std::uint64_t(const message& msg, std::uint64_t missing, std::vector<message>& found)>;

struct receiver_config {
  std::string name;  // for logs: "worker_pool", "subscriber"
  unsigned threads = 1;
  std::optional<dedup_options> dedup;
  decode_limits limits;
  message_observer observe;
  gap_repairer repair;  // optional, with `observe`
};

/// Thread safety: stop() and stats() may be called from any thread; the handler runs on receiver threads.
class receiver {
  struct handler_counters {
    counter handled, failed;
  };

 public:
  receiver(zmq::socket_t socket, receiver_config config, message_handler handler);
  ~receiver();
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  /// Stops taking messages, lets running handlers and already dispatched messages finish, counts what was
  /// left queued in the socket as dropped, joins every thread. Idempotent.
  void stop();
  [[nodiscard]] receive_stats stats() const noexcept;

 private:
  void receive_loop();
  void handler_loop(std::size_t index);
  void run_handler(message& msg, counter& handled, counter& failed);
  /// Dedup, then the handler (one thread) or the hand-off queue. False when stopping kept `msg` from it.
  bool dispatch(message& msg, handler_counters& own);

  receiver_config config_;
  message_handler handler_;
  zmq::socket_t socket_;
  std::atomic<bool> stopping_{false};
  std::mutex stop_mutex_;
  bool stopped_ = false;

  std::optional<dedup_window> dedup_;
  counter received_, malformed_, duplicates_, dropped_, gaps_, repaired_, v1_frames_, v2_frames_;
  std::vector<std::unique_ptr<handler_counters>> per_thread_;
  log_limiter reject_log_{5};
  log_limiter failure_log_{5};

  // Hand-off to handler threads (threads > 1 only).
  std::mutex queue_mutex_;
  std::condition_variable queue_not_empty_;
  std::condition_variable queue_not_full_;
  std::deque<message> queue_;
  std::size_t queue_capacity_ = 0;
  bool queue_closed_ = false;

  std::vector<std::thread> handler_threads_;
  std::thread receive_thread_;
};

}  // namespace ferry::detail
