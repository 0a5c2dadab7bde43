#pragma once
// Wakes an I/O thread sleeping in zmq_poll from other threads, without a system call per event when the
// I/O thread is busy anyway: the sleeper announces itself before polling and the waker writes the
// eventfd only then.

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace ferry::detail {

class wakeup {
 public:
  wakeup() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~wakeup() {
    if (fd_ >= 0) ::close(fd_);
  }
  wakeup(const wakeup&) = delete;
  wakeup& operator=(const wakeup&) = delete;

  [[nodiscard]] int fd() const noexcept { return fd_; }

  /// I/O thread: call before re-checking for work and polling. If the re-check finds work, call
  /// awake() and skip the poll.
  void about_to_sleep() noexcept { sleeping_.store(true, std::memory_order_seq_cst); }
  void awake() noexcept { sleeping_.store(false, std::memory_order_seq_cst); }
  /// I/O thread: after poll returned with fd() readable.
  void drain() noexcept {
    std::uint64_t n;
    (void)!::read(fd_, &n, sizeof n);
    sleeping_.store(false, std::memory_order_seq_cst);
  }
  /// Any thread, after publishing work.
  void notify() noexcept {
    if (sleeping_.exchange(false, std::memory_order_seq_cst)) {
      const std::uint64_t one = 1;
      (void)!::write(fd_, &one, sizeof one);
    }
  }
  /// Any thread: wake unconditionally (stop requests).
  void force() noexcept {
    const std::uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }

 private:
  int fd_;
  std::atomic<bool> sleeping_{false};
};

}  // namespace ferry::detail
