// Redelivery delays through ferryd in this process: a NACK's delay frame (and the bad ones, refused with
// the message left in flight), ferry::retry_message in a consumer's handler, and the back-off schedule
// timed on real deliveries. Lease extension: EXTEND frames (good and bad) and a consumer that keeps a
// slow handler's message. Expiry: a message's ferry-ttl-ms and the queue's time to live, to the DLQ or
// dropped, and bad headers refused. The queue's own bookkeeping is in queue_test.cpp ("[backoff]",
// "[extend]").

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "detail/forwarder_protocol.hpp"
#include "ferry/admin.hpp"
#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "support/ferryd_client.hpp"
#include "support/running_forwarder.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using ferry::test::queue_stats_of;
using ferry::test::raw_client;
using ferry::test::running_forwarder;
using namespace std::chrono_literals;
namespace fwd = ferry::detail::fwd;

namespace {

using steady = std::chrono::steady_clock;

ferryd::forwarder_options patient() {
  ferryd::forwarder_options o;
  o.heartbeat_timeout = 60s;  // the raw consumers below do not ping
  return o;
}

void store(context& ctx, const running_forwarder& fwdr, const std::string& queue,
           const std::string& payload) {
  producer p(ctx, fwdr.endpoint);
  message m(queue, payload);
  REQUIRE(p.send(m) == send_status::ok);
  REQUIRE(p.flush(5s));
}

std::string delay_frame(std::uint64_t ms) {
  std::string out(8, '\0');
  fwd::put_u64(out.data(), ms);
  return out;
}

// The token of the single message in a DELIVER (protocol v1 frames).
std::string token_of(const std::vector<std::string>& deliver) {
  INFO(test::show_frames(deliver));
  REQUIRE(deliver.size() == 5);
  REQUIRE(deliver[0] == "DELIVER");
  return deliver[2];
}

}  // namespace

TEST_CASE("a NACK's delay frame holds the message back that long, and STATS tells when it is due",
          "[forwarder][backoff]") {
  running_forwarder fwdr(patient());
  context ctx;
  store(ctx, fwdr, "jobs", "later");
  raw_client w(fwdr.endpoint);
  w.send({"CONSUME", "jobs"});
  REQUIRE(w.receive().at(0) == "CONSUMING");
  const std::string token = token_of(w.receive());
  const auto nacked_at = steady::now();
  w.send({"NACK", "jobs", token, "dependency down", delay_frame(1500)});
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").delayed == 1; }, 5s));
  const queue_stats st = queue_stats_of(fwdr.endpoint, "jobs");
  CHECK(st.nacked == 1);
  CHECK(st.in_flight == 0);
  CHECK(st.depth == 1);
  CHECK(st.next_due_ms > 0);
  CHECK(st.next_due_ms <= 1500);

  const auto again = w.receive(10s);
  const auto waited = steady::now() - nacked_at;
  token_of(again);
  CHECK(waited >= 1500ms);
  CHECK(waited < 6s);  // due, then delivered on the next 100 ms tick: generous for a loaded machine
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").delayed == 0);
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").next_due_ms == 0);
}

TEST_CASE("a bad NACK delay is refused with bad_frames and the delivery stays in flight",
          "[forwarder][backoff]") {
  running_forwarder fwdr(patient());
  context ctx;
  store(ctx, fwdr, "jobs", "x");
  raw_client w(fwdr.endpoint);
  w.send({"CONSUME", "jobs"});
  REQUIRE(w.receive().at(0) == "CONSUMING");
  const std::string token = token_of(w.receive());
  struct bad {
    std::string what;
    std::vector<std::string> frames;
    std::string says;
  };
  const std::vector<bad> cases{
      {"a 4-byte delay", {"NACK", "jobs", token, "why", std::string(4, '\0')}, "8 bytes"},
      {"a delay over 24 h",
       {"NACK", "jobs", token, "why", delay_frame(fwd::max_nack_delay_ms + 1)},
       "at most"},
      {"a delay of 2^64-1 ms (a negative number sent unsigned)",
       {"NACK", "jobs", token, "why", delay_frame(~std::uint64_t{0})},
       "at most"},
      {"a REJECT with a delay", {"REJECT", "jobs", token, "why", delay_frame(10)}, "no delay"},
  };
  for (const auto& b : cases) {
    const auto reply = w.exchange(b.frames);
    INFO(b.what << ": " << test::show_frames(reply));
    REQUIRE(reply.size() == 3);
    CHECK(reply[0] == "ERROR");
    CHECK(reply[1] == "bad_frames");
    CHECK_THAT(reply[2], Catch::Contains(b.says));
  }
  const queue_stats st = queue_stats_of(fwdr.endpoint, "jobs");
  CHECK(st.in_flight == 1);  // nothing was applied
  CHECK(st.nacked == 0);
  CHECK(st.dead_lettered == 0);
  CHECK(st.rejected == 0);
  // The token is still good.
  w.send({"ACK", "jobs", token});
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").depth == 0; }, 5s));
}

