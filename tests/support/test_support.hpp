#pragma once
// Helpers every test may use: temp dirs, free ports, waiting on conditions, child processes.
// Every wait is bounded in time; every child is killed and reaped by its destructor.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ferry::test {

/// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class temp_dir {
 public:
  explicit temp_dir(const std::string& prefix = "ferry-test");
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
int free_port();
/// "tcp://127.0.0.1:<free port>".
std::string free_tcp_endpoint();

/// Polls `condition` every few milliseconds until it is true or `timeout` passes. Returns its last value.
bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// Path of a program built by this project (e.g. "apps/ferry/ferry", "apps/ferryd/ferryd").
std::string built_program(const std::string& relative);

/// A child process with pipes to its stdin, stdout and stderr.
class child_process {
 public:
  /// Starts `argv[0]` with the remaining arguments. `env` entries are added to the environment.
  explicit child_process(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~child_process();  // SIGKILL if still running, then reap
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// Writes to the child's stdin.
  void write_stdin(const std::string& data);
  /// Closes the child's stdin (end of input).
  void close_stdin();
  /// Sends `signal` to the child.
  void kill(int signal);
  /// Waits for exit; returns the exit code (128 + signal when killed), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  /// True while the child has not exited.
  bool running();
  /// Everything read from stdout / stderr so far (reads what is available without blocking).
  const std::string& out();
  const std::string& err();
  /// Waits until `text` appears on stdout or stderr. Returns false on timeout or exit.
  bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  void pump();
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1, stderr_ = -1;
  std::string out_, err_;
  std::optional<int> status_;
};

/// Runs a program to completion with `input` on stdin. Returns {exit code, stdout, stderr}.
struct run_result {
  int code = -1;
  std::string out, err;
};
run_result run(std::vector<std::string> argv, const std::string& input = "",
               std::chrono::milliseconds timeout = std::chrono::seconds(60),
               std::map<std::string, std::string> env = {});

}  // namespace ferry::test
