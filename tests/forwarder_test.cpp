// ferryd in this process, through ferry's client classes and a raw DEALER: messages stored, confirmed (after
// the group commit's sync) and delivered, refusals, dead letters and their replay, consumers that stop or
// idle, what producer, consumer and ferryd log, and which queues outlive a restart. The wire protocol itself
// (malformed frames, batch limits, CONSUME options, protocol v2 blocks) is in forwarder_protocol_test.cpp.

#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "support/ferryd_client.hpp"
#include "support/log_capture.hpp"
#include "support/running_forwarder.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using ferry::test::envelope_of;
using ferry::test::queue_stats_of;
using ferry::test::raw_client;
using ferry::test::running_forwarder;
using namespace std::chrono_literals;

namespace {

// Sends one message with `payload` to `queue` through a producer of its own; requires ferryd's confirmation.
void store(context& ctx, const running_forwarder& fwdr, const std::string& queue,
           const std::string& payload) {
  producer p(ctx, fwdr.endpoint);
  message m(queue, payload);
  REQUIRE(p.send(m) == send_status::ok);
  REQUIRE(p.flush(5s));
}

}  // namespace

TEST_CASE("messages sent through ferryd reach a consumer with every field", "[forwarder]") {
  running_forwarder fwdr;
  context ctx;
  std::atomic<int> confirmed{0};
  producer p(ctx, fwdr.endpoint, {}, [&](const message_id&) { ++confirmed; });
  std::vector<message_id> sent;
  for (int i = 0; i < 200; ++i) {
    message m("orders", "order " + std::to_string(i));
    m.set_key("customer-" + std::to_string(i % 7));
    m.set_header("source", "test");
    sent.push_back(m.id());
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));
  CHECK(confirmed == 200);
  CHECK(p.stats().confirmed == 200);

  std::mutex mu;
  std::vector<message> got;
  consumer c(ctx, fwdr.endpoint, "orders",
             [&](message& m) {
               std::lock_guard lock(mu);
               got.push_back(std::move(m));
             },
             {.threads = 3});
  REQUIRE(test::wait_until([&] {
    std::lock_guard lock(mu);
    return got.size() == 200;
  }));
  c.stop();
  std::set<message_id> ids;
  for (const auto& m : got) {
    ids.insert(m.id());
    CHECK(m.topic() == "orders");
    CHECK(m.header("source") == "test");
    CHECK(m.attempt() == 1);
    CHECK(m.key().rfind("customer-", 0) == 0);
  }
  CHECK(ids == std::set<message_id>(sent.begin(), sent.end()));
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "orders").depth == 0; }));
  CHECK(queue_stats_of(fwdr.endpoint, "orders").acked == 200);
}

TEST_CASE("a resend with the same id is confirmed again and stored once", "[forwarder]") {
  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  message m("q", "once");
  const std::string env = envelope_of(m);
  c.send({"SEND", "q", env, "once"});
  auto reply = c.receive();
  REQUIRE(reply.size() == 2);
  CHECK(reply[0] == "CONFIRM");
  CHECK(reply[1] == std::string(m.id().view()));
  c.send({"SEND", "q", env, "once"});
  reply = c.receive();
  REQUIRE(reply.size() == 2);
  CHECK(reply[0] == "CONFIRM");
  CHECK(queue_stats_of(fwdr.endpoint, "q").depth == 1);
  CHECK(queue_stats_of(fwdr.endpoint, "q").deduplicated == 1);

  SECTION("and after a restart") {
    fwdr.stop();
    fwdr.start();
    raw_client again(fwdr.endpoint);
    again.send({"SEND", "q", env, "once"});
    reply = again.receive();
    REQUIRE(reply.size() == 2);
    CHECK(reply[0] == "CONFIRM");
    CHECK(queue_stats_of(fwdr.endpoint, "q").depth == 1);
  }
}

TEST_CASE("a confirm waits for the group commit's sync", "[forwarder]") {
  ferryd::forwarder_options o;
  o.sync_delay = 300ms;  // test hook: the commit thread sleeps before fdatasync
  running_forwarder fwdr(o);
  raw_client c(fwdr.endpoint);
  message m("q", "durable");
  const auto t0 = std::chrono::steady_clock::now();
  c.send({"SEND", "q", envelope_of(m), "durable"});
  const auto reply = c.receive();
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE(reply.size() == 2);
  CHECK(reply[0] == "CONFIRM");
  CHECK(waited >= 300ms);
  // And the record is in the segment file by then.
  std::string contents;
  for (const auto& e : std::filesystem::recursive_directory_iterator(fwdr.dir.path()))
    if (e.path().extension() == ".seg") {
      std::ifstream f(e.path(), std::ios::binary);
      contents.assign(std::istreambuf_iterator<char>(f), {});
    }
  CHECK(contents.find(std::string(m.id().view())) != std::string::npos);
}

