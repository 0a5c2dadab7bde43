// Fault tests for ferryd: ferryd killed with SIGKILL or stopped with SIGTERM under load, then restarted: no
// confirmed message is lost, a resend is stored once, and a worker consuming through the restarts handles
// each message once.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "support/ferryd_fault_support.hpp"

using namespace std::chrono_literals;
using namespace ferry::test;

TEST_CASE("ferryd killed with SIGKILL under load loses no confirmed message and stores each resend once",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--segment-mb", "1"};
  const int total = 3000;
  auto ferryd = start_ferryd(dir.path(), port, flags);
  auto producer = start_producer(port, "load", total, {"--rate", "1500", "--payload-bytes", "500"});
  REQUIRE(wait_for([&] { return confirmed_count(*producer) >= 500; }, 20s, {producer.get(), ferryd.get()}));

  ferryd->kill(SIGKILL);
  REQUIRE(wait_exit(*ferryd, 10s, {producer.get()}).value_or(-1) == 128 + SIGKILL);
  const std::size_t confirmed_before_kill = confirmed_count(*producer);
  ferryd = start_ferryd(dir.path(), port, flags);

  // The producer resends what was unconfirmed, with the same ids, and finishes.
  const auto code = wait_exit(*producer, 60s, {ferryd.get()});
  INFO("producer stderr:\n" << producer->err() << "\nferryd stderr:\n" << ferryd->err());
  REQUIRE(code.value_or(-1) == 0);
  const produced sent = outcome_of(*producer);
  REQUIRE(sent.confirmed.size() == total);
  CHECK(confirmed_before_kill < static_cast<std::size_t>(total));  // the kill came during the load

  check_each_handled_once(sent.confirmed, drain(port, "load", {ferryd.get()}));
}

TEST_CASE("a worker consuming through three SIGKILL restarts of ferryd runs its handler once per message",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--segment-mb",           "1",   "--heartbeat-ms", "100",
                                       "--heartbeat-timeout-ms", "1000"};
  const int total = 3000;
  auto ferryd = start_ferryd(dir.path(), port, flags);
  // Consumer-side dedup on (the default): acks lost with a killed ferryd bring redeliveries it must absorb.
  auto worker = start_worker(port, "busy", {"--threads", "2", "--sleep-ms", "1", "--heartbeat-ms", "100"});
  auto producer = start_producer(port, "busy", total, {"--rate", "1000", "--payload-bytes", "300"});
  kill_while_handling(ferryd, dir.path(), port, flags, *worker, *producer, 3, 600);
  const produced sent = finished(*producer, total, {ferryd.get(), worker.get()});

  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  const bool empty =
      wait_for([&] { return depth_of(admin, "busy") == 0; }, 30s, {ferryd.get(), worker.get()});
  INFO("ferryd stderr:\n" << ferryd->err() << "\nworker stderr:\n" << worker->err());
  CHECK(empty);
  check_each_handled_once(sent.confirmed, events_of(*worker, "handled"));
}

TEST_CASE(
    "a resend of a confirmed message after a SIGKILL restart of ferryd is confirmed and not stored again",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port);
  ferry::message m("once", "the only copy");
  const std::vector<std::string> send{"SEND", "once", envelope_of(m), "the only copy"};
  {
    raw_client producer(endpoint(port));
    const auto reply = producer.exchange(send);
    INFO("reply: " << show_frames(reply));
    REQUIRE(!reply.empty());
    REQUIRE(reply[0] == "CONFIRM");
    CHECK(reply[1] == std::string(m.id().view()));
  }
  ferryd->kill(SIGKILL);
  REQUIRE(ferryd->wait(10s).value_or(-1) == 128 + SIGKILL);
  ferryd = start_ferryd(dir.path(), port);

  raw_client producer(endpoint(port));
  const auto reply = producer.exchange(send);
  INFO("reply: " << show_frames(reply) << "\nferryd stderr:\n" << ferryd->err());
  REQUIRE(!reply.empty());
  REQUIRE(reply[0] == "CONFIRM");
  CHECK(reply[1] == std::string(m.id().view()));
  ferry::queue_stats c = queue_stats_of(endpoint(port), "once");
  CHECK(c.depth == 1);
  CHECK(c.deduplicated == 1);

  const auto handled = drain(port, "once", {ferryd.get()});
  REQUIRE(handled.size() == 1);
  CHECK(handled[0].id == m.id().to_hex());
}

TEST_CASE("ferryd stopped with SIGTERM under load exits 0 and keeps every message it confirmed",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--segment-mb", "1"};
  const int total = 3000;
  auto ferryd = start_ferryd(dir.path(), port, flags);
  auto producer = start_producer(port, "term", total, {"--rate", "1500", "--payload-bytes", "500"});
  REQUIRE(wait_for([&] { return confirmed_count(*producer) >= 500; }, 20s, {producer.get(), ferryd.get()}));

  ferryd->kill(SIGTERM);
  const auto code = wait_exit(*ferryd, 15s, {producer.get()});
  {
    INFO("ferryd stderr:\n" << ferryd->err());
    CHECK(code.value_or(-1) == 0);
    CHECK(contains(ferryd->err(), "received SIGTERM, shutting down"));
    CHECK(contains(ferryd->err(), "ferryd stopped"));
  }
  if (!code) ferryd->kill(SIGKILL);
  (void)wait_exit(*ferryd, 10s, {producer.get()});
  const produced at_stop = outcome_of(*producer);
  CHECK(at_stop.confirmed.size() < static_cast<std::size_t>(total));  // SIGTERM came during the load

  ferryd = start_ferryd(dir.path(), port, flags);
  const auto producer_code = wait_exit(*producer, 60s, {ferryd.get()});
  INFO("producer stderr:\n" << producer->err());
  REQUIRE(producer_code.value_or(-1) == 0);
  const produced sent = outcome_of(*producer);
  REQUIRE(sent.confirmed.size() == total);
  check_each_handled_once(sent.confirmed, drain(port, "term", {ferryd.get()}));
}

TEST_CASE("a delayed message survives kill -9 of ferryd and is delivered once, no earlier than its time",
          "[ferryd][fault][delayed]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {});
  ferry::context ctx;
  using sys = std::chrono::system_clock;
  const auto sent = sys::now();
  {
    ferry::producer p(ctx, endpoint(port));
    ferry::message m("later", "wake up");
    m.set_delay(2500ms);
    REQUIRE(p.send(m) == ferry::send_status::ok);
    REQUIRE(p.flush(10s));  // confirmed: on disk
  }
  ferryd->kill(SIGKILL);
  REQUIRE(wait_exit(*ferryd, 10s, {}).value_or(-1) == 128 + SIGKILL);
  ferryd = start_ferryd(dir.path(), port, {});

  std::mutex mutex;
  std::vector<sys::time_point> at;
  ferry::consumer c(ctx, endpoint(port), "later", [&](ferry::message&) {
    std::lock_guard lock(mutex);
    at.push_back(sys::now());
  });
  REQUIRE(wait_for(
      [&] {
        std::lock_guard lock(mutex);
        return !at.empty();
      },
      20s, {ferryd.get()}));
  (void)wait_for(
      [&] {
        std::lock_guard lock(mutex);
        return at.size() > 1;
      },
      500ms, {ferryd.get()});
  std::lock_guard lock(mutex);
  CHECK(at.size() == 1);
  CHECK(at[0] >= sent + 2499ms);
}
