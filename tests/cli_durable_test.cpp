// The durable commands of the `ferry` tool (send, consume, dlq, stats) against a real ferryd child process:
// what arrives, exit statuses, --count leaving the rest in the queue, dead letters, statistics, usage
// errors, and ferryd started from a TOML --config file.
//
// Handshakes: ferryd prints "[ferry] ready" once it listens; a consumer's output is waited for, never slept
// on.

#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/consumer.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

std::string program(const std::string& relative) {
  const std::string path = test::built_program(relative);
  INFO("build it first: " << path);
  REQUIRE(std::filesystem::exists(path));
  return path;
}

std::vector<std::string> ferry_args(std::vector<std::string> args) {
  args.insert(args.begin(), program("apps/ferry/ferry"));
  return args;
}

// A ferryd child on 127.0.0.1 with its own data directory; stopped with SIGTERM at the end.
class ferryd_child {
 public:
  explicit ferryd_child(std::vector<std::string> flags = {}) : endpoint_(test::free_tcp_endpoint()) {
    std::vector<std::string> argv{program("apps/ferryd/ferryd"), "--data-dir", dir_.path().string(), "--bind",
                                  endpoint_};
    argv.insert(argv.end(), flags.begin(), flags.end());
    start(argv);
  }
  // ferryd started with exactly `argv` (after the program), listening on `endpoint`.
  ferryd_child(const std::vector<std::string>& argv, std::string endpoint) : endpoint_(std::move(endpoint)) {
    std::vector<std::string> full{program("apps/ferryd/ferryd")};
    full.insert(full.end(), argv.begin(), argv.end());
    start(full);
  }
  ~ferryd_child() {
    process_->kill(SIGTERM);
    (void)process_->wait(10s);
  }
  ferryd_child(const ferryd_child&) = delete;
  ferryd_child& operator=(const ferryd_child&) = delete;

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept { return dir_.path(); }
  // ferryd's log so far (reading it also keeps its pipe from filling).
  const std::string& log() { return process_->err(); }
  test::child_process& process() { return *process_; }

 private:
  void start(const std::vector<std::string>& argv) {
    process_ = std::make_unique<test::child_process>(argv);
    const bool ready = process_->wait_for_output("[ferry] ready", 20s);
    INFO("ferryd: " << process_->err());
    REQUIRE(ready);
  }

  test::temp_dir dir_{"ferry-cli-durable"};
  std::string endpoint_;
  std::unique_ptr<test::child_process> process_;
};