TEST_CASE("many producers share group commits", "[forwarder]") {
  running_forwarder fwdr;
  context ctx;
  constexpr int producers = 4, per_producer = 2000;
  std::vector<std::thread> threads;
  std::atomic<int> confirmed{0};
  for (int i = 0; i < producers; ++i)
    threads.emplace_back([&] {
      producer p(ctx, fwdr.endpoint, {}, [&](const message_id&) { ++confirmed; });
      for (int n = 0; n < per_producer; ++n) {
        message m("shared", std::string(100, 'x'));
        REQUIRE(p.send(m) == send_status::ok);
      }
      REQUIRE(p.flush(30s));
    });
  for (auto& t : threads) t.join();
  CHECK(confirmed == producers * per_producer);
  admin a(ctx, fwdr.endpoint);
  const forwarder_stats st = a.stats();
  CHECK(st.commits < static_cast<std::uint64_t>(producers * per_producer / 10));  // many messages per fsync
  // Every commit synced its segment: the sync count and the time spent in them are measured.
  CHECK(st.fsyncs >= st.commits);
  CHECK(st.fsync_seconds > 0.0);
  CHECK(st.fsync_seconds < 60.0);
}

TEST_CASE("refusals are explicit: bad queue, too large, queue full", "[forwarder]") {
  ferryd::forwarder_options o;
  o.max_message_bytes = 1000;
  o.queue.max_messages = 2;
  running_forwarder fwdr(o);
  raw_client c(fwdr.endpoint);
  auto send_one = [&](const std::string& queue, const std::string& payload) {
    message m(queue, payload);
    c.send({"SEND", queue, envelope_of(m), payload});
    return c.receive();
  };
  auto r = send_one("bad/name", "x");
  REQUIRE(r.size() == 4);
  CHECK(r[0] == "REFUSE");
  CHECK(r[2] == "bad_queue");
  r = send_one("q.dlq", "x");
  CHECK(r[2] == "bad_queue");
  r = send_one("q", std::string(1001, 'x'));
  CHECK(r[2] == "too_large");
  CHECK(send_one("q", "1")[0] == "CONFIRM");
  CHECK(send_one("q", "2")[0] == "CONFIRM");
  r = send_one("q", "3");
  CHECK(r[0] == "REFUSE");
  CHECK(r[2] == "queue_full");

  context ctx;
  std::vector<refusal> refused;
  std::mutex mu;
  producer p(ctx, fwdr.endpoint, {}, {}, [&](const refusal& x) {
    std::lock_guard lock(mu);
    refused.push_back(x);
  });
  message m("q", "4");
  REQUIRE(p.send(m) == send_status::ok);
  REQUIRE(p.flush(5s));
  std::lock_guard lock(mu);
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].code == "queue_full");
  CHECK(p.stats().refused == 1);
}

TEST_CASE("a handler that throws gets its message again, then it is dead-lettered", "[forwarder]") {
  ferryd::forwarder_options o;
  o.queue.max_attempts = 3;
  running_forwarder fwdr(o);
  context ctx;
  producer p(ctx, fwdr.endpoint);
  message poison("jobs", "poison");
  message fine("jobs", "fine");
  REQUIRE(p.send(poison) == send_status::ok);
  REQUIRE(p.send(fine) == send_status::ok);
  REQUIRE(p.flush(5s));
  std::atomic<int> poison_attempts{0}, fine_handled{0};
  std::atomic<std::uint32_t> last_attempt{0}, replayed_attempt{0};
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message& m) {
    if (m.payload() == "poison") {
      last_attempt = m.attempt();
      if (poison_attempts == 3) replayed_attempt = m.attempt();  // the first delivery after the replay
      ++poison_attempts;
      throw std::runtime_error("cannot parse order");
    }
    ++fine_handled;
  });
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").dead_lettered == 1; }));
  CHECK(poison_attempts == 3);
  CHECK(last_attempt == 3);
  CHECK(fine_handled == 1);
  CHECK(c.stats().failed == 3);
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs.dlq").depth == 1; }));

  admin a(ctx, fwdr.endpoint);
  const auto messages = a.dlq_list("jobs").messages;
  REQUIRE(messages.size() == 1);
  const auto& headers = messages[0].headers;
  CHECK_THAT(headers.at("ferry-dead-letter-reason"), Catch::Contains("cannot parse order"));
  CHECK(headers.at("ferry-attempts") == "3");
  CHECK(messages[0].id == poison.id());

  // Replay puts it back on the queue with a fresh attempt count.
  CHECK(a.dlq_replay("jobs") == 1);
  REQUIRE(test::wait_until([&] { return poison_attempts >= 4; }));
  CHECK(replayed_attempt == 1);
}

