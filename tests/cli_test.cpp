// The `ferry` command-line tool, run as a child process: push/pull and pub/sub end to end, output formats,
// termination (--count, --timeout-ms, SIGTERM), exit statuses of usage and runtime errors.
//
// Handshakes: a command that binds prints "ferry: bound ENDPOINT" once its socket is ready, and the tests
// wait for that line (or for printed output) instead of sleeping.

#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

std::string ferry_program() {
  const std::string path = test::built_program("apps/ferry/ferry");
  INFO("build the ferry_cli target first: " << path);
  REQUIRE(std::filesystem::exists(path));
  return path;
}

std::vector<std::string> ferry_args(std::vector<std::string> args) {
  args.insert(args.begin(), ferry_program());
  return args;
}

// Waits for the child's "ferry: bound ENDPOINT" line and returns ENDPOINT.
std::string bound_endpoint(test::child_process& child) {
  const std::string marker = "ferry: bound ";
  std::string endpoint;
  const bool seen = test::wait_until(
      [&] {
        const std::string& err = child.err();
        const auto at = err.find(marker);
        if (at == std::string::npos) return false;
        const auto end = err.find('\n', at);
        if (end == std::string::npos) return false;  // the line is not complete yet
        endpoint = err.substr(at + marker.size(), end - at - marker.size());
        return true;
      },
      10s);
  INFO("stderr: " << child.err());
  REQUIRE(seen);
  return endpoint;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int exit_code(test::child_process& child, std::chrono::milliseconds timeout = 20s) {
  const auto code = child.wait(timeout);
  INFO("stdout: " << child.out() << "\nstderr: " << child.err());
  REQUIRE(code.has_value());
  return *code;
}

// True when `text` matches `pattern`, in which <hex32> and <hex16> stand for that many lowercase hex digits
// and <digits> for one or more decimal digits; everything else must match exactly. (std::regex trips a
// false -Wmaybe-uninitialized in GCC 12 under sanitizers.)
bool matches(std::string_view text, std::string_view pattern) {
  const auto take = [&](std::size_t n, std::string_view allowed, bool at_least) {
    std::size_t len = 0;
    while (len < text.size() && allowed.find(text[len]) != std::string_view::npos && (at_least || len < n))
      ++len;
    if (at_least ? len < n : len != n) return false;
    text.remove_prefix(len);
    return true;
  };
  while (!pattern.empty()) {
    bool ok = true;
    if (pattern.rfind("<hex32>", 0) == 0) {
      ok = take(32, "0123456789abcdef", false);
      pattern.remove_prefix(7);
    } else if (pattern.rfind("<hex16>", 0) == 0) {
      ok = take(16, "0123456789abcdef", false);
      pattern.remove_prefix(7);
    } else if (pattern.rfind("<digits>", 0) == 0) {
      ok = take(1, "0123456789", true);
      pattern.remove_prefix(8);
    } else {
      ok = !text.empty() && text.front() == pattern.front();
      text.remove_prefix(ok ? 1 : 0);
      pattern.remove_prefix(1);
    }
    if (!ok) return false;
  }
  return text.empty();
}

bool is_one_line(const std::string& text) {
  return !text.empty() && text.back() == '\n' && text.find('\n') == text.size() - 1;
}

}  // namespace

TEST_CASE("cli: ferry push piped into ferry pull over tcp prints each payload as a line", "[cli]") {
  test::child_process pull(ferry_args({"pull", "--bind", "tcp://127.0.0.1:*", "--count", "3"}));
  const std::string endpoint = bound_endpoint(pull);
  REQUIRE(endpoint.rfind("tcp://127.0.0.1:", 0) == 0);

  // The last line has no newline: it is still a message.
  const auto push =
      test::run(ferry_args({"push", "--connect", endpoint, "--topic", "jobs"}), "first\nsecond\nthird");
  INFO("push stderr: " << push.err);
  CHECK(push.code == 0);

  CHECK(exit_code(pull) == 0);
  CHECK(pull.out() == "first\nsecond\nthird\n");
}

