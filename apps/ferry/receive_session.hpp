#pragma once
// The printing and stopping logic of a receiving command (pull, sub, consume): prints each message on
// stdout and decides when the command ends (--count reached, idle for --timeout-ms, SIGINT/SIGTERM, or
// stdout gone).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "ferry/message.hpp"
#include "output.hpp"

namespace ferry::cli {

struct receive_session_options {
  output_format format = output_format::text;
  /// Stop after printing this many messages; 0 for no limit.
  std::uint64_t count = 0;
  /// Stop when no message arrived for this long.
  std::optional<std::chrono::milliseconds> idle_timeout;
  /// Flush stdout after every line. Otherwise a line reaches a pipe within flush_interval.
  bool unbuffered = false;
  /// Keep printing what arrives after wait() returned for a signal or the idle timeout, until the receiver
  /// is stopped. consume needs it: every message it was handed must be printed or handed back, and a
  /// message skipped here could only be handed back with an attempt counted.
  bool print_after_stop = false;
};

/// Why wait() returned.
enum class stop_reason { count_reached, idle, signal, output_failed };

/// Prints messages for a receiving command and tells its main thread when to stop.
///
/// Signals: the constructor blocks SIGINT and SIGTERM in the calling thread, and wait() takes them from a
/// signalfd. Threads inherit the mask, so construct the session before the ferry::context and any receiver,
/// or a signal may land on a library thread and kill the process without a summary.
///
/// Thread safety: on_message() from one receiving thread at a time; wait(), finish() and the counters from
/// the main thread.
class receive_session {
 public:
  /// How long a line may sit in the stdout buffer when stdout is a pipe or a file.
  static constexpr std::chrono::milliseconds flush_interval{100};

  explicit receive_session(receive_session_options options);
  ~receive_session();
  receive_session(const receive_session&) = delete;
  receive_session& operator=(const receive_session&) = delete;

  /// The handler: prints `msg`, or skips it when --count is already reached or the session is over.
  /// Returns true when the line was written (and flushed, when unbuffered). Never throws.
  bool on_message(const ferry::message& msg) noexcept;

  /// Blocks until a stop condition holds, flushing stdout every flush_interval meanwhile.
  [[nodiscard]] stop_reason wait();

  /// Flushes stdout. Throws ferry::error when writing to stdout failed at any point.
  void finish();

  /// Messages printed.
  [[nodiscard]] std::uint64_t printed() const noexcept { return printed_.load(std::memory_order_relaxed); }
  /// Messages received after --count was reached, not printed.
  [[nodiscard]] std::uint64_t skipped() const noexcept { return skipped_.load(std::memory_order_relaxed); }

 private:
  void wake() noexcept;

  receive_session_options options_;
  int signal_fd_ = -1;
  int wake_fd_ = -1;
  std::string line_;  // reused by the one receiving thread
  std::atomic<std::uint64_t> printed_{0};
  std::atomic<std::uint64_t> skipped_{0};
  std::atomic<std::int64_t> last_message_ns_;  // steady clock
  std::atomic<bool> done_{false};
  std::atomic<int> write_errno_{0};
};

}  // namespace ferry::cli
