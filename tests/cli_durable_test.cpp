// The durable commands of the `ferry` tool against a real ferryd child process, send and consume: what
// arrives, exit statuses, --count leaving the rest in the queue, SIGTERM, heartbeats, an unreachable
// ferryd, and the usage errors and --help of every durable command. dlq and stats are in
// cli_durable_admin_test.cpp, ferryd's own flags and config file in cli_durable_ferryd_test.cpp; what they
// share is in support/cli_durable_support.hpp.
//
// Handshakes: ferryd prints "[ferry] ready" once it listens; a consumer's output is waited for, never slept
// on.

#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/cli_durable_support.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace ferry::test::cli;
using namespace std::chrono_literals;

TEST_CASE("cli durable: 100 lines sent with ferry send all come out of ferry consume", "[cli][durable]") {
  ferryd_child ferryd;
  const std::string& ep = ferryd.endpoint();

  SECTION("text") {
    const std::string input = numbered_lines(1, 100, "line ");
    const auto send = ferry_run({"send", "--forwarder", ep, "--queue", "jobs", "--stats"}, input);
    INFO("send stderr: " << send.err);
    CHECK(send.code == 0);
    CHECK(contains(send.err, "ferry: sent 100, confirmed 100, refused 0, resent 0"));  // nothing sent twice

    const auto consume = ferry_run({"consume", "--forwarder", ep, "--queue", "jobs", "--count", "100"});
    INFO("consume stderr: " << consume.err);
    CHECK(consume.code == 0);
    CHECK(consume.out == input);
    CHECK(json_counter(stats_json(ferryd).out, "jobs", "depth") == 0);
  }
  SECTION("json, with a key and headers") {
    const auto send = ferry_run({"send", "--forwarder", ep, "--queue", "orders", "--key", "order-7", "-H",
                                 "source=cli", "--header", "note=a \"b\""},
                                numbered_lines(1, 100));
    INFO("send stderr: " << send.err);
    CHECK(send.code == 0);

    const auto consume =
        ferry_run({"consume", "--forwarder", ep, "--queue", "orders", "--count", "100", "--format", "json"});
    INFO("consume stderr: " << consume.err);
    CHECK(consume.code == 0);
    const auto lines = lines_of(consume.out);
    REQUIRE(lines.size() == 100);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      INFO(lines[i]);
      CHECK(
          matches(lines[i], R"({"id":"<hex32>","topic":"orders","key":"order-7",)"
                            R"("headers":{"note":"a \"b\"","source":"cli"},"attempt":1,"timestamp":<digits>,)"
                            R"("payload":")" +
                                std::to_string(i + 1) + "\"}"));
    }
  }
}

