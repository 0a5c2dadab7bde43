// The durable commands of the `ferry` tool against a real ferryd child process, dlq and stats: dead letters
// listed, replayed and purged, statistics as text and json, and exit statuses when nothing answers. send and
// consume are in cli_durable_test.cpp.
//
// Handshakes: ferryd prints "[ferry] ready" once it listens; the move to the DLQ is waited for, never slept
// on.

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "ferry/consumer.hpp"
#include "support/cli_durable_support.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace ferry::test::cli;
using namespace std::chrono_literals;

namespace {

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

}  // namespace

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
