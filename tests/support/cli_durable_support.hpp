#pragma once
// What the tests of the `ferry` tool's durable commands (tests/cli_durable_*_test.cpp) share: a ferryd
// child process, running `ferry`, and reading what it printed (lines, patterns, `ferry stats` counters).
//
// Handshakes: ferryd prints "[ferry] ready" once it listens; ferryd_child waits for that line.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "support/test_support.hpp"

namespace ferry::test::cli {

/// `args` after the path of the built `ferry` program (the test fails if it was not built).
std::vector<std::string> ferry_args(std::vector<std::string> args);

/// A ferryd child on 127.0.0.1 with its own data directory; stopped with SIGTERM at the end.
class ferryd_child {
 public:
  explicit ferryd_child(std::vector<std::string> flags = {});
  /// ferryd started with exactly `argv` (after the program), listening on `endpoint`.
  ferryd_child(const std::vector<std::string>& argv, std::string endpoint);
  ~ferryd_child();
  ferryd_child(const ferryd_child&) = delete;
  ferryd_child& operator=(const ferryd_child&) = delete;

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept { return dir_.path(); }
  /// ferryd's log so far (reading it also keeps its pipe from filling).
  const std::string& log() { return process_->err(); }
  test::child_process& process() { return *process_; }

 private:
  void start(const std::vector<std::string>& argv);

  test::temp_dir dir_{"ferry-cli-durable"};
  std::string endpoint_;
  std::unique_ptr<test::child_process> process_;
};

/// Runs `ferry ARGS` to completion; the result says what happened when a check fails.
test::run_result ferry_run(const std::vector<std::string>& args, const std::string& input = "",
                           std::chrono::milliseconds timeout = std::chrono::seconds(60));

std::vector<std::string> lines_of(const std::string& text);
/// "PREFIX<first>\n" to "PREFIX<last>\n".
std::string numbered_lines(int first, int last, const std::string& prefix = "");
bool contains(std::string_view text, std::string_view part);
bool is_one_line(const std::string& text);
/// `text` against `pattern`, where <hex32> is 32 lowercase hex digits and <digits> one or more digits.
bool matches(std::string_view text, std::string_view pattern);

/// A counter of one queue in `ferry stats --format json` output; -1 when absent.
long long json_counter(const std::string& json, const std::string& queue, const std::string& name);
/// `ferry stats --format json` against `d`; the test fails unless it exits 0.
test::run_result stats_json(const ferryd_child& d);

}  // namespace ferry::test::cli
