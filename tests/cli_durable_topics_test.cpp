// `ferry publish` and `ferry subscribe` against the ferryd program: a durable subscription resumes across
// kill -9 of ferryd with no gap and no duplicate, names fan out, the start flags, ephemeral subscriptions,
// and the usage errors.

#include <catch2/catch.hpp>

#include <signal.h>

#include "support/cli_durable_support.hpp"

using namespace ferry::test::cli;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> subscribe_args(const ferryd_child& d, std::vector<std::string> more) {
  std::vector<std::string> args{"subscribe", "--forwarder", d.endpoint(), "--topic", "events"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

void publish(const ferryd_child& d, int first, int last) {
  const auto r = ferry_run({"publish", "--forwarder", d.endpoint(), "--topic", "events"},
                           numbered_lines(first, last, "e"));
  INFO(r.err);
  REQUIRE(r.code == 0);
}

}  // namespace

TEST_CASE("cli topics: a durable subscription resumes after kill -9 of ferryd with no gap and no duplicate",
          "[cli][topics][fault]") {
  auto d = std::make_unique<ferryd_child>();
  const std::string endpoint = d->endpoint();
  const std::string data_dir = d->data_dir().string();
  publish(*d, 1, 200);
  // The first run prints 1..50 and acknowledges each after printing it.
  const auto first = ferry_run(subscribe_args(*d, {"--durable", "audit", "--from-start", "--count", "50"}));
  INFO(first.err);
  REQUIRE(first.code == 0);
  CHECK(first.out == numbered_lines(1, 50, "e"));

  d->process().kill(SIGKILL);
  REQUIRE(d->process().wait(10s).value_or(-1) == 128 + SIGKILL);
  // The same data directory and endpoint (the first child keeps its temp dir until the test ends).
  ferryd_child again({"--data-dir", data_dir, "--bind", endpoint}, endpoint);
  publish(again, 201, 250);
  const auto second = ferry_run(subscribe_args(again, {"--durable", "audit", "--timeout-ms", "1500"}));
  INFO(second.err);
  CHECK(second.code == 0);
  CHECK(second.out == numbered_lines(51, 250, "e"));

  // Another name gets everything; a new ephemeral subscription only what comes next.
  const auto other =
      ferry_run(subscribe_args(again, {"--durable", "billing", "--from-start", "--count", "250"}));
  CHECK(other.code == 0);
  CHECK(other.out == numbered_lines(1, 250, "e"));
  const auto from_seq = ferry_run(subscribe_args(again, {"--from-seq", "241", "--timeout-ms", "1000"}));
  CHECK(from_seq.out == numbered_lines(241, 250, "e"));
  const auto from_time =
      ferry_run(subscribe_args(again, {"--from-time", "2001-01-01T00:00:00Z", "--count", "3", "-F", "json"}));
  CHECK(from_time.code == 0);
  CHECK(lines_of(from_time.out).size() == 3);
  CHECK(contains(from_time.out, "\"sequence\":1,"));
  CHECK(contains(from_time.out, "\"sequence\":3,"));

  const auto stats = stats_json(again);
  CHECK(json_counter(stats.out, "events@audit", "position") == 251);
  CHECK(json_counter(stats.out, "events@audit", "depth") == 0);
  CHECK(contains(stats.out, "\"topics\":{\"events\":{\"first_seq\":1,\"last_seq\":250,\"messages\":250"));
}

TEST_CASE("cli topics: subscribe and publish usage errors exit 2 and say what is wrong", "[cli][topics]") {
  ferryd_child d;
  struct bad {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<bad> cases{
      {{"subscribe", "--forwarder", d.endpoint()}, "--topic is required"},
      {{"subscribe", "--forwarder", d.endpoint(), "--topic", "a/b"}, "is not a topic name"},
      {{"subscribe", "--forwarder", d.endpoint(), "--topic", "t", "--from-start", "--from-seq", "3"},
       "at most one of --from-start, --from-seq and --from-time"},
      {{"subscribe", "--forwarder", d.endpoint(), "--topic", "t", "--from-time", "2026-12-03 10:00"},
       "is not an ISO 8601 time"},
      {{"subscribe", "--forwarder", d.endpoint(), "--topic", "t", "--from-time", "2026-12-03T10:00:00"},
       "is not an ISO 8601 time"},
      {{"publish", "--forwarder", d.endpoint(), "--topic", "t.dlq"}, "is not a topic name"},
      {{"publish", "--forwarder", d.endpoint(), "--queue", "t"}, "--queue"},
  };
  for (const auto& c : cases) {
    INFO(c.args[0] << " " << c.args.back());
    const auto r = ferry_run(c.args);
    CHECK(r.code == 2);
    CHECK(contains(r.err, c.says));
    CHECK(r.out.empty());
  }
  // A durable name that is not valid is refused by the consumer before anything is sent.
  const auto r = ferry_run({"subscribe", "--forwarder", d.endpoint(), "--topic", "t", "--durable", "x.dlq"});
  CHECK(r.code != 0);
  CHECK(contains(r.err, "subscription name 'x.dlq' is not valid"));
}

TEST_CASE(
    "cli topics: ferry sub on ferryd's live feed with --repair-from prints every message in order "
    "across a kill -9 of ferryd and messages published while the feed was off",
    "[cli][topics][repair][fault]") {
  const std::string feed = ferry::test::free_tcp_endpoint();
  auto d = std::make_unique<ferryd_child>(std::vector<std::string>{"--feed", feed});
  const std::string endpoint = d->endpoint();
  const std::string data_dir = d->data_dir().string();
  ferry::test::child_process sub(
      ferry_args({"sub", "--connect", feed, "--repair-from", endpoint, "-s", "events", "--stats"}));
  // Until the feed's subscription has arrived (the slow-joiner effect), publish one line at a time.
  auto publish_until_seen = [&](const ferryd_child& at, const std::string& line) {
    for (int i = 0; i < 100; ++i) {
      const auto r = ferry_run({"publish", "--forwarder", at.endpoint(), "--topic", "events"}, line + "\n");
      REQUIRE(r.code == 0);
      if (sub.wait_for_output(line + "\n", 100ms)) return;
    }
    FAIL("ferry sub never printed " << line);
  };
  publish_until_seen(*d, "warm");
  publish(*d, 1, 10);
  REQUIRE(sub.wait_for_output("e10\n", 10s));

  d->process().kill(SIGKILL);
  REQUIRE(d->process().wait(10s).value_or(-1) == 128 + SIGKILL);
  {
    // ferryd again without its feed: what is published now reaches no subscriber live.
    ferryd_child no_feed({"--data-dir", data_dir, "--bind", endpoint}, endpoint);
    publish(no_feed, 11, 30);
  }
  ferryd_child again({"--data-dir", data_dir, "--bind", endpoint, "--feed", feed}, endpoint);
  publish(again, 31, 40);
  publish_until_seen(again, "tail");  // the first message sub gets after the gap shows it

  sub.kill(SIGTERM);
  REQUIRE(sub.wait(10s) == 0);
  std::string events;
  for (const auto& line : lines_of(sub.out()))
    if (line.rfind("e", 0) == 0) events += line + "\n";
  CHECK(events == numbered_lines(1, 40, "e"));
  INFO(sub.err());
  CHECK(contains(sub.err(), "gaps 0,"));
  CHECK_FALSE(contains(sub.err(), "repaired 0\n"));
}