TEST_CASE("cli: echo hi | ferry push reaches ferry pull --format json on a fixed port", "[cli]") {
  const std::string endpoint = test::free_tcp_endpoint();
  test::child_process pull(ferry_args({"pull", "--bind", endpoint, "--count", "1", "--format", "json"}));
  CHECK(bound_endpoint(pull) == endpoint);

  const auto push = test::run(ferry_args({"push", "--connect", endpoint, "--topic", "t"}), "hi\n");
  CHECK(push.code == 0);

  CHECK(exit_code(pull) == 0);
  const auto lines = lines_of(pull.out());
  REQUIRE(lines.size() == 1);
  INFO(lines[0]);
  CHECK(matches(
      lines[0],
      R"({"id":"<hex32>","topic":"t","key":"","headers":{},"attempt":0,"timestamp":<digits>,"payload":"hi"})"));
}

TEST_CASE("cli: json output carries key and headers, escapes text and base64-encodes non-UTF-8 payloads",
          "[cli]") {
  test::child_process pull(ferry_args({"pull", "--bind", "tcp://127.0.0.1:*", "--count", "3", "-F", "json"}));
  const std::string endpoint = bound_endpoint(pull);

  const std::string input = std::string("plain\n") + std::string("\xff\xfe\x00\x01\n", 5) +
                            "tab\t\"quoted\" back\\slash \x01 caf\xc3\xa9\n";
  const auto push = test::run(ferry_args({"push", "--connect", endpoint, "--topic", "orders.eu", "--key",
                                          "order-7", "--header", "source=cli", "--header", "q=\"x\"=y"}),
                              input);
  CHECK(push.code == 0);

  CHECK(exit_code(pull) == 0);
  const auto lines = lines_of(pull.out());
  REQUIRE(lines.size() == 3);
  for (const auto& line : lines) {
    CHECK(line.find(R"("topic":"orders.eu","key":"order-7","headers":{"q":"\"x\"=y","source":"cli"})") !=
          std::string::npos);
    CHECK(line.find("\"origin\"") == std::string::npos);  // work-queue messages are not a stream
    CHECK(line.find("\"sequence\"") == std::string::npos);
  }
  CHECK(lines[0].find(R"("payload":"plain"})") != std::string::npos);
  CHECK(lines[1].find(R"("payload":"//4AAQ==","payload_base64":true})") != std::string::npos);
  CHECK(lines[2].find("\"payload\":\"tab\\t\\\"quoted\\\" back\\\\slash \\u0001 caf\xc3\xa9\"}") !=
        std::string::npos);
}

TEST_CASE("cli: ferry pull over ipc receives every line a push sent before exiting", "[cli]") {
  // libzmq 4.3.4 drops the unread tail of an ipc connection when a sender exits while the receiver's
  // bounded queue is full; ferry pull's unbounded queue on ipc must see every line.
  test::temp_dir dir;
  const std::string endpoint = "ipc://" + dir / "jobs.sock";
  constexpr int n = 50'000;
  test::child_process pull(ferry_args({"pull", "--bind", endpoint, "--count", std::to_string(n), "--stats"}));
  CHECK(bound_endpoint(pull) == endpoint);

  std::string input;
  for (int i = 1; i <= n; ++i) input += std::to_string(i) + "\n";
  const auto push = test::run(ferry_args({"push", "--connect", endpoint, "--topic", "jobs"}), input);
  CHECK(push.code == 0);

  CHECK(exit_code(pull, 60s) == 0);
  CHECK(pull.out() == input);
  CHECK(pull.err().find("received 50000, handled 50000, malformed 0, gaps 0, dropped 0") !=
        std::string::npos);
}

TEST_CASE("cli: ferry push packs the lines stdin has ready into v2 frames, and holds none back", "[cli]") {
  SECTION("a burst goes in few frames, in order") {
    test::child_process pull(
        ferry_args({"pull", "--bind", "tcp://127.0.0.1:*", "--count", "5000", "--stats"}));
    const std::string endpoint = bound_endpoint(pull);
    std::string input;
    for (int i = 1; i <= 5000; ++i) input += std::to_string(i) + "\n";
    const auto push = test::run(ferry_args({"push", "--connect", endpoint, "-t", "jobs", "--stats"}), input);
    CHECK(push.code == 0);
    CHECK(exit_code(pull, 60s) == 0);
    CHECK(pull.out() == input);
    // "sent 5000 in N frames": a batch per read of stdin, at most 1024 lines each.
    const auto at = push.err.find("sent 5000 in ");
    REQUIRE(at != std::string::npos);
    const auto frames = std::stoull(push.err.substr(at + 13));
    CHECK(frames >= 5);
    CHECK(frames < 5000);
    CHECK(pull.err().find("frames " + std::to_string(frames) + " (v1 0)") != std::string::npos);
  }
  SECTION("a line that arrives alone is sent at once") {
    test::child_process pull(ferry_args({"pull", "--bind", "tcp://127.0.0.1:*"}));
    const std::string endpoint = bound_endpoint(pull);
    test::child_process push(ferry_args({"push", "--connect", endpoint, "-t", "jobs"}));
    push.write_stdin("first\n");
    CHECK(pull.wait_for_output("first\n"));  // nothing waits for a second line
    push.write_stdin("second\n");
    CHECK(pull.wait_for_output("second\n"));
    push.close_stdin();
    CHECK(exit_code(push) == 0);
  }
}

TEST_CASE("cli: ferry pull --timeout-ms exits when idle, after printing what arrived", "[cli]") {
  SECTION("nothing arrives") {
    const auto start = std::chrono::steady_clock::now();
    const auto pull =
        test::run(ferry_args({"pull", "--bind", "tcp://127.0.0.1:*", "--timeout-ms", "200"}), "", 20s);
    CHECK(pull.code == 0);
    CHECK(pull.out.empty());
    CHECK(std::chrono::steady_clock::now() - start >= 200ms);
  }
  SECTION("two messages arrive, then nothing") {
    test::child_process pull(
        ferry_args({"pull", "--bind", "tcp://127.0.0.1:*", "--timeout-ms", "1500", "--count", "5"}));
    const std::string endpoint = bound_endpoint(pull);
    // --count on push: only the first two of three lines are sent.
    const auto push =
        test::run(ferry_args({"push", "--connect", endpoint, "-t", "jobs", "--count", "2"}), "a\nb\nc\n");
    CHECK(push.code == 0);
    CHECK(exit_code(pull) == 0);
    CHECK(pull.out() == "a\nb\n");
  }
}

TEST_CASE("cli: ferry pull stops gracefully on SIGTERM and reports what it received", "[cli]") {
  test::child_process pull(ferry_args({"pull", "--bind", "tcp://127.0.0.1:*", "--stats"}));
  const std::string endpoint = bound_endpoint(pull);
  const auto push = test::run(ferry_args({"push", "--connect", endpoint, "-t", "jobs"}), "one\ntwo\n");
  CHECK(push.code == 0);
  REQUIRE(pull.wait_for_output("two\n"));  // printed lines reach a pipe within 100 ms

  pull.kill(SIGTERM);
  CHECK(exit_code(pull) == 0);
  CHECK(pull.out() == "one\ntwo\n");
  CHECK(pull.err().find("ferry: received 2, handled 2, malformed 0, gaps 0, dropped 0") != std::string::npos);
}

TEST_CASE("cli: ferry pub --wait-subscribers delivers the first lines to a subscriber that joins later",
          "[cli]") {
  test::child_process pub(
      ferry_args({"pub", "--bind", "tcp://127.0.0.1:*", "--topic", "prices.eu", "--wait-subscribers", "1"}));
  // All input is there before any subscriber: without the wait, the first lines would be lost.
  pub.write_stdin("1.10\n1.11\n1.12\n");
  pub.close_stdin();
  const std::string endpoint = bound_endpoint(pub);

  test::child_process sub(ferry_args(
      {"sub", "--connect", endpoint, "--subscribe", "prices.", "--count", "3", "--format", "json"}));
  CHECK(exit_code(sub) == 0);
  CHECK(exit_code(pub) == 0);

  const auto lines = lines_of(sub.out());
  REQUIRE(lines.size() == 3);
  const std::vector<std::string> payloads{"1.10", "1.11", "1.12"};
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO(lines[i]);
    CHECK(matches(lines[i], R"({"id":"<hex32>","topic":"prices.eu","key":"","headers":{},"attempt":0,)"
                            R"("timestamp":<digits>,"origin":"<hex16>","sequence":)" +
                                std::to_string(i + 1) + R"(,"payload":")" + payloads[i] + R"("})"));
  }
}