TEST_CASE("retry_message in a handler redelivers after its delay, and a negative delay is refused",
          "[forwarder][backoff]") {
  CHECK_THROWS_AS(retry_message(-1ms, "x"), std::invalid_argument);
  CHECK_THROWS_AS(retry_message(25h, "x"), std::invalid_argument);
  CHECK(retry_message(0ms, "x").delay() == 0ms);

  running_forwarder fwdr;
  context ctx;
  store(ctx, fwdr, "jobs", "job");
  std::mutex mutex;
  std::vector<std::pair<std::uint32_t, steady::time_point>> seen;  // attempt, when
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message& m) {
    {
      std::lock_guard lock(mutex);
      seen.emplace_back(m.attempt(), steady::now());
    }
    if (m.attempt() == 1) throw retry_message(800ms, "rate limited upstream");
  });
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").acked == 1; }, 15s));
  std::lock_guard lock(mutex);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].first == 2);
  const auto gap = seen[1].second - seen[0].second;
  CHECK(gap >= 800ms);
  CHECK(gap < 6s);
  CHECK(c.stats().failed == 1);
}

TEST_CASE("the back-off schedule spaces a failing message's deliveries by attempt, then dead-letters it",
          "[forwarder][backoff]") {
  ferryd::forwarder_options o;
  o.queue.backoff = {300ms, 900ms};
  o.queue.max_attempts = 4;
  running_forwarder fwdr(o);
  context ctx;
  store(ctx, fwdr, "jobs", "poison");
  std::mutex mutex;
  std::vector<steady::time_point> at;
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message&) {
    {
      std::lock_guard lock(mutex);
      at.push_back(steady::now());
    }
    throw std::runtime_error("still failing");
  });
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").dead_lettered == 1; }, 20s));
  std::lock_guard lock(mutex);
  REQUIRE(at.size() == 4);
  // After attempt 1: 300 ms; after 2 and 3: 900 ms (the last step repeats). After 4: none, dead-lettered.
  const std::chrono::milliseconds want[] = {300ms, 900ms, 900ms};
  for (std::size_t i = 0; i < 3; ++i) {
    const auto gap = at[i + 1] - at[i];
    INFO("gap after attempt " << i + 1 << ": "
                              << std::chrono::duration_cast<std::chrono::milliseconds>(gap).count() << " ms");
    CHECK(gap >= want[i]);
    CHECK(gap < want[i] + 5s);
  }
}

// ---- lease extension (EXTEND) ------------------------------------------------------------------------