TEST_CASE("reject_message dead-letters at once", "[forwarder]") {
  running_forwarder fwdr;
  context ctx;
  store(ctx, fwdr, "jobs", "unsupported");
  std::atomic<int> calls{0};
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message&) {
    ++calls;
    throw reject_message("unsupported order type");
  });
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").dead_lettered == 1; }));
  CHECK(calls == 1);
}

TEST_CASE("a consumer that stops hands unstarted messages back without an attempt", "[forwarder]") {
  running_forwarder fwdr;
  context ctx;
  producer p(ctx, fwdr.endpoint);
  for (int i = 0; i < 20; ++i) {
    message m("jobs", std::to_string(i));
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(5s));
  std::atomic<int> first{0};
  {
    consumer c(ctx, fwdr.endpoint, "jobs",
               [&](message&) {
                 ++first;
                 std::this_thread::sleep_for(50ms);
               },
               {.prefetch = 10});
    REQUIRE(test::wait_until([&] { return first >= 2; }));
  }  // graceful stop
  std::mutex mu;
  std::vector<std::uint32_t> attempts;
  consumer c2(ctx, fwdr.endpoint, "jobs",
              [&](message& m) {
                std::lock_guard lock(mu);
                attempts.push_back(m.attempt());
              },
              {.prefetch = 10});
  REQUIRE(test::wait_until([&] {
    std::lock_guard lock(mu);
    return static_cast<int>(attempts.size()) + first == 20;
  }));
  std::lock_guard lock(mu);
  for (auto a : attempts) CHECK(a == 1);
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").depth == 0);
}

TEST_CASE("a message dead-lettered, replayed and dead-lettered again is in the DLQ again", "[forwarder]") {
  running_forwarder fwdr;
  context ctx;
  store(ctx, fwdr, "jobs", "twice");
  std::atomic<int> calls{0};
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message&) {
    ++calls;
    throw reject_message("no");
  });
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs.dlq").depth == 1; }));
  admin a(ctx, fwdr.endpoint);
  CHECK(a.dlq_replay("jobs") == 1);
  REQUIRE(test::wait_until(
      [&] { return calls == 2 && queue_stats_of(fwdr.endpoint, "jobs").dead_lettered == 2; }));
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs.dlq").depth == 1; }));
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").depth == 0);
}

TEST_CASE("an idle consumer pings at ferryd's shorter heartbeat and is never declared dead", "[forwarder]") {
  ferryd::forwarder_options o;
  o.heartbeat_interval = 100ms;
  o.heartbeat_timeout = 500ms;
  running_forwarder fwdr(o);
  context ctx;
  consumer c(ctx, fwdr.endpoint, "idle", [](message&) {});  // its own heartbeat_interval is 1000 ms
  REQUIRE(c.wait_ready(10s));
  // Six heartbeat timeouts with nothing to deliver: pinging every second, it would have been declared
  // dead and would have subscribed again several times by now.
  std::this_thread::sleep_for(3s);
  CHECK(c.stats().resubscribed == 0);
  CHECK(queue_stats_of(fwdr.endpoint, "idle").consumers == 1);
}

