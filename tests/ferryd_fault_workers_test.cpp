// Fault tests for ferryd: workers that die mid-handling, or stall (SIGSTOP) past their lease or past the
// heartbeat timeout: the message goes to another worker with its attempt counted, and the stalled
// worker's late answer settles nothing.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/ferryd_fault_support.hpp"

using namespace std::chrono_literals;
using namespace ferry::test;

TEST_CASE("a message whose worker dies mid-handling is redelivered to another worker as attempt 2",
          "[ferryd][fault]") {
  const bool killed = GENERATE(true, false);  // SIGKILL from outside, or _exit inside the handler
  INFO((killed ? "worker killed with SIGKILL" : "worker calls _exit in its handler"));
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "600"});
  std::vector<std::string> doomed_flags{"--prefetch", "1", "--heartbeat-ms", "100"};
  if (killed) {
    doomed_flags.insert(doomed_flags.end(), {"--sleep-ms", "60000"});
  } else {
    doomed_flags.insert(doomed_flags.end(), {"--exit-after", "1"});
  }
  auto doomed = start_worker(port, "jobs", doomed_flags);
  const produced sent = produce_all(port, "jobs", 10, {}, {ferryd.get(), doomed.get()});

  REQUIRE(wait_for([&] { return !events_of(*doomed, "begin").empty(); }, 10s, {ferryd.get(), doomed.get()}));
  const std::string victim = events_of(*doomed, "begin").front().id;
  if (killed) doomed->kill(SIGKILL);
  REQUIRE(wait_exit(*doomed, 10s, {ferryd.get()}).value_or(-1) == (killed ? 128 + SIGKILL : 3));

  auto rescuer = start_worker(port, "jobs", {"--heartbeat-ms", "100"});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  const bool done =
      wait_for([&] { return depth_of(admin, "jobs") == 0; }, 20s, {ferryd.get(), rescuer.get()});
  INFO("ferryd stderr:\n" << ferryd->err() << "\nrescuer stdout:\n" << rescuer->out());
  REQUIRE(done);
  const auto handled = events_of(*rescuer, "handled");
  check_each_handled_once(sent.confirmed, handled);
  const auto it =
      std::find_if(handled.begin(), handled.end(), [&](const event& e) { return e.id == victim; });
  REQUIRE(it != handled.end());
  CHECK(it->attempt == 2);
  CHECK(contains(ferryd->err(), "silent for over 600 ms"));
  CHECK(queue_stats_of(admin, "jobs").redelivered == 1);
}

namespace {

// After a stalled worker's late answer for a message now redelivered elsewhere: the message must still be
// in flight with the second worker (nothing settled by the late answer), and be settled by the second
// worker's ack alone; later messages flow to both workers, the second one handles none twice, none is lost.
void check_second_delivery_counts(ferry::admin& admin, const std::string& queue, const std::string& id,
                                  child_process& ferryd, child_process& first, child_process& second) {
  INFO("ferryd stderr:\n"
       << ferryd.err() << "\nfirst worker:\n"
       << first.out() << "\nsecond worker:\n"
       << second.out());
  CHECK(events_of(second, "handled").empty());  // still busy with it, so the checks below mean something
  ferry::queue_stats c = queue_stats_of(admin, queue);
  CHECK(c.depth == 1);
  CHECK(c.in_flight == 1);
  CHECK(c.acked == 0);

  REQUIRE(wait_for([&] { return depth_of(admin, queue) == 0; }, 10s, {&ferryd, &first, &second}));
  REQUIRE(events_of(second, "handled").size() == 1);
  CHECK(events_of(second, "handled").front().id == id);
  c = queue_stats_of(admin, queue);
  CHECK(c.acked == 1);
  CHECK(c.delivered == 2);  // no third delivery

  const produced more =
      produce_all(port_of(admin.forwarder()), queue, 10, {"--start", "1"}, {&ferryd, &first, &second});
  REQUIRE(wait_for([&] { return depth_of(admin, queue) == 0; }, 20s, {&ferryd, &first, &second}));
  std::map<std::string, int> second_times;
  std::set<std::string> seen;
  for (const auto& e : events_of(second, "handled")) {
    ++second_times[e.id];
    seen.insert(e.id);
  }
  for (const auto& e : events_of(first, "handled")) seen.insert(e.id);
  for (const auto& [sid, n] : second_times) {
    INFO("second worker handled " << sid << " " << n << " times");
    CHECK(n == 1);
  }
  for (const auto& [cid, payload] : more.confirmed) {
    INFO("message " << cid << " (payload " << payload << ") was never handled");
    CHECK(seen.count(cid) == 1);
  }
  c = queue_stats_of(admin, queue);
  CHECK(c.acked == 11);
  CHECK(c.depth == 0);
}

}  // namespace