TEST_CASE("an EXTEND keeps a delivery past its lease, and bad EXTEND frames are refused",
          "[forwarder][extend]") {
  ferryd::forwarder_options o = patient();
  o.queue.lease = 600ms;
  running_forwarder fwdr(o);
  context ctx;
  store(ctx, fwdr, "jobs", "slow");
  raw_client w(fwdr.endpoint);
  w.send({"CONSUME", "jobs"});
  const auto consuming = w.receive();
  REQUIRE(consuming.at(0) == "CONSUMING");
  CHECK_THAT(consuming.at(2), Catch::Contains("max_lease_ms"));
  const std::string token = token_of(w.receive());

  struct bad {
    std::string what;
    std::vector<std::string> frames;
    std::string code;
  };
  const std::vector<bad> cases{
      {"no lease frame", {"EXTEND", "jobs", token}, "bad_frames"},
      {"a 7-byte token", {"EXTEND", "jobs", token.substr(1), delay_frame(1000)}, "bad_frames"},
      {"a 4-byte lease", {"EXTEND", "jobs", token, std::string(4, '\0')}, "bad_frames"},
      {"a lease over 24 h", {"EXTEND", "jobs", token, delay_frame(fwd::max_nack_delay_ms + 1)}, "bad_frames"},
      {"a queue it does not consume", {"EXTEND", "other", token, delay_frame(1000)}, "not_consuming"},
  };
  for (const auto& b : cases) {
    const auto reply = w.exchange(b.frames);
    INFO(b.what << ": " << test::show_frames(reply));
    REQUIRE(reply.size() == 3);
    CHECK(reply[0] == "ERROR");
    CHECK(reply[1] == b.code);
  }

  // Three seconds more from now: it outlives 1.5 s, two and a half of its 600 ms leases.
  const auto start = steady::now();
  w.send({"EXTEND", "jobs", token, delay_frame(3000)});
  std::this_thread::sleep_for(1500ms);
  queue_stats st = queue_stats_of(fwdr.endpoint, "jobs");
  if (steady::now() - start < 2900ms) {  // a stalled machine may let even the extended lease run out
    CHECK(st.in_flight == 1);
    CHECK(st.expired == 0);
  }
  CHECK(st.extended == 1);
  w.send({"ACK", "jobs", token});
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").depth == 0; }, 5s));
}

TEST_CASE("a consumer extends the lease of a slow handler's message, so it is delivered once",
          "[forwarder][extend]") {
  ferryd::forwarder_options o;
  o.queue.lease = 600ms;
  running_forwarder fwdr(o);
  context ctx;
  store(ctx, fwdr, "jobs", "two seconds of work");
  std::atomic<int> handled{0};
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message&) {
    ++handled;
    std::this_thread::sleep_for(2s);
  });
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").acked == 1; }, 15s));
  const queue_stats st = queue_stats_of(fwdr.endpoint, "jobs");
  CHECK(handled == 1);
  CHECK(st.expired == 0);
  CHECK(st.delivered == 1);
  CHECK(st.extended >= 2);  // 2 s held, a lease of 600 ms renewed every ~200-300 ms
}

TEST_CASE("without extension, or past --max-lease-ms, a slow handler's lease runs out",
          "[forwarder][extend]") {
  ferryd::forwarder_options o;
  o.queue.lease = 400ms;
  bool extend = true;
  SECTION("extend_leases off") {
    extend = false;
  }
  SECTION("max_lease of 1 s") {
    o.queue.max_lease = 1s;
  }
  running_forwarder fwdr(o);
  context ctx;
  store(ctx, fwdr, "jobs", "three seconds of work");
  consumer_options co;
  co.extend_leases = extend;
  co.threads = 1;
  std::atomic<int> handled{0};
  consumer c(
      ctx, fwdr.endpoint, "jobs",
      [&](message&) {
        if (++handled == 1) std::this_thread::sleep_for(3s);
      },
      co);
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").expired >= 1; }, 15s));
  REQUIRE(test::wait_until([&] { return queue_stats_of(fwdr.endpoint, "jobs").depth == 0; }, 15s));
  const queue_stats st = queue_stats_of(fwdr.endpoint, "jobs");
  if (extend)
    CHECK(st.extended >= 1);
  else
    CHECK(st.extended == 0);
}

// ---- expiry (time to live) ----------------------------------------------------------------------------

namespace {

// The payloads a consumer of `queue` handles within `window` (after the first, if any, arrives).
std::vector<std::string> handled_within(context& ctx, const running_forwarder& fwdr, const std::string& queue,
                                        std::size_t expect, std::chrono::milliseconds window) {
  std::mutex mutex;
  std::vector<std::string> seen;
  consumer c(ctx, fwdr.endpoint, queue, [&](message& m) {
    std::lock_guard lock(mutex);
    seen.emplace_back(m.payload());
  });
  (void)test::wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return seen.size() >= expect;
      },
      20s);
  (void)test::wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return seen.size() > expect;
      },
      window);
  std::lock_guard lock(mutex);
  return seen;
}

}  // namespace

