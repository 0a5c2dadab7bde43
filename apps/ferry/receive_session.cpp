#include "receive_session.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ferry/error.hpp"

namespace ferry::cli {
namespace {

std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

receive_session::receive_session(receive_session_options options)
    : options_(options), last_message_ns_(steady_ns()) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0)
    throw ferry::error("cannot block SIGINT/SIGTERM");
  signal_fd_ = ::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (signal_fd_ < 0 || wake_fd_ < 0) {
    const int err = errno;
    if (signal_fd_ >= 0) ::close(signal_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    throw ferry::error(std::string("cannot set up signal handling: ") + std::strerror(err));
  }
}

receive_session::~receive_session() {
  ::close(signal_fd_);
  ::close(wake_fd_);
}

void receive_session::wake() noexcept {
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

bool receive_session::on_message(const ferry::message& msg) noexcept {
  const std::uint64_t printed = printed_.load(std::memory_order_relaxed);
  if (done_.load(std::memory_order_relaxed) || (options_.count != 0 && printed >= options_.count)) {
    skipped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  try {
    line_.clear();
    append_message(line_, msg, options_.format);
  } catch (const std::bad_alloc&) {
    write_errno_.store(ENOMEM);
    done_.store(true);
    wake();
    return false;
  }
  const bool last = options_.count != 0 && printed + 1 == options_.count;
  // A reader of a --count run expects its lines the moment the process ends, and a test waits on them.
  if (std::fwrite(line_.data(), 1, line_.size(), stdout) != line_.size() ||
      ((options_.unbuffered || last) && std::fflush(stdout) != 0)) {
    write_errno_.store(errno != 0 ? errno : EIO);
    done_.store(true);
    wake();
    return false;
  }
  last_message_ns_.store(steady_ns(), std::memory_order_relaxed);
  printed_.store(printed + 1, std::memory_order_relaxed);
  if (last) {
    done_.store(true);
    wake();
  }
  return true;
}

stop_reason receive_session::wait() {
  std::uint64_t flushed = printed();
  for (;;) {
    if (write_errno_.load() != 0) return stop_reason::output_failed;
    if (done_.load()) return stop_reason::count_reached;

    auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(flush_interval);
    if (options_.idle_timeout) {
      const auto idle_left =
          std::chrono::nanoseconds(last_message_ns_.load(std::memory_order_relaxed) - steady_ns()) +
          *options_.idle_timeout;
      if (idle_left.count() <= 0) {
        // Lines after this point are skipped, not printed after the summary.
        if (!options_.print_after_stop) done_.store(true);
        return stop_reason::idle;
      }
      timeout = std::min(timeout, idle_left);
    }
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(timeout).count());
    const int ready = ::poll(fds, 2, ms);
    if (ready < 0 && errno != EINTR) throw ferry::error(std::string("poll failed: ") + std::strerror(errno));
    if (ready > 0 && (fds[0].revents & POLLIN) != 0) {
      signalfd_siginfo info{};
      (void)!::read(signal_fd_, &info, sizeof info);
      if (!options_.print_after_stop) done_.store(true);
      return stop_reason::signal;
    }
    if (ready > 0 && (fds[1].revents & POLLIN) != 0) {
      std::uint64_t value = 0;
      (void)!::read(wake_fd_, &value, sizeof value);
    }
    // A pipe reader (`ferry sub | jq`) sees lines within flush_interval without a write per message.
    const std::uint64_t now_printed = printed();
    if (now_printed != flushed) {
      if (std::fflush(stdout) != 0) {
        write_errno_.store(errno != 0 ? errno : EIO);
        done_.store(true);
        return stop_reason::output_failed;
      }
      flushed = now_printed;
    }
  }
}

void receive_session::finish() {
  const int err = write_errno_.load();
  if (err == 0 && std::fflush(stdout) == 0) return;
  throw ferry::error(std::string("cannot write to standard output: ") +
                     std::strerror(err != 0 ? err : errno));
}

}  // namespace ferry::cli