TEST_CASE(
    "a worker stalled with SIGSTOP past its lease loses the message to another worker and its late ack is "
    "stale",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  // A lease far shorter than the heartbeat timeout: the stalled worker stays subscribed, its lease runs out.
  auto ferryd = start_ferryd(
      dir.path(), port, {"--lease-ms", "1000", "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "10000"});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  auto first = start_worker(port, "slow", {"--prefetch", "1", "--sleep-ms", "150", "--heartbeat-ms", "100"});
  const produced one = produce_all(port, "slow", 1, {}, {ferryd.get(), first.get()});
  const std::string id = one.confirmed.begin()->first;

  REQUIRE(wait_for([&] { return !events_of(*first, "begin").empty(); }, 10s, {ferryd.get(), first.get()}));
  first->kill(SIGSTOP);
  REQUIRE(wait_for([&] { return queue_stats_of(admin, "slow").expired >= 1; }, 10s, {ferryd.get()}));

  // The second worker takes its time, within its own lease, so the first one's late ack arrives meanwhile.
  auto second = start_worker(port, "slow", {"--prefetch", "1", "--sleep-ms", "600", "--heartbeat-ms", "100"});
  REQUIRE(wait_for([&] { return !events_of(*second, "begin").empty(); }, 10s, {ferryd.get(), second.get()}));
  CHECK(events_of(*second, "begin").front().id == id);
  CHECK(events_of(*second, "begin").front().attempt == 2);

  first->kill(SIGCONT);
  REQUIRE(wait_for([&] { return !events_of(*first, "handled").empty(); }, 10s,
                   {ferryd.get(), first.get(), second.get()}));
  REQUIRE(wait_for([&] { return queue_stats_of(admin, "slow").stale_acks >= 1; }, 10s,
                   {ferryd.get(), first.get(), second.get()}));
  check_second_delivery_counts(admin, "slow", id, *ferryd, *first, *second);
  CHECK(queue_stats_of(admin, "slow").stale_acks == 1);
}

TEST_CASE(
    "a worker stalled with SIGSTOP past the heartbeat timeout loses its message and its late ack settles "
    "nothing",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "600"});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  auto first =
      start_worker(port, "stalled", {"--prefetch", "1", "--sleep-ms", "200", "--heartbeat-ms", "100"});
  const produced one = produce_all(port, "stalled", 1, {}, {ferryd.get(), first.get()});
  const std::string id = one.confirmed.begin()->first;

  REQUIRE(wait_for([&] { return !events_of(*first, "begin").empty(); }, 10s, {ferryd.get(), first.get()}));
  first->kill(SIGSTOP);
  REQUIRE(wait_for([&] { return contains(ferryd->err(), "silent for over 600 ms"); }, 10s, {ferryd.get()}));

  auto second =
      start_worker(port, "stalled", {"--prefetch", "1", "--sleep-ms", "800", "--heartbeat-ms", "100"});
  REQUIRE(wait_for([&] { return !events_of(*second, "begin").empty(); }, 10s, {ferryd.get(), second.get()}));
  CHECK(events_of(*second, "begin").front().id == id);
  CHECK(events_of(*second, "begin").front().attempt == 2);

  // Its ack is answered "not consuming", and it subscribes again: a third CONSUME in ferryd's log.
  first->kill(SIGCONT);
  auto consumes = [&] {
    std::size_t n = 0;
    for (std::size_t at = ferryd->err().find("on queue stalled (prefetch"); at != std::string::npos;
         at = ferryd->err().find("on queue stalled (prefetch", at + 1))
      ++n;
    return n;
  };
  REQUIRE(wait_for([&] { return !events_of(*first, "handled").empty() && consumes() >= 3; }, 10s,
                   {ferryd.get(), first.get(), second.get()}));
  check_second_delivery_counts(admin, "stalled", id, *ferryd, *first, *second);
}

TEST_CASE("a ferryd paused past the heartbeat timeout reads what live consumers sent before judging them",
          "[ferryd][fault]") {
  // The consumer takes 10 messages and acks them while ferryd is stopped (SIGSTOP), pinging all along.
  // When ferryd runs again, the time it was stopped counts for nobody's silence and no lease: the acks
  // settle the messages; nothing is redelivered or dead-lettered (with --max-attempts 1 a redelivery would
  // be a dead letter of a message that was handled).
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port,
                             {"--heartbeat-ms", "200", "--heartbeat-timeout-ms", "1000", "--lease-ms", "2000",
                              "--max-attempts", "1"});
  const produced sent = produce_all(port, "jobs", 10, {}, {ferryd.get()});
  auto worker =
      start_worker(port, "jobs", {"--prefetch", "10", "--sleep-ms", "200", "--heartbeat-ms", "200"});
  REQUIRE(wait_for([&] { return !events_of(*worker, "begin").empty(); }, 10s, {ferryd.get(), worker.get()}));

  ferryd->kill(SIGSTOP);
  // 10 x 200 ms of work: every answer is sent while ferryd is stopped; 4 s is past the heartbeat timeout
  // and the lease.
  const bool all_handled =
      wait_for([&] { return events_of(*worker, "handled").size() == 10; }, 10s, {worker.get()});
  std::this_thread::sleep_for(4s - 2s);  // bounded: the stop lasts about 4 s in all
  ferryd->kill(SIGCONT);
  REQUIRE(all_handled);

  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  const bool settled =
      wait_for([&] { return depth_of(admin, "jobs") == 0; }, 10s, {ferryd.get(), worker.get()});
  INFO("ferryd stderr:\n" << ferryd->err() << "\nworker:\n" << worker->out());
  CHECK(settled);
  const ferry::queue_stats c = queue_stats_of(admin, "jobs");
  CHECK(c.acked == 10);
  CHECK(c.redelivered == 0);
  CHECK(c.expired == 0);
  CHECK(c.dead_lettered == 0);
  CHECK(depth_of(admin, "jobs.dlq") <= 0);  // -1: no dead-letter queue at all
  CHECK_FALSE(contains(ferryd->err(), "silent for over"));
  CHECK(contains(ferryd->err(), "ferryd was not running for"));
  check_each_handled_once(sent.confirmed, events_of(*worker, "handled"));
}