namespace {

// The refusals a producer was sent.
class refusal_log {
 public:
  producer producer_for(context& ctx, const running_forwarder& fwdr) {
    return producer(ctx, fwdr.endpoint, {}, {}, [this](const refusal& r) {
      std::lock_guard lock(mutex_);
      refusals_.push_back(r);
    });
  }
  std::vector<refusal> taken() {
    std::lock_guard lock(mutex_);
    return refusals_;
  }

 private:
  std::mutex mutex_;
  std::vector<refusal> refusals_;
};

}  // namespace

TEST_CASE("a message past its ferry-ttl-ms is not delivered: it goes to the DLQ with reason expired",
          "[forwarder][expiry]") {
  running_forwarder fwdr;
  context ctx;
  {
    producer p(ctx, fwdr.endpoint);
    message short_lived("jobs", "stale");
    short_lived.set_ttl(150ms);
    message lasting("jobs", "fresh");
    lasting.set_ttl(60s);
    message plain("jobs", "plain");
    REQUIRE(p.send(short_lived) == send_status::ok);
    REQUIRE(p.send(lasting) == send_status::ok);
    REQUIRE(p.send(plain) == send_status::ok);
    REQUIRE(p.flush(5s));
  }
  std::this_thread::sleep_for(300ms);  // the time to live itself: nothing to wait for but the clock
  CHECK(handled_within(ctx, fwdr, "jobs", 2, 300ms) == std::vector<std::string>{"fresh", "plain"});
  admin a(ctx, fwdr.endpoint);
  REQUIRE(test::wait_until([&] { return a.dlq_list("jobs", 10).depth == 1; }, 10s));
  const dlq_listing dlq = a.dlq_list("jobs", 10);
  REQUIRE(dlq.messages.size() == 1);
  CHECK(dlq.messages[0].payload == "stale");
  CHECK(dlq.messages[0].headers.at("ferry-dead-letter-reason") ==
        "expired: its time to live of 150 ms passed");
  CHECK(dlq.messages[0].headers.at("ferry-attempts") == "0");
  const auto st = queue_stats_of(fwdr.endpoint, "jobs");
  CHECK(st.ttl_expired == 1);
  CHECK(st.depth == 0);
  // In the dead-letter queue it does not expire again; a replay gives it a fresh time to live.
  CHECK(queue_stats_of(fwdr.endpoint, "jobs.dlq").ttl_expired == 0);
  CHECK(a.dlq_replay("jobs", 10) == 1);
  CHECK(handled_within(ctx, fwdr, "jobs", 1, 100ms) == std::vector<std::string>{"stale"});
}

TEST_CASE("the queue's time to live drops expired messages with --expired drop, keyed ones in order",
          "[forwarder][expiry]") {
  ferryd::forwarder_options o;
  o.queue.message_ttl = 150ms;
  o.queue.drop_expired = true;
  running_forwarder fwdr(o);
  context ctx;
  {
    producer p(ctx, fwdr.endpoint);
    for (const char* payload : {"k1", "k2", "k3"}) {
      message m("jobs", payload);
      m.set_key("same");
      if (std::string_view(payload) == "k2") m.set_ttl(60s);  // its own time to live wins
      REQUIRE(p.send(m) == send_status::ok);
    }
    REQUIRE(p.flush(5s));
  }
  std::this_thread::sleep_for(300ms);
  CHECK(handled_within(ctx, fwdr, "jobs", 1, 300ms) == std::vector<std::string>{"k2"});
  const auto st = queue_stats_of(fwdr.endpoint, "jobs");
  CHECK(st.ttl_expired == 2);
  CHECK(st.depth == 0);
  CHECK(st.dead_lettered == 0);
  admin a(ctx, fwdr.endpoint);
  CHECK(a.dlq_list("jobs", 10).depth == 0);
  // A message younger than the queue's time to live is delivered.
  store(ctx, fwdr, "jobs", "young");
  CHECK(handled_within(ctx, fwdr, "jobs", 1, 100ms) == std::vector<std::string>{"young"});
}