TEST_CASE("cli: ferry pub --wait-subscribers fails with status 1 when nobody subscribes in time", "[cli]") {
  const auto pub = test::run(ferry_args({"pub", "--bind", "tcp://127.0.0.1:*", "-t", "x",
                                         "--wait-subscribers", "1", "--timeout-ms", "200"}),
                             "a\n", 20s);
  CHECK(pub.code == 1);
  CHECK(pub.err.find("ferry: only 0 of 1 subscriptions arrived within 200 ms") != std::string::npos);
}

TEST_CASE("cli: usage errors exit with status 2 and one line on stderr", "[cli]") {
  using args = std::vector<std::string>;
  const auto [argv, expected] = GENERATE(table<args, std::string>({
      {{"push", "--connect", "tcp://127.0.0.1:1", "--topic", "t", "--bogus"}, "--bogus"},
      {{"push", "--connect", "tcp://127.0.0.1:1"}, "--topic is required"},
      {{"pub", "--topic", "t"}, "give at least one --bind or --connect"},
      {{"pull"}, "give at least one --bind or --connect"},
      {{"push", "--connect", "tcp://127.0.0.1:1", "--topic", "t", "--header", "novalue"},
       "expected KEY=VALUE"},
      {{"push", "--connect", "tcp://127.0.0.1:1", "--topic", "t", "--header", "=v"}, "expected KEY=VALUE"},
      {{"pull", "--bind", "tcp://127.0.0.1:*", "--count", "abc"}, "--count"},
      {{"pull", "--bind", "tcp://127.0.0.1:*", "--count", "-1"}, "--count"},
      {{"sub", "--bind", "tcp://127.0.0.1:*", "--timeout-ms", "0"}, "--timeout-ms"},
      {{"sub", "--bind", "tcp://127.0.0.1:*", "--format", "xml"}, "--format"},
      {{"frobnicate"}, "frobnicate"},
      {args{}, "give a command"},
  }));
  const auto result = test::run(ferry_args(argv), "", 20s);
  INFO("stderr: " << result.err);
  CHECK(result.code == 2);
  CHECK(is_one_line(result.err));
  CHECK(result.err.find(expected) != std::string::npos);
  CHECK(result.out.empty());
}