TEST_CASE("a consumer logs what its handler threw, a few lines a second however many fail", "[forwarder]") {
  test::log_capture log;
  running_forwarder fwdr;
  context ctx;
  producer p(ctx, fwdr.endpoint);
  message first("failing", "x");
  const message_id first_id = first.id();
  REQUIRE(p.send(first) == send_status::ok);
  REQUIRE(p.flush(10s));
  consumer c(ctx, fwdr.endpoint, "failing", [](message&) { throw std::runtime_error("boom"); });
  REQUIRE(test::wait_until([&] { return c.stats().failed >= 1; }));
  REQUIRE(test::wait_until([&] { return log.count("handler threw") >= 1; }));
  CHECK(log.count("consumer: handler threw on message " + first_id.to_hex() +
                  " of queue failing (attempt 1): boom; it is nacked") == 1);

  for (int i = 0; i < 200; ++i) {
    message m("failing", "x");
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));
  REQUIRE(test::wait_until([&] { return c.stats().failed >= 500; }));
  CHECK(log.count("handler threw") < c.stats().failed / 4);  // 10 a second, the rest held back
  // The next line let through, in a later second, says how many were held back.
  std::this_thread::sleep_for(1100ms);
  message later("failing", "x");
  REQUIRE(p.send(later) == send_status::ok);
  CHECK(test::wait_until([&] { return log.count("similar messages suppressed)") >= 1; }));
  c.stop();
}

TEST_CASE("producer::send refuses a queue name ferryd would refuse, at once, with invalid", "[forwarder]") {
  running_forwarder fwdr;
  context ctx;
  producer p(ctx, fwdr.endpoint);
  for (const std::string& name :
       std::vector<std::string>{"bad/name", "", ".hidden", "jobs.dlq", std::string(201, 'q')}) {
    INFO("queue '" << name << "'");
    message m(name, "payload");
    CHECK(p.send(m) == send_status::invalid);
    CHECK(m.payload() == "payload");  // still the caller's
    if (name != "jobs.dlq")           // dead letters may be consumed, never sent
      CHECK_THROWS_AS(consumer(ctx, fwdr.endpoint, name, [](message&) {}), ferry::error);
  }
  CHECK(p.stats().sent == 0);
  message ok("good.name-1_x", "payload");
  CHECK(p.send(ok) == send_status::ok);
  CHECK(p.flush(10s));
}

TEST_CASE("a producer destroyed with unconfirmed messages logs how many it abandons", "[forwarder]") {
  test::log_capture log;
  const std::string nobody = test::free_tcp_endpoint();
  {
    context ctx;
    producer p(ctx, nobody);
    for (int i = 0; i < 3; ++i) {
      message m("jobs", "x");
      REQUIRE(p.send(m) == send_status::ok);
    }
    CHECK(p.stats().in_flight == 3);
  }
  CHECK(log.count("producer: destroyed with 3 message(s) not confirmed by ferryd at " + nobody +
                  "; they are abandoned") == 1);
}

TEST_CASE("ferryd's log line for a refused message names its queue", "[forwarder]") {
  test::log_capture log;
  ferryd::forwarder_options o;
  o.max_message_bytes = 100;
  running_forwarder fwdr(o);
  context ctx;
  std::atomic<int> refused{0};
  producer p(ctx, fwdr.endpoint, {}, {}, [&](const refusal&) { ++refused; });
  message big("big", std::string(101, 'x'));
  const message_id id = big.id();
  REQUIRE(p.send(big) == send_status::ok);
  REQUIRE(p.flush(10s));
  CHECK(refused == 1);
  CHECK(log.count("queue big: refused message " + id.to_hex() + ": too_large: ") == 1);
}

TEST_CASE("a queue only ever consumed from lives until ferryd restarts, one that held messages is kept",
          "[forwarder]") {
  // docs/operations.md (Data directory) and docs/protocol.md (Queue names) say exactly this.
  running_forwarder fwdr;
  context ctx;
  store(ctx, fwdr, "kept", "x");
  for (const std::string queue : {"watched", "kept"}) {
    std::atomic<int> handled{0};
    consumer c(ctx, fwdr.endpoint, queue, [&](message&) { ++handled; });
    REQUIRE(c.wait_ready(10s));
    CHECK(queue_stats_of(fwdr.endpoint, queue).consumers == 1);
    if (queue == "kept")
      REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, queue).depth == 0; }));
  }
  {
    context actx;
    admin a(actx, fwdr.endpoint);
    const forwarder_stats st = a.stats();
    CHECK(st.queues.count("watched") == 1);  // no consumer left, still listed while ferryd runs
    CHECK(st.queues.count("kept") == 1);
  }
  CHECK_FALSE(std::filesystem::exists(fwdr.dir.path() / "queues" / "watched"));

  fwdr.stop();
  fwdr.start();
  context actx;
  admin a(actx, fwdr.endpoint);
  const forwarder_stats st = a.stats();
  CHECK(st.queues.count("watched") == 0);
  REQUIRE(st.queues.count("kept") == 1);
  CHECK(st.queues.at("kept").depth == 0);
}