TEST_CASE("a bad ferry-ttl-ms header is refused as malformed and not stored, and set_ttl checks its range",
          "[forwarder][expiry]") {
  running_forwarder fwdr;
  context ctx;
  refusal_log log;
  producer p = log.producer_for(ctx, fwdr);
  const std::vector<std::string> bad{"-5", "abc", "0", "315360000001", "", "12ms"};
  for (const auto& value : bad) {
    message m("jobs", "x");
    m.set_header("ferry-ttl-ms", value);
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(5s));
  const std::vector<refusal> refusals = log.taken();
  REQUIRE(refusals.size() == bad.size());
  for (const auto& r : refusals) {
    CHECK(r.code == "malformed");
    CHECK_THAT(r.text, Catch::Contains("header ferry-ttl-ms is '") &&
                           Catch::Contains("give whole milliseconds from 1 to 315360000000"));
  }
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").depth == 0);

  message m("jobs", "x");
  CHECK_THROWS_AS(m.set_ttl(0ms), ferry::error);
  CHECK_THROWS_AS(m.set_ttl(-1ms), ferry::error);
  CHECK_THROWS_AS(m.set_ttl(max_ttl + 1ms), ferry::error);
  m.set_ttl(max_ttl);
  CHECK(m.ttl() == max_ttl);
  CHECK(m.header("ferry-ttl-ms") == "315360000000");
}

// ---- delayed and scheduled messages -------------------------------------------------------------------

TEST_CASE("a delayed or scheduled message is confirmed when stored and delivered no earlier than its time",
          "[forwarder][delayed]") {
  running_forwarder fwdr;
  context ctx;
  using sys = std::chrono::system_clock;
  std::mutex mutex;
  std::vector<std::pair<std::string, sys::time_point>> got;
  std::vector<std::string> headers_of_a;
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message& m) {
    std::lock_guard lock(mutex);
    got.emplace_back(std::string(m.payload()), sys::now());
    if (m.payload() == "a")
      headers_of_a = {std::string(m.header("ferry-not-before")), std::string(m.header("ferry-delay-ms"))};
  });
  producer p(ctx, fwdr.endpoint);
  const auto sent = sys::now();
  message a("jobs", "a");
  a.set_delay(700ms);
  message b("jobs", "b");
  message s("jobs", "s");
  s.set_not_before(sent + 350ms);
  REQUIRE(p.send(a) == send_status::ok);
  REQUIRE(p.send(b) == send_status::ok);
  REQUIRE(p.send(s) == send_status::ok);
  REQUIRE(p.flush(5s));
  const auto confirmed = sys::now();
  REQUIRE(test::wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return got.size() >= 3;
      },
      10s));
  std::lock_guard lock(mutex);
  REQUIRE(got.size() == 3);
  // b passes both; s (350 ms) comes before a (700 ms); each no earlier than its time (1 ms of rounding).
  CHECK(got[0].first == "b");
  CHECK(got[1].first == "s");
  CHECK(got[2].first == "a");
  CHECK(got[1].second >= sent + 349ms);
  CHECK(got[2].second >= sent + 699ms);
  CHECK(confirmed < got[2].second);  // confirmed once stored, not once delivered
  // ferryd turned the delay into a not-before time on its clock.
  REQUIRE(headers_of_a.size() == 2);
  CHECK(headers_of_a[1].empty());
  const auto at = std::chrono::milliseconds(std::stoll(headers_of_a[0]));
  CHECK(at >= std::chrono::duration_cast<std::chrono::milliseconds>(sent.time_since_epoch()) + 699ms);
  CHECK(at <= std::chrono::duration_cast<std::chrono::milliseconds>(confirmed.time_since_epoch()) + 700ms);
}