TEST_CASE("cli: runtime errors exit with status 1 and say what went wrong", "[cli]") {
  SECTION("binding an address in use") {
    test::child_process first(ferry_args({"pull", "--bind", "tcp://127.0.0.1:*"}));
    const std::string endpoint = bound_endpoint(first);
    const auto second = test::run(ferry_args({"pull", "--bind", endpoint}), "", 20s);
    INFO("stderr: " << second.err);
    CHECK(second.code == 1);
    CHECK(is_one_line(second.err));
    CHECK(second.err.find("cannot bind " + endpoint) != std::string::npos);
    CHECK(second.err.find("address in use") != std::string::npos);
    first.kill(SIGTERM);
    CHECK(exit_code(first) == 0);
  }
  SECTION("an unreadable --file") {
    test::temp_dir dir;
    const auto push = test::run(
        ferry_args({"push", "--connect", "tcp://127.0.0.1:1", "-t", "t", "--file", dir / "missing.txt"}), "",
        20s);
    CHECK(push.code == 1);
    CHECK(push.err.find("cannot open " + dir / "missing.txt") != std::string::npos);
  }
}

TEST_CASE("cli: ferry push to nobody exits 1 saying no worker connected, and never hangs", "[cli]") {
  const std::string nobody = test::free_tcp_endpoint();
  const auto start = std::chrono::steady_clock::now();
  SECTION("one line") {
    const auto push = test::run(
        ferry_args({"push", "--connect", nobody, "-t", "t", "--timeout-ms", "1500", "--stats"}), "hi\n", 20s);
    INFO("stderr: " << push.err);
    CHECK(push.code == 1);
    CHECK(push.err.find("pusher: cannot reach " + nobody + " (retrying)") != std::string::npos);
    CHECK(push.err.find("ferry: message 1 not sent: no worker connected to " + nobody + " within 1500 ms") !=
          std::string::npos);
    CHECK(push.err.find("sent 1") == std::string::npos);
  }
  SECTION("more lines than a queue holds, with the default timeout") {
    std::string input;
    for (int i = 1; i <= 5000; ++i) input += std::to_string(i) + "\n";
    const auto push = test::run(ferry_args({"push", "--connect", nobody, "-t", "t"}), input, 30s);
    INFO("stderr: " << push.err);
    CHECK(push.code == 1);
    CHECK(push.err.find("ferry: message 1 not sent: no worker connected to " + nobody + " within 10000 ms") !=
          std::string::npos);
  }
  SECTION("bound, and no worker connects") {
    const auto push = test::run(
        ferry_args({"push", "--bind", "tcp://127.0.0.1:*", "-t", "t", "--timeout-ms", "300"}), "hi\n", 20s);
    CHECK(push.code == 1);
    CHECK(push.err.find("ferry: message 1 not sent: no worker connected to ") != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start < 15s);  // nothing lingers on messages nobody takes
}

TEST_CASE("cli: ferry push logs the connection it makes and waits for a worker that comes late", "[cli]") {
  const std::string endpoint = test::free_tcp_endpoint();
  test::child_process push(
      ferry_args({"push", "--connect", endpoint, "-t", "jobs", "--timeout-ms", "20000"}));
  push.write_stdin("early\n");
  REQUIRE(push.wait_for_output("cannot reach " + endpoint + " (retrying)", 5s));
  test::child_process pull(ferry_args({"pull", "--bind", endpoint, "--count", "1"}));
  CHECK(pull.wait_for_output("early\n", 20s));
  CHECK(push.wait_for_output("pusher: connected to " + endpoint, 5s));
  push.close_stdin();
  CHECK(exit_code(push) == 0);
  CHECK(exit_code(pull) == 0);
}

TEST_CASE("cli: --help works on every command and --version prints the version", "[cli]") {
  for (const std::string command : {"", "push", "pull", "pub", "sub"}) {
    INFO("command: " << command);
    std::vector<std::string> argv;
    if (!command.empty()) argv.push_back(command);
    argv.push_back("--help");
    const auto help = test::run(ferry_args(argv), "", 20s);
    CHECK(help.code == 0);
    CHECK(help.out.find("Usage: ferry") != std::string::npos);
    CHECK(help.err.empty());
  }
  const auto push_help = test::run(ferry_args({"push", "--help"}), "", 20s);
  CHECK(push_help.out.find("at most once") != std::string::npos);

  const auto version = test::run(ferry_args({"--version"}), "", 20s);
  CHECK(version.code == 0);
  CHECK(matches(version.out, "ferry <digits>.<digits>.<digits>\n"));
}