// Runs `ferry ARGS` to completion; the result says what happened when a check fails.
test::run_result ferry_run(const std::vector<std::string>& args, const std::string& input = "",
                           std::chrono::milliseconds timeout = 60s) {
  return test::run(ferry_args(args), input, timeout);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string numbered_lines(int first, int last, const std::string& prefix = "") {
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

// `text` against `pattern`, where <hex32> is 32 lowercase hex digits and <digits> one or more digits.
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

// A counter of one queue in `ferry stats --format json` output; -1 when absent.
long long json_counter(const std::string& json, const std::string& queue, const std::string& name) {
  const auto at = json.find("\"" + queue + "\":{");
  if (at == std::string::npos) return -1;
  const auto end = json.find('}', at);
  const auto field = json.find("\"" + name + "\":", at);
  if (field == std::string::npos || field > end) return -1;
  return std::stoll(json.substr(field + name.size() + 3));
}

// A row of one queue's table in `ferry stats` text output: "  LABEL   VALUE"; empty when absent.
std::string text_row(const std::string& text, const std::string& queue, const std::string& label) {
  const auto at = text.find("\nqueue " + queue + "\n");
  if (at == std::string::npos) return {};
  const auto end = text.find("\n\n", at + 1);
  const auto row = text.find("\n  " + label + " ", at);
  if (row == std::string::npos || row > end) return {};
  const auto value = text.find_first_not_of(' ', row + 3 + label.size());
  return text.substr(value, text.find('\n', value) - value);
}

test::run_result stats_json(const ferryd_child& d) {
  auto r = ferry_run({"stats", "--forwarder", d.endpoint(), "--format", "json"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  return r;
}

}  // namespace

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

TEST_CASE("cli durable: ferry dlq lists, replays and purges dead letters", "[cli][durable]") {
  ferryd_child ferryd;
  const std::string& ep = ferryd.endpoint();
  REQUIRE(ferry_run({"send", "--forwarder", ep, "--queue", "jobs", "--key", "k", "-H", "source=cli"},
                    "good\nbad one\nbad\ttwo\n")
              .code == 0);

  // A worker that rejects what starts with "bad": those go to jobs.dlq at once.
  {
    context ctx;
    consumer worker(ctx, ep, "jobs", [](message& m) {
      if (m.payload().rfind("bad", 0) == 0)
        throw reject_message("cannot parse '" + std::string(m.payload()) + "'");
    });
    REQUIRE(test::wait_until([&] { return worker.stats().handled + worker.stats().rejected == 3; }, 20s));
  }
  // The move is durable with the next group commit.
  test::run_result list;
  const bool listed = test::wait_until(
      [&] {
        list = ferry_run({"dlq", "list", "--forwarder", ep, "--queue", "jobs"});
        return list.code == 0 && lines_of(list.out).size() == 2;
      },
      20s);
  INFO("list: " << list.out << list.err);
  REQUIRE(listed);

  SECTION("list as text and json") {
    const auto lines = lines_of(list.out);
    CHECK(matches(lines[0], "<hex32>\t1\trejected by the handler: cannot parse 'bad one'\tbad one"));
    CHECK(matches(lines[1], "<hex32>\t1\trejected by the handler: cannot parse 'bad\\ttwo'\tbad\\ttwo"));

    const auto json = ferry_run({"dlq", "list", "--forwarder", ep, "--queue", "jobs", "--format", "json"});
    CHECK(json.code == 0);
    const auto objects = lines_of(json.out);
    REQUIRE(objects.size() == 2);
    CHECK(matches(objects[0], R"({"id":"<hex32>","seq":1,"queue":"jobs.dlq","key":"k","headers":{)"
                              R"("ferry-attempts":"1","ferry-dead-letter-reason":"rejected by the handler: )"
                              R"(cannot parse 'bad one'","ferry-source-queue":"jobs","source":"cli"},)"
                              R"("timestamp":<digits>,"stored_at":<digits>,"payload":"bad one"})"));
    CHECK(contains(objects[1], R"("payload":"bad\ttwo"})"));

    // --limit shows the oldest and says how many there are.
    const auto one = ferry_run({"dlq", "list", "--forwarder", ep, "--queue", "jobs", "--limit", "1"});
    CHECK(lines_of(one.out).size() == 1);
    CHECK(contains(one.out, "\tbad one\n"));
    CHECK(one.err == "ferry: jobs.dlq holds 2 dead letters; 1 listed (see --limit)\n");
  }
  SECTION("replay one, purge the other") {
    const auto replay = ferry_run({"dlq", "replay", "--forwarder", ep, "--queue", "jobs", "--limit", "1"});
    INFO("replay stderr: " << replay.err);
    CHECK(replay.code == 0);
    CHECK(replay.out == "1\n");
    // Back in jobs without the ferry-* headers, first attempt again.
    const auto again =
        ferry_run({"consume", "--forwarder", ep, "--queue", "jobs", "--count", "1", "-F", "json"});
    CHECK(contains(again.out, R"("key":"k","headers":{"source":"cli"},"attempt":1,)"));
    CHECK(contains(again.out, R"("payload":"bad one"})"));

    const auto remaining = ferry_run({"dlq", "list", "--forwarder", ep, "--queue", "jobs"});
    REQUIRE(lines_of(remaining.out).size() == 1);
    CHECK(contains(remaining.out, "\tbad\\ttwo\n"));

    const auto purge = ferry_run({"dlq", "purge", "--forwarder", ep, "--queue", "jobs"});
    CHECK(purge.code == 0);
    CHECK(purge.out == "1\n");
    const auto none = ferry_run({"dlq", "list", "--forwarder", ep, "--queue", "jobs"});
    CHECK(none.code == 0);
    CHECK(none.out.empty());
    CHECK(none.err.empty());
    const std::string stats = stats_json(ferryd).out;
    CHECK(json_counter(stats, "jobs.dlq", "depth") == 0);
    CHECK(json_counter(stats, "jobs", "depth") == 0);
  }
}

TEST_CASE("cli durable: ferry dlq on a queue without dead letters lists nothing and counts 0",
          "[cli][durable]") {
  ferryd_child ferryd;
  const auto list = ferry_run({"dlq", "list", "--forwarder", ferryd.endpoint(), "--queue", "nothing"});
  CHECK(list.code == 0);
  CHECK(list.out.empty());
  const auto purge = ferry_run({"dlq", "purge", "--forwarder", ferryd.endpoint(), "--queue", "nothing"});
  CHECK(purge.code == 0);
  CHECK(purge.out == "0\n");
}