TEST_CASE("cli durable: ferry send --id-file names the id of every confirmed line, in line order",
          "[cli][durable]") {
  ferryd_child ferryd;
  test::temp_dir dir;
  const auto send =
      ferry_run({"send", "--forwarder", ferryd.endpoint(), "--queue", "jobs", "--id-file", dir / "ids.txt"},
                "a\nb\nc\n");
  INFO("send stderr: " << send.err);
  REQUIRE(send.code == 0);
  std::ifstream file(dir / "ids.txt");
  std::stringstream ids;
  ids << file.rdbuf();
  const auto id_lines = lines_of(ids.str());
  REQUIRE(id_lines.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(matches(id_lines[i], std::to_string(i + 1) + " <hex32>"));

  const auto consume = ferry_run(
      {"consume", "--forwarder", ferryd.endpoint(), "--queue", "jobs", "--count", "3", "-F", "json"});
  const auto messages = lines_of(consume.out);
  REQUIRE(messages.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(messages[i].substr(7, 32) == id_lines[i].substr(2));
}

TEST_CASE("cli durable: ferry send exits 1 for refused lines and still sends the others", "[cli][durable]") {
  ferryd_child ferryd({"--max-message-bytes", "100"});
  test::temp_dir dir;
  const std::string input = "first\n" + std::string(200, 'x') + "\nthird\n";
  const auto send = ferry_run(
      {"send", "--forwarder", ferryd.endpoint(), "--queue", "jobs", "--id-file", dir / "ids.txt", "--stats"},
      input);
  INFO("send stderr: " << send.err);
  CHECK(send.code == 1);
  CHECK(contains(send.err, "ferry: line 2 (id "));
  CHECK(contains(send.err, ") refused: too_large: payload of 200 bytes is over the limit of 100 bytes\n"));
  CHECK(contains(send.err, "ferry: sent 3, confirmed 2, refused 1, resent "));
  CHECK(contains(send.err, "ferry: 1 of 3 lines refused\n"));

  std::ifstream file(dir / "ids.txt");
  std::stringstream ids;
  ids << file.rdbuf();
  const auto id_lines = lines_of(ids.str());
  REQUIRE(id_lines.size() == 2);
  CHECK(matches(id_lines[0], "1 <hex32>"));
  CHECK(matches(id_lines[1], "3 <hex32>"));

  const auto consume =
      ferry_run({"consume", "--forwarder", ferryd.endpoint(), "--queue", "jobs", "--count", "2"});
  CHECK(consume.out == "first\nthird\n");
}

TEST_CASE("cli durable: ferry send exits 1 after --timeout-ms when ferryd is not running", "[cli][durable]") {
  const std::string nobody = test::free_tcp_endpoint();
  const auto start = std::chrono::steady_clock::now();
  const auto send =
      ferry_run({"send", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "500"}, "a\nb\n", 20s);
  const auto took = std::chrono::steady_clock::now() - start;
  INFO("send stderr: " << send.err);
  CHECK(send.code == 1);
  CHECK(took >= 500ms);
  CHECK(took < 15s);
  CHECK(contains(send.err, "ferry: 2 of 2 lines not confirmed within 500 ms (ferryd at " + nobody +
                               " did not answer), the first is line 1"));

  // Nothing to send needs no ferryd.
  const auto empty =
      ferry_run({"send", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "500"}, "", 20s);
  CHECK(empty.code == 0);
}

TEST_CASE("cli durable: ferry consume --count prints exactly N and leaves the rest in the queue",
          "[cli][durable]") {
  ferryd_child ferryd;
  const std::string& ep = ferryd.endpoint();
  REQUIRE(ferry_run({"send", "--forwarder", ep, "--queue", "jobs"}, numbered_lines(1, 10)).code == 0);

  const auto first = ferry_run({"consume", "--forwarder", ep, "--queue", "jobs", "--count", "3", "-F", "json",
                                "--prefetch", "64", "--stats"});
  INFO("first stderr: " << first.err);
  CHECK(first.code == 0);
  const auto lines = lines_of(first.out);
  REQUIRE(lines.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    INFO(lines[i]);
    // attempt 1 everywhere: nothing was nacked, and what was handed back did not count an attempt.
    CHECK(matches(lines[i], R"({"id":"<hex32>","topic":"jobs","key":"","headers":{},"attempt":1,)"
                            R"("timestamp":<digits>,"payload":")" +
                                std::to_string(i + 1) + "\"}"));
  }
  CHECK(contains(first.err, ", printed 3, duplicates 0, failed 0, handed back "));
  const std::string after_first = stats_json(ferryd).out;
  CHECK(json_counter(after_first, "jobs", "depth") == 7);
  CHECK(json_counter(after_first, "jobs", "acked") == 3);
  CHECK(json_counter(after_first, "jobs", "nacked") == 0);
  CHECK(json_counter(after_first, "jobs", "consumers") == 0);

  const auto rest =
      ferry_run({"consume", "--forwarder", ep, "--queue", "jobs", "--count", "7", "-F", "json"});
  const auto rest_lines = lines_of(rest.out);
  REQUIRE(rest_lines.size() == 7);
  for (std::size_t i = 0; i < 7; ++i) {
    INFO(rest_lines[i]);
    CHECK(contains(rest_lines[i], "\"attempt\":1,"));
    CHECK(contains(rest_lines[i], "\"payload\":\"" + std::to_string(i + 4) + "\"}"));
  }

  const auto empty = ferry_run({"consume", "--forwarder", ep, "--queue", "jobs", "--timeout-ms", "300"});
  CHECK(empty.code == 0);
  CHECK(empty.out.empty());
  CHECK(json_counter(stats_json(ferryd).out, "jobs", "depth") == 0);
}

TEST_CASE("cli durable: ferry consume stops gracefully on SIGTERM", "[cli][durable]") {
  ferryd_child ferryd;
  const std::string& ep = ferryd.endpoint();
  test::child_process consume(ferry_args({"consume", "--forwarder", ep, "--queue", "jobs", "--stats"}));
  REQUIRE(ferry_run({"send", "--forwarder", ep, "--queue", "jobs"}, "one\ntwo\n").code == 0);
  REQUIRE(consume.wait_for_output("two\n", 20s));  // each line is flushed before it is acknowledged

  consume.kill(SIGTERM);
  const auto code = consume.wait(20s);
  INFO("stderr: " << consume.err());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(consume.out() == "one\ntwo\n");
  CHECK(contains(consume.err(), "ferry: received 2, printed 2, duplicates 0, failed 0, handed back 0"));
  const std::string stats = stats_json(ferryd).out;
  CHECK(json_counter(stats, "jobs", "acked") == 2);
  CHECK(json_counter(stats, "jobs", "consumers") == 0);
}

TEST_CASE("cli durable: an idle ferry consume follows ferryd's shorter heartbeat and is never declared dead",
          "[cli][durable]") {
  ferryd_child ferryd({"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "500"});
  // Idle for six heartbeat timeouts; the consumer's own interval (1000 ms) would get it declared dead.
  const auto consume =
      ferry_run({"consume", "--forwarder", ferryd.endpoint(), "--queue", "idle", "--timeout-ms", "3000"});
  CHECK(consume.code == 0);
  const std::string log = ferryd.log();
  INFO("ferryd: " << log);
  CHECK(!contains(log, "silent for over"));
  // Subscribed once: a consumer declared dead subscribes again and ferryd logs each CONSUME.
  CHECK(log.find("on queue idle (prefetch") == log.rfind("on queue idle (prefetch"));
  CHECK(contains(log, "on queue idle (prefetch"));
}

TEST_CASE("cli durable: ferry consume --timeout-ms exits 1 when ferryd never answered", "[cli][durable]") {
  const std::string nobody = test::free_tcp_endpoint();
  const auto consume =
      ferry_run({"consume", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "300"}, "", 20s);
  CHECK(consume.code == 1);
  CHECK(consume.err == "ferry: ferryd at " + nobody + " did not answer within 300 ms\n");
}

TEST_CASE("cli durable: ferry consume against an unreachable ferryd ends at once on --timeout-ms or SIGTERM",
          "[cli][durable]") {
  // Nothing was handed out, so there is nothing to hand back: no wait for CANCELLED, no linger.
  const std::string nobody = test::free_tcp_endpoint();
  const auto start = std::chrono::steady_clock::now();
  const auto consume =
      ferry_run({"consume", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "500"}, "", 20s);
  CHECK(consume.code == 1);
  CHECK(std::chrono::steady_clock::now() - start < 1500ms);

  test::child_process waiting(ferry_args({"consume", "--forwarder", nobody, "--queue", "jobs"}));
  REQUIRE(waiting.wait_for_output("cannot reach ferryd at " + nobody, 5s));
  const auto signalled = std::chrono::steady_clock::now();
  waiting.kill(SIGTERM);
  const auto code = waiting.wait(20s);
  CHECK(std::chrono::steady_clock::now() - signalled < 1s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}

TEST_CASE("cli durable: send, consume, stats and dlq say within a second that ferryd cannot be reached",
          "[cli][durable]") {
  const std::string nobody = test::free_tcp_endpoint();
  using args = std::vector<std::string>;
  const std::vector<args> commands{
      {"send", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "8000"},
      {"consume", "--forwarder", nobody, "--queue", "jobs"},
      {"stats", "--forwarder", nobody, "--timeout-ms", "8000"},
      {"dlq", "list", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "8000"},
      {"dlq", "purge", "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "8000"},
  };
  std::vector<std::unique_ptr<test::child_process>> running;
  const auto start = std::chrono::steady_clock::now();
  for (const args& a : commands) {
    running.push_back(std::make_unique<test::child_process>(ferry_args(a)));
    if (a.front() == "send") running.back()->write_stdin("a\n");
  }
  for (std::size_t i = 0; i < running.size(); ++i) {
    INFO("ferry " << commands[i].front() << " stderr: " << running[i]->err());
    CHECK(running[i]->wait_for_output("cannot reach ferryd at " + nobody + " (retrying)", 3s));
  }
  CHECK(std::chrono::steady_clock::now() - start < 2500ms);  // each said it after about a second
  for (auto& r : running) r->kill(SIGTERM);
}

TEST_CASE("cli durable: usage errors exit with status 2 and one line on stderr", "[cli][durable]") {
  using args = std::vector<std::string>;
  const auto [argv, expected] = GENERATE(table<args, std::string>({
      {{"send", "--queue", "jobs"}, "--forwarder is required"},
      {{"send", "--forwarder", "tcp://127.0.0.1:1"}, "--queue is required"},
      {{"send", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs.dlq"}, "is a dead-letter queue"},
      {{"send", "--forwarder", "tcp://127.0.0.1:1", "--queue", "a b"}, "is not a queue name"},
      {{"send", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--header", "novalue"},
       "expected KEY=VALUE"},
      {{"send", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--timeout-ms", "0"}, "--timeout-ms"},
      {{"consume", "--forwarder", "tcp://127.0.0.1:1"}, "--queue is required"},
      {{"consume", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--count", "-1"}, "--count"},
      {{"consume", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--prefetch", "0"}, "--prefetch"},
      {{"consume", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--format", "xml"}, "--format"},
      {{"consume", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--bogus"}, "--bogus"},
      {{"dlq"}, "give an operation: list, replay or purge"},
      {{"dlq", "frob"}, "frob"},
      {{"dlq", "list", "--forwarder", "tcp://127.0.0.1:1"}, "--queue is required"},
      {{"dlq", "replay", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs.dlq"},
       "--queue jobs for jobs.dlq"},
      {{"dlq", "purge", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs", "--limit", "0"}, "--limit"},
      {{"stats"}, "--forwarder is required"},
      {{"stats", "--forwarder", "tcp://127.0.0.1:1", "--queue", ".hidden"}, "is not a queue name"},
  }));
  const auto result = ferry_run(argv, "", 20s);
  INFO("stderr: " << result.err);
  CHECK(result.code == 2);
  CHECK(is_one_line(result.err));
  CHECK(contains(result.err, expected));
  CHECK(result.out.empty());
}

TEST_CASE("cli durable: --help works on every durable command", "[cli][durable]") {
  using args = std::vector<std::string>;
  for (const args& command : {args{"send"}, args{"consume"}, args{"dlq"}, args{"dlq", "list"},
                              args{"dlq", "replay"}, args{"dlq", "purge"}, args{"stats"}}) {
    args argv = command;
    argv.push_back("--help");
    const auto help = ferry_run(argv, "", 20s);
    INFO("command: " << command.back());
    CHECK(help.code == 0);
    CHECK(contains(help.out, "Usage: ferry " + command.front()));
    CHECK(help.err.empty());
  }
  CHECK(contains(ferry_run({"stats", "--help"}).out, "Health check"));
  CHECK(contains(ferry_run({"send", "--help"}).out, "--id-file"));
  CHECK(contains(ferry_run({"consume", "--help"}).out, "at least once"));
}
