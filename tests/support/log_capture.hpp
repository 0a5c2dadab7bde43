#pragma once
// What ferry logged while a test ran: a sink on ferry's logger for the lifetime of a log_capture, keeping
// the last lines in memory.
//
// Create it before the objects whose lines it should see and destroy it after them: spdlog's list of sinks
// must not change while another thread logs. Thread safety: text() and count() from any thread.

#include <cstddef>
#include <memory>
#include <string>

namespace ferry::test {

class log_capture {
 public:
  log_capture();
  ~log_capture();
  log_capture(const log_capture&) = delete;
  log_capture& operator=(const log_capture&) = delete;

  /// The lines logged so far (the last 10,000), each ending in '\n'.
  [[nodiscard]] std::string text() const;
  /// How many of those lines contain `part`.
  [[nodiscard]] std::size_t count(const std::string& part) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace ferry::test