TEST_CASE("cli durable: ferry stats shows depth and counters as text and json", "[cli][durable]") {
  ferryd_child ferryd;
  const std::string& ep = ferryd.endpoint();
  REQUIRE(ferry_run({"send", "--forwarder", ep, "--queue", "jobs"}, numbered_lines(1, 5)).code == 0);
  REQUIRE(ferry_run({"send", "--forwarder", ep, "--queue", "other"}, "x\n").code == 0);
  REQUIRE(ferry_run({"consume", "--forwarder", ep, "--queue", "jobs", "--count", "2"}).code == 0);

  const auto text = ferry_run({"stats", "--forwarder", ep});
  INFO("text: " << text.out << text.err);
  CHECK(text.code == 0);
  CHECK(matches(lines_of(text.out)[0], "server            ferryd <digits>.<digits>.<digits>"));
  CHECK(contains(text.out, "\ncommits           "));
  CHECK(contains(text.out, "\nmalformed frames  0\n"));
  CHECK(text_row(text.out, "jobs", "depth") == "3");
  CHECK(text_row(text.out, "jobs", "acked") == "2");
  CHECK(text_row(text.out, "jobs", "confirmed") == "5");
  CHECK(text_row(text.out, "jobs", "in flight") == "0");
  CHECK(text_row(text.out, "jobs", "stale acks") == "0");
  CHECK(text_row(text.out, "other", "depth") == "1");
  CHECK(std::stoll(text_row(text.out, "jobs", "disk bytes")) > 0);

  const auto json = stats_json(ferryd);
  INFO("json: " << json.out);
  CHECK(is_one_line(json.out));
  CHECK(matches(json.out.substr(0, json.out.find("\"instance\":\"") + 12),
                R"({"server":"ferryd <digits>.<digits>.<digits>","instance":")"));
  CHECK(json_counter(json.out, "jobs", "depth") == 3);
  CHECK(json_counter(json.out, "jobs", "acked") == 2);
  CHECK(json_counter(json.out, "jobs", "delivered") >= 2);
  CHECK(json_counter(json.out, "other", "confirmed") == 1);

  SECTION("--queue shows one queue") {
    const auto one = ferry_run({"stats", "--forwarder", ep, "--queue", "other", "-F", "json"});
    CHECK(json_counter(one.out, "other", "depth") == 1);
    CHECK(!contains(one.out, "\"jobs\""));
    const auto one_text = ferry_run({"stats", "--forwarder", ep, "--queue", "other"});
    CHECK(contains(one_text.out, "\nqueue other\n"));
    CHECK(!contains(one_text.out, "queue jobs"));
    const auto missing = ferry_run({"stats", "--forwarder", ep, "--queue", "nope"});
    CHECK(missing.code == 1);
    CHECK(contains(missing.err, "has no queue nope"));
  }
}

TEST_CASE("cli durable: ferry stats and dlq exit 1 when nothing answers", "[cli][durable]") {
  const std::string nobody = test::free_tcp_endpoint();
  const auto start = std::chrono::steady_clock::now();
  const auto stats = ferry_run({"stats", "--forwarder", nobody, "--timeout-ms", "300"}, "", 20s);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  CHECK(stats.code == 1);
  CHECK(stats.out.empty());
  CHECK(stats.err == "ferry: ferryd at " + nobody + " did not answer within 300 ms\n");

  for (const std::string op : {"list", "replay", "purge"}) {
    const auto dlq =
        ferry_run({"dlq", op, "--forwarder", nobody, "--queue", "jobs", "--timeout-ms", "300"}, "", 20s);
    CHECK(dlq.code == 1);
    CHECK(dlq.err == "ferry: ferryd at " + nobody + " did not answer within 300 ms\n");
  }
}

TEST_CASE("cli durable: ferryd logs SIGHUP, ignores it and keeps serving", "[cli][durable]") {
  ferryd_child ferryd;
  ferryd.process().kill(SIGHUP);
  REQUIRE(ferryd.process().wait_for_output("received SIGHUP: nothing to reload", 10s));
  CHECK(ferryd.process().running());
  CHECK(ferry_run({"send", "--forwarder", ferryd.endpoint(), "--queue", "jobs"}, "after\n").code == 0);
  ferryd.process().kill(SIGTERM);
  CHECK(ferryd.process().wait(10s) == 0);
}

TEST_CASE("cli durable: ferryd --help shows the defaults docs/operations.md lists for its flags",
          "[cli][durable]") {
  const auto help = test::run({test::built_program("apps/ferryd/ferryd"), "--help"});
  REQUIRE(help.code == 0);
  std::ifstream doc(std::string(FERRY_SOURCE_DIR) + "/docs/operations.md");
  REQUIRE(doc);
  int rows = 0;
  for (std::string line; std::getline(doc, line);) {
    // | `--lease-ms MS` | `30000` | ...      (a default that is not a plain value is skipped)
    if (line.rfind("| `--", 0) != 0) continue;
    const auto name_end = line.find_first_of(" `", 3);
    const std::string flag = line.substr(3, name_end - 3);
    const auto flag_cell_end = line.find("` |", 3);  // the flag's cell may hold "\|"
    if (flag_cell_end == std::string::npos || line.compare(flag_cell_end, 5, "` | `") != 0) continue;
    const auto cell = flag_cell_end + 5;
    const std::string value = line.substr(cell, line.find('`', cell) - cell);
    if (value.empty() || value[0] == '$') continue;
    INFO(flag << " defaults to " << value << " in docs/operations.md; ferryd --help:\n" << help.out);
    const auto at = help.out.find("  " + flag + " ");
    REQUIRE(at != std::string::npos);
    const std::string shown = help.out.substr(at, help.out.find('\n', at) - at);
    CHECK(contains(shown, "=" + value));
    ++rows;
  }
  CHECK(rows >= 15);
}

TEST_CASE("cli durable: the README and operations.md start ferryd on one directory that they create",
          "[cli][durable]") {
  // ferryd exits 3 on a missing --data-dir: every shell line that starts it must follow a mkdir -p of it.
  std::set<std::string> dirs;
  for (const std::string doc : {"README.md", "docs/operations.md"}) {
    std::ifstream in(std::string(FERRY_SOURCE_DIR) + "/" + doc);
    REQUIRE(in);
    std::set<std::string> made;
    int started = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("mkdir -p ", 0) == 0) made.insert(line.substr(9, line.find(' ', 9) - 9));
      if (line.rfind("ferryd --data-dir ", 0) != 0) continue;
      const std::string dir = line.substr(18, line.find(' ', 18) - 18);
      INFO(doc << ": " << line);
      CHECK(made.count(dir) == 1);
      dirs.insert(dir);
      ++started;
    }
    CHECK(started >= 1);
  }
  CHECK(dirs.size() == 1);  // the same path in both
  // The durable example the README points to exists.
  CHECK(std::filesystem::exists(std::string(FERRY_SOURCE_DIR) + "/examples/jobs.cpp"));
}

