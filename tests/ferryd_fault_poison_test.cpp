// Fault tests for ferryd: poison messages get exactly --max-attempts deliveries across a restart of ferryd,
// then go to the dead-letter queue; a message its handler rejects goes there after one attempt and stays
// there across a restart.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/ferryd_fault_support.hpp"

using namespace std::chrono_literals;
using namespace ferry::test;

namespace {

// A message that always fails: a first worker makes attempt 1 (fails) and dies inside attempt 2, ferryd is
// stopped with `stop_signal` and restarted, a second worker makes the remaining attempts. Exactly
// max_attempts deliveries in all, then the message is in <queue>.dlq with the last error.
void poison_across_restart(int stop_signal) {
  constexpr unsigned max_attempts = 5;
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--max-attempts",         std::to_string(max_attempts),
                                       "--heartbeat-ms",         "100",
                                       "--heartbeat-timeout-ms", "600"};
  auto ferryd = start_ferryd(dir.path(), port, flags);
  const produced sent = produce_all(port, "orders", 1, {"--prefix", "poison-"}, {ferryd.get()});
  const std::string id = sent.confirmed.begin()->first;

  auto first =
      start_worker(port, "orders",
                   {"--fail-on", "poison", "--exit-after", "2", "--prefetch", "1", "--heartbeat-ms", "100"});
  REQUIRE(wait_exit(*first, 15s, {ferryd.get()}).value_or(-1) == 3);

  ferryd->kill(stop_signal);
  const auto code = wait_exit(*ferryd, 15s);
  {
    INFO("ferryd stderr:\n" << ferryd->err());
    if (stop_signal == SIGTERM) {
      CHECK(code.value_or(-1) == 0);
    } else {
      CHECK(code.value_or(-1) == 128 + SIGKILL);
    }
  }
  if (!code) ferryd->kill(SIGKILL);
  (void)ferryd->wait(10s);
  ferryd = start_ferryd(dir.path(), port, flags);

  auto second =
      start_worker(port, "orders", {"--fail-on", "poison", "--prefetch", "1", "--heartbeat-ms", "100"});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  const bool dead_lettered =
      wait_for([&] { return !admin.dlq_list("orders").messages.empty(); }, 20s, {ferryd.get(), second.get()});
  INFO("first worker:\n"
       << first->out() << "\nsecond worker:\n"
       << second->out() << "\nferryd stderr:\n"
       << ferryd->err());
  REQUIRE(dead_lettered);

  // The attempts the handlers saw: 1..max_attempts, each once, across both ferryd runs.
  std::vector<unsigned> attempts;
  for (auto* w : {first.get(), second.get()})
    for (const auto& e : events_of(*w, "begin")) {
      CHECK(e.id == id);
      attempts.push_back(e.attempt);
    }
  std::sort(attempts.begin(), attempts.end());
  std::vector<unsigned> expected(max_attempts);
  for (unsigned i = 0; i < max_attempts; ++i) expected[i] = i + 1;
  CHECK(attempts == expected);

  auto letters = admin.dlq_list("orders").messages;
  REQUIRE(letters.size() == 1);
  CHECK(letters[0].id.to_hex() == id);
  CHECK(letters[0].payload == "poison-0");
  CHECK(letters[0].headers.count("ferry-attempts") == 1);
  CHECK(letters[0].headers.count("ferry-dead-letter-reason") == 1);
  CHECK(letters[0].headers["ferry-attempts"] == std::to_string(max_attempts));
  CHECK(contains(letters[0].headers["ferry-dead-letter-reason"], "payload matched --fail-on poison"));
  ferry::queue_stats c = queue_stats_of(admin, "orders");
  CHECK(c.depth == 0);
  CHECK(c.dead_lettered == 1);
  CHECK(c.delivered == max_attempts - 2);  // this run made only the remaining attempts
  CHECK(queue_stats_of(admin, "orders.dlq").depth == 1);
}

}  // namespace

TEST_CASE(
    "a poison message gets exactly --max-attempts deliveries across a SIGKILL restart and then goes to the "
    "DLQ",
    "[ferryd][fault]") {
  poison_across_restart(SIGKILL);
}

TEST_CASE(
    "a poison message gets exactly --max-attempts deliveries across a SIGTERM restart and then goes to the "
    "DLQ",
    "[ferryd][fault]") {
  poison_across_restart(SIGTERM);
}

TEST_CASE(
    "a message its handler rejects goes to the DLQ after one attempt and stays there across a SIGKILL "
    "restart",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--max-attempts", "5"});
  const produced good = produce_all(port, "mixed", 10, {}, {ferryd.get()});
  const produced bad = produce_all(port, "mixed", 1, {"--prefix", "refuse-me-"}, {ferryd.get()});
  const std::string id = bad.confirmed.begin()->first;
  auto worker = start_worker(port, "mixed", {"--reject-on", "refuse-me"});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  REQUIRE(wait_for([&] { return depth_of(admin, "mixed") == 0; }, 20s, {ferryd.get(), worker.get()}));
  check_each_handled_once(good.confirmed, events_of(*worker, "handled"));
  CHECK(events_of(*worker, "rejected").size() == 1);

  ferryd->kill(SIGKILL);
  REQUIRE(ferryd->wait(10s).value_or(-1) == 128 + SIGKILL);
  ferryd = start_ferryd(dir.path(), port);
  ferry::admin after(ctx, endpoint(port));
  auto letters = after.dlq_list("mixed").messages;
  INFO("ferryd stderr:\n" << ferryd->err());
  REQUIRE(letters.size() == 1);
  CHECK(letters[0].id.to_hex() == id);
  CHECK(letters[0].payload == "refuse-me-0");
  CHECK(letters[0].headers["ferry-attempts"] == "1");
  CHECK(contains(letters[0].headers["ferry-dead-letter-reason"], "payload matched --reject-on refuse-me"));
  CHECK(depth_of(after, "mixed") == 0);  // nothing comes back to the source queue after the restart
}
