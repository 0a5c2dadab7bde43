#include "support/cli_durable_support.hpp"

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>
#include <utility>

using namespace std::chrono_literals;

namespace ferry::test::cli {

namespace {

std::string program(const std::string& relative) {
  const std::string path = test::built_program(relative);
  INFO("build it first: " << path);
  REQUIRE(std::filesystem::exists(path));
  return path;
}

}  // namespace

std::vector<std::string> ferry_args(std::vector<std::string> args) {
  args.insert(args.begin(), program("apps/ferry/ferry"));
  return args;
}

ferryd_child::ferryd_child(std::vector<std::string> flags) : endpoint_(test::free_tcp_endpoint()) {
  std::vector<std::string> argv{program("apps/ferryd/ferryd"), "--data-dir", dir_.path().string(), "--bind",
                                endpoint_};
  argv.insert(argv.end(), flags.begin(), flags.end());
  start(argv);
}

ferryd_child::ferryd_child(const std::vector<std::string>& argv, std::string endpoint)
    : endpoint_(std::move(endpoint)) {
  std::vector<std::string> full{program("apps/ferryd/ferryd")};
  full.insert(full.end(), argv.begin(), argv.end());
  start(full);
}

ferryd_child::~ferryd_child() {
  process_->kill(SIGTERM);
  (void)process_->wait(10s);
}

void ferryd_child::start(const std::vector<std::string>& argv) {
  process_ = std::make_unique<test::child_process>(argv);
  const bool ready = process_->wait_for_output("[ferry] ready", 20s);
  INFO("ferryd: " << process_->err());
  REQUIRE(ready);
}

test::run_result ferry_run(const std::vector<std::string>& args, const std::string& input,
                           std::chrono::milliseconds timeout) {
  return test::run(ferry_args(args), input, timeout);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string numbered_lines(int first, int last, const std::string& prefix) {
  std::string text;
  for (int i = first; i <= last; ++i) text += prefix + std::to_string(i) + "\n";
  return text;
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

bool is_one_line(const std::string& text) {
  return !text.empty() && text.back() == '\n' && text.find('\n') == text.size() - 1;
}

bool matches(std::string_view text, std::string_view pattern) {
  while (!pattern.empty()) {
    if (pattern.substr(0, 7) == "<hex32>") {
      if (text.size() < 32 ||
          text.substr(0, 32).find_first_not_of("0123456789abcdef") != std::string_view::npos)
        return false;
      text.remove_prefix(32);
      pattern.remove_prefix(7);
    } else if (pattern.substr(0, 8) == "<digits>") {
      const std::size_t n = std::min(text.find_first_not_of("0123456789"), text.size());
      if (n == 0) return false;
      text.remove_prefix(n);
      pattern.remove_prefix(8);
    } else {
      if (text.empty() || text.front() != pattern.front()) return false;
      text.remove_prefix(1);
      pattern.remove_prefix(1);
    }
  }
  return text.empty();
}

long long json_counter(const std::string& json, const std::string& queue, const std::string& name) {
  const auto at = json.find("\"" + queue + "\":{");
  if (at == std::string::npos) return -1;
  const auto end = json.find('}', at);
  const auto field = json.find("\"" + name + "\":", at);
  if (field == std::string::npos || field > end) return -1;
  return std::stoll(json.substr(field + name.size() + 3));
}

test::run_result stats_json(const ferryd_child& d) {
  auto r = ferry_run({"stats", "--forwarder", d.endpoint(), "--format", "json"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  return r;
}

}  // namespace ferry::test::cli