TEST_CASE("cli durable: ferryd takes its options from a TOML --config file", "[cli][durable]") {
  // The example of docs/operations.md, with a port and a directory of this test's own.
  test::temp_dir dir;
  const std::string endpoint = test::free_tcp_endpoint();
  {
    std::ofstream config(dir / "ferryd.toml");
    config << "# ferryd.toml\n"
           << "data-dir = \"" << dir.path().string() << "\"\n"
           << "bind = [\"" << endpoint << "\"]\n"
           << "fsync = \"always\"\n"
           << "max-message-bytes = 100\n"
           << "max-attempts = 3\n"
           << "lease-ms = 30000\n"
           << "min-free-mb = 1\n"
           << "log-level = \"info\"\n";
  }
  ferryd_child ferryd({"--config", dir / "ferryd.toml"}, endpoint);
  CHECK(contains(ferryd.log(), "listening on " + endpoint));
  CHECK(contains(ferryd.log(), "data dir " + dir.path().string()));

  const auto send = ferry_run({"send", "--forwarder", endpoint, "--queue", "jobs"},
                              "small\n" + std::string(101, 'x') + "\n");
  CHECK(send.code == 1);
  CHECK(contains(send.err, "refused: too_large: payload of 101 bytes is over the limit of 100 bytes"));
  CHECK(std::filesystem::exists(dir.path() / "queues" / "jobs"));
}

TEST_CASE("cli durable: ferryd's config file errors name the key, the line and what is accepted",
          "[cli][durable]") {
  test::temp_dir dir;
  const std::string path = dir / "ferryd.toml";
  const auto [body, expected] = GENERATE(table<std::string, std::string>({
      {"lease-msec = 100\n",
       "line 3: unknown key 'lease-msec' (did you mean 'lease-ms'?); the keys are the flag names without "
       "'--': data-dir, bind, fsync, "},
      {"lease_ms = 100\n", "line 3: unknown key 'lease_ms' (did you mean 'lease-ms'?)"},
      {"[extra]\nlease-ms = 100\n",
       "line 3: section [extra] is not accepted: ferryd's config file has no sections; write every key at "
       "the top level as key = value"},
      {"lease-ms = 5\n", "line 3: lease-ms = 5: Value 5 not in range 100 to 86400000"},
      {"fsync = \"sometimes\"\n", "line 3: fsync = \"sometimes\": sometimes not in {always,interval}"},
  }));
  {
    std::ofstream config(path);
    config << "# ferryd.toml\n"
           << "data-dir = \"" << dir.path().string() << "\"\n"
           << body;
  }
  const auto r = test::run({test::built_program("apps/ferryd/ferryd"), "--config", path});
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(contains(r.err, "ferryd: --config " + path + " " + expected));
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