TEST_CASE("a delayed message keeps its key: the next message of the key waits for it",
          "[forwarder][delayed]") {
  running_forwarder fwdr;
  context ctx;
  {
    producer p(ctx, fwdr.endpoint);
    message first("jobs", "first");
    first.set_key("order-7");
    first.set_delay(300ms);
    message second("jobs", "second");
    second.set_key("order-7");
    message other("jobs", "other");
    other.set_key("order-8");
    REQUIRE(p.send(first) == send_status::ok);
    REQUIRE(p.send(second) == send_status::ok);
    REQUIRE(p.send(other) == send_status::ok);
    REQUIRE(p.flush(5s));
  }
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").depth == 3);
  std::mutex mutex;
  std::vector<std::string> order;
  consumer c(ctx, fwdr.endpoint, "jobs", [&](message& m) {
    std::lock_guard lock(mutex);
    order.emplace_back(m.payload());
  });
  REQUIRE(test::wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return order.size() == 3;
      },
      10s));
  std::lock_guard lock(mutex);
  CHECK(order == std::vector<std::string>{"other", "first", "second"});
}

TEST_CASE("bad delays and not-before times are refused as malformed, and topics take neither",
          "[forwarder][delayed]") {
  running_forwarder fwdr;
  context ctx;
  refusal_log log;
  producer p = log.producer_for(ctx, fwdr);
  const auto in_two_years =
      std::chrono::duration_cast<std::chrono::milliseconds>(
          (std::chrono::system_clock::now() + std::chrono::hours(24 * 730)).time_since_epoch())
          .count();
  const std::vector<std::pair<std::string, std::string>> bad{
      {"ferry-delay-ms", "-1"},          {"ferry-delay-ms", "soon"},
      {"ferry-delay-ms", "31536000001"}, {"ferry-not-before", "-5"},
      {"ferry-not-before", "1e12"},      {"ferry-not-before", std::to_string(in_two_years)}};
  for (const auto& [name, value] : bad) {
    message m("jobs", "x");
    m.set_header(name, value);
    REQUIRE(p.send(m) == send_status::ok);
  }
  message on_topic("events", "x");
  on_topic.set_delay(10ms);
  REQUIRE(p.publish(on_topic) == send_status::ok);
  REQUIRE(p.flush(5s));
  const std::vector<refusal> refusals = log.taken();
  REQUIRE(refusals.size() == bad.size() + 1);
  for (std::size_t i = 0; i < bad.size(); ++i) {
    INFO(bad[i].first << ": " << bad[i].second << " -> " << refusals[i].text);
    CHECK(refusals[i].code == "malformed");
    CHECK_THAT(refusals[i].text, Catch::StartsWith("header " + bad[i].first + " is '"));
  }
  CHECK(refusals.back().code == "malformed");
  CHECK_THAT(refusals.back().text, Catch::Contains("are for queues"));
  CHECK(queue_stats_of(fwdr.endpoint, "jobs").depth == 0);

  message m("jobs", "x");
  CHECK_THROWS_AS(m.set_delay(-1ms), ferry::error);
  CHECK_THROWS_AS(m.set_delay(max_delay + 1ms), ferry::error);
  CHECK_THROWS_AS(m.set_not_before(std::chrono::system_clock::time_point(-1s)), ferry::error);
  m.set_delay(0ms);
  CHECK(m.delay() == 0ms);
}

TEST_CASE("thousands of scheduled messages read in one pass are each delivered no earlier than their time",
          "[forwarder][delayed]") {
  running_forwarder fwdr;
  context ctx;
  using sys = std::chrono::system_clock;
  constexpr int total = 20'000;
  std::mutex mutex;
  int handled = 0;
  int early = 0;
  consumer_options co;
  co.prefetch = 1024;
  consumer c(
      ctx, fwdr.endpoint, "jobs",
      [&](message& m) {
        const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(sys::now().time_since_epoch());
        std::lock_guard lock(mutex);
        if (now.count() < *m.not_before_ms()) ++early;
        ++handled;
      },
      co);
  REQUIRE(c.wait_ready(10s));
  // Due over half a second, starting once all are stored: ferryd's cursor reads them all in one dispatch.
  const auto first = sys::now() + 1500ms;
  {
    producer p(ctx, fwdr.endpoint);
    for (int i = 0; i < total; ++i) {
      message m("jobs", "x");
      m.set_not_before(first + std::chrono::microseconds(i * 25));
      REQUIRE(p.send(m) == send_status::ok);
    }
    REQUIRE(p.flush(10s));
  }
  REQUIRE(test::wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return handled == total;
      },
      30s));
  std::lock_guard lock(mutex);
  CHECK(early == 0);
}
