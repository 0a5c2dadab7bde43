#include <catch2/catch.hpp>

#include <map>
#include <thread>

#include "ferry/envelope.hpp"
#include "queue.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace ferry::ferryd;
using namespace std::chrono_literals;

namespace {

// A queue driven directly, without sockets: append, commit, dispatch, answer.
struct harness {
  test::temp_dir dir;
  queue_config config;
  std::unique_ptr<queue> q;
  std::map<std::string, message_id> ids;  // payload -> id
  steady::time_point now = steady::now();

  explicit harness(queue_config c = {}) : config(c) { reopen(); }

  void reopen() {
    q.reset();
    q = std::make_unique<queue>("jobs", 0, dir.path() / "jobs", config, std::uint64_t{7} << 40);
    recovery_report a, b;
    q->recover(a, b);
  }

  void put(const std::string& payload, const std::string& key = "") {
    message m("jobs", payload);
    m.set_key(key);
    ids[payload] = m.id();
    const zmq::message_t env = encode_envelope(m, envelope_form::storage);
    REQUIRE_FALSE(q->admit(m.id(), steady::now()).has_value());  // a new id
    q->append(m.id(), key_hash(key), env.to_string_view(), payload, unix_now_us());
  }

  void commit() {
    const std::string bytes = q->take_pending();
    const auto out = q->writer()->append(bytes);
    REQUIRE(out.error == 0);
    q->committed(out);
  }

  struct got {
    std::uint64_t token;
    std::string payload;
    std::uint32_t attempt;
  };
  // Dispatches and returns what each subscription received.
  std::map<std::string, std::vector<got>> dispatch() {
    q->dispatch(now);
    std::map<std::string, std::vector<got>> out;
    for (auto& [identity, sub] : q->subs()) {
      for (std::size_t i = 0; i < sub->out_spans.size(); ++i) {
        std::uint64_t token = 0;
        for (int b = 0; b < 8; ++b)
          token = (token << 8) | static_cast<unsigned char>(sub->out_tokens[8 * i + b]);
        const auto& span = sub->out_spans[i];
        const std::string_view entries = sub->out_entries;
        message m;
        REQUIRE(decode_envelope(entries.substr(span.begin, span.envelope), m) == decode_error::none);
        out[identity].push_back(
            {token, std::string(entries.substr(span.payload_at, span.payload)), m.attempt()});
      }
      sub->out_spans.clear();
      sub->out_entries.clear();
      sub->out_tokens.clear();
    }
    return out;
  }
};

std::vector<std::string> payloads(const std::vector<harness::got>& v) {
  std::vector<std::string> out;
  for (const auto& g : v) out.push_back(g.payload);
  return out;
}

}  // namespace

TEST_CASE("first deliveries leave in the order messages were stored", "[queue]") {
  harness h;
  for (int i = 0; i < 10; ++i) h.put("m" + std::to_string(i));
  h.commit();
  h.q->subscribe("w1", 100);
  const auto got = h.dispatch();
  REQUIRE(got.at("w1").size() == 10);
  for (int i = 0; i < 10; ++i)
    CHECK(got.at("w1")[static_cast<std::size_t>(i)].payload == "m" + std::to_string(i));
  CHECK(got.at("w1")[0].attempt == 1);
  CHECK(h.q->in_flight() == 10);
}

TEST_CASE("nothing is delivered before it is committed", "[queue]") {
  harness h;
  h.q->subscribe("w1", 10);
  h.put("a");
  CHECK(h.dispatch().empty());
  h.commit();
  CHECK(h.dispatch().at("w1").size() == 1);
}

TEST_CASE("credit limits deliveries and goes to the consumer with the most of it", "[queue]") {
  harness h;
  for (int i = 0; i < 10; ++i) h.put("m" + std::to_string(i));
  h.commit();
  h.q->subscribe("small", 1);
  h.q->subscribe("big", 5);
  auto got = h.dispatch();
  CHECK(got["small"].size() == 1);
  CHECK(got["big"].size() == 5);
  // An ack frees one credit, and only that consumer gets the next message.
  REQUIRE(h.q->ack("big", got["big"][0].token) == queue::answer::settled);
  got = h.dispatch();
  CHECK(got.count("small") == 0);
  REQUIRE(got["big"].size() == 1);
  CHECK(got["big"][0].payload == "m6");
}

TEST_CASE("messages with one key are never in flight together and keep their order", "[queue]") {
  harness h;
  // a1 b1 a2 c1 a3 b2
  for (auto [p, k] : std::vector<std::pair<std::string, std::string>>{
           {"a1", "A"}, {"b1", "B"}, {"a2", "A"}, {"c1", "C"}, {"a3", "A"}, {"b2", "B"}})
    h.put(p, k);
  h.commit();
  h.q->subscribe("w1", 100);
  h.q->subscribe("w2", 100);
  auto got = h.dispatch();
  std::vector<std::string> first;
  std::map<std::string, std::uint64_t> token_of;
  for (auto& [who, list] : got)
    for (auto& g : list) {
      first.push_back(g.payload);
      token_of[g.payload] = g.token;
    }
  std::sort(first.begin(), first.end());
  CHECK(first == std::vector<std::string>{"a1", "b1", "c1"});
  CHECK(h.q->parked() == 3);
  auto owner = [&](const std::string& payload) {
    for (auto& [who, list] : got)
      for (auto& g : list)
        if (g.payload == payload) return who;
    return std::string();
  };
  REQUIRE(h.q->ack(owner("a1"), token_of["a1"]) == queue::answer::settled);
  got = h.dispatch();
  std::vector<std::string> second;
  for (auto& [who, list] : got)
    for (auto& g : list) second.push_back(g.payload);
  CHECK(second == std::vector<std::string>{"a2"});
}

TEST_CASE("a nacked message comes back before newer ones, with its attempt counted", "[queue]") {
  harness h;
  for (int i = 0; i < 3; ++i) h.put("m" + std::to_string(i));
  h.commit();
  h.q->subscribe("w", 1);
  auto got = h.dispatch();
  REQUIRE(payloads(got["w"]) == std::vector<std::string>{"m0"});
  REQUIRE(h.q->nack("w", got["w"][0].token, "boom") == queue::answer::settled);
  got = h.dispatch();
  REQUIRE(payloads(got["w"]) == std::vector<std::string>{"m0"});
  CHECK(got["w"][0].attempt == 2);
  CHECK(h.q->counters().redelivered == 1);
}

TEST_CASE("an expired lease redelivers and the old token settles nothing", "[queue]") {
  queue_config c;
  c.lease = 50ms;
  harness h(c);
  h.put("m0");
  h.commit();
  h.q->subscribe("slow", 1);
  h.q->subscribe("fast", 1);
  auto got = h.dispatch();
  const std::string first_owner = got.count("slow") ? "slow" : "fast";
  const std::string other = first_owner == "slow" ? "fast" : "slow";
  const std::uint64_t old_token = got[first_owner][0].token;
  h.q->expire_leases(h.now + 100ms);
  CHECK(h.q->counters().expired == 1);
  got = h.dispatch();
  REQUIRE(got[other].size() == 1);  // the first owner's credit is still taken by the expired delivery
  CHECK(got[other][0].attempt == 2);
  CHECK(h.q->ack(first_owner, old_token) == queue::answer::stale);
  CHECK(h.q->depth() == 1);  // the stale ack settled nothing
  CHECK(h.q->ack(other, got[other][0].token) == queue::answer::settled);
  CHECK(h.q->depth() == 0);
}

TEST_CASE("a dead consumer's deliveries go to another, and a clean cancel does not count an attempt",
          "[queue]") {
  harness h;
  h.put("m0");
  h.put("m1");
  h.commit();
  h.q->subscribe("a", 10);
  auto got = h.dispatch();
  REQUIRE(got["a"].size() == 2);
  SECTION("heartbeat timeout") {
    h.q->unsubscribe("a", true);
    h.q->subscribe("b", 10);
    got = h.dispatch();
    REQUIRE(payloads(got["b"]) == std::vector<std::string>{"m0", "m1"});
    CHECK(got["b"][0].attempt == 2);
  }
  SECTION("cancel") {
    h.q->unsubscribe("a", false);
    h.q->subscribe("b", 10);
    got = h.dispatch();
    REQUIRE(got["b"].size() == 2);
    CHECK(got["b"][0].attempt == 1);
  }
}

TEST_CASE("after max attempts a message is handed over for dead-lettering", "[queue]") {
  queue_config c;
  c.max_attempts = 3;
  harness h(c);
  h.put("poison");
  h.commit();
  h.q->subscribe("w", 1);
  for (int i = 1; i <= 3; ++i) {
    auto got = h.dispatch();
    REQUIRE(got["w"].size() == 1);
    CHECK(got["w"][0].attempt == static_cast<std::uint32_t>(i));
    h.q->nack("w", got["w"][0].token, "attempt " + std::to_string(i) + " failed");
  }
  CHECK(h.dispatch().empty());
  auto dead = h.q->take_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].attempts == 3);
  CHECK_THAT(dead[0].reason, Catch::Contains("attempt 3 failed"));
  h.q->dead_lettered(dead[0].seq);
  CHECK(h.q->depth() == 0);
  CHECK(h.q->counters().dead_lettered == 1);
}

TEST_CASE("a restart keeps unsettled messages, attempt counts and the dedup window", "[queue]") {
  harness h;
  for (int i = 0; i < 5; ++i) h.put("m" + std::to_string(i));
  h.commit();
  h.q->subscribe("w", 10);
  auto got = h.dispatch();
  REQUIRE(got["w"].size() == 5);
  h.q->ack("w", got["w"][1].token);
  h.q->ack("w", got["w"][3].token);
  REQUIRE(h.q->state_journal().flush() == 0);
  h.reopen();
  CHECK(h.q->depth() == 3);
  CHECK(h.q->seen(h.ids["m1"], steady::now()));
  CHECK_FALSE(h.q->seen(message_id::generate(), steady::now()));
  h.q->subscribe("w", 10);
  got = h.dispatch();
  REQUIRE(payloads(got["w"]) == std::vector<std::string>{"m0", "m2", "m4"});
  for (const auto& g : got["w"]) CHECK(g.attempt == 2);
}

TEST_CASE("settled segments are deleted, so disk use follows the backlog", "[queue]") {
  queue_config c;
  c.segment_bytes = 2048;
  c.dedup.max_age = 1ms;  // nothing kept for the dedup window
  c.dedup_retain_bytes = 0;
  harness h(c);
  for (int i = 0; i < 100; ++i) h.put(std::string(100, 'x') + std::to_string(i));
  h.commit();
  const auto before = h.q->disk_bytes();
  h.q->subscribe("w", 1000);
  auto got = h.dispatch();
  for (const auto& g : got["w"]) REQUIRE(h.q->ack("w", g.token) == queue::answer::settled);
  std::this_thread::sleep_for(5ms);
  h.q->housekeeping(unix_now_us());
  CHECK(h.q->disk_bytes() < before / 4);  // only the active segment remains
  CHECK(h.q->depth() == 0);
  h.reopen();
  CHECK(h.q->depth() == 0);
}

TEST_CASE("queue_full is reported at max_messages", "[queue]") {
  queue_config c;
  c.max_messages = 3;
  harness h(c);
  CHECK_FALSE(h.q->full());
  h.put("a");
  h.put("b");
  h.put("c");
  CHECK(h.q->full());
  h.commit();
  CHECK(h.q->full());
}

TEST_CASE("a message whose last attempt dies with its consumer is dead-lettered without waiting for credit",
          "[queue]") {
  queue_config c;
  c.max_attempts = 1;
  harness h(c);
  h.put("fatal");
  h.commit();
  h.q->subscribe("w", 1);
  REQUIRE(h.dispatch()["w"].size() == 1);
  h.q->unsubscribe("w", true);  // heartbeat timeout; no consumer left
  auto dead = h.q->take_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].attempts == 1);
  CHECK_THAT(dead[0].reason, Catch::Contains("consumer went away"));
}

TEST_CASE("a queue only consumed from leaves nothing on disk", "[queue]") {
  test::temp_dir dir;
  queue q("typo", 0, dir.path() / "typo", {}, 0);
  recovery_report a, b;
  q.recover(a, b);
  q.subscribe("w", 1);
  q.dispatch(steady::now());
  q.housekeeping(unix_now_us());
  CHECK_FALSE(std::filesystem::exists(dir.path() / "typo"));
}

// ---- redelivery delays: a NACK's own, and the back-off schedule ---------------------------------------

TEST_CASE("a NACK with a delay holds its message back until it is due, and the message's key with it",
          "[queue][backoff]") {
  harness h;
  h.put("a1", "A");
  h.put("a2", "A");
  h.put("free");
  h.commit();
  h.q->subscribe("w", 10);
  auto got = h.dispatch();
  REQUIRE(payloads(got.at("w")) == std::vector<std::string>{"a1", "free"});  // a2 waits behind a1
  REQUIRE(h.q->nack("w", got.at("w")[0].token, "db down", 5s) == queue::answer::settled);
  CHECK(h.q->delayed() == 1);
  REQUIRE(h.q->next_due().has_value());
  CHECK(*h.q->next_due() > steady::now() + 4s);
  CHECK(h.dispatch().empty());  // not a1 (not due), not a2 (its key is still taken)
  h.q->release_due(steady::now() + 1s);
  CHECK(h.dispatch().empty());
  CHECK(h.q->depth() == 3);  // still stored and unsettled throughout

  h.q->release_due(steady::now() + 6s);
  CHECK(h.q->delayed() == 0);
  CHECK_FALSE(h.q->next_due().has_value());
  got = h.dispatch();
  REQUIRE(got.at("w").size() == 1);
  CHECK(got.at("w")[0].payload == "a1");
  CHECK(got.at("w")[0].attempt == 2);
  REQUIRE(h.q->ack("w", got.at("w")[0].token) == queue::answer::settled);
  got = h.dispatch();
  REQUIRE(got.at("w").size() == 1);
  CHECK(got.at("w")[0].payload == "a2");
}

TEST_CASE("the back-off schedule delays each redelivery by attempt, after NACKs and expired leases alike",
          "[queue][backoff]") {
  queue_config c;
  c.backoff = {1000ms, 10'000ms};
  c.max_attempts = 4;
  c.lease = 30s;
  harness h(c);
  h.put("m");
  h.commit();
  h.q->subscribe("w", 1);
  auto deliver = [&] {
    auto got = h.dispatch();
    REQUIRE(got.count("w") == 1);
    REQUIRE(got.at("w").size() == 1);
    return got.at("w")[0];
  };
  auto first = deliver();
  CHECK(first.attempt == 1);
  // Attempt 1 failed (NACK without a delay): the schedule's first step, 1 s.
  REQUIRE(h.q->nack("w", first.token, "timeout") == queue::answer::settled);
  REQUIRE(h.q->next_due().has_value());
  const auto due1 = *h.q->next_due();
  CHECK(due1 > steady::now() + 500ms);
  CHECK(due1 <= steady::now() + 1000ms);
  h.q->release_due(due1 - 1ms);
  CHECK(h.dispatch().empty());
  h.q->release_due(due1);
  auto second = deliver();
  CHECK(second.attempt == 2);

  // Attempt 2 times out: its lease expires at h.now + 30 s, and the second step, 10 s, starts from there.
  const auto expiry = h.now + 30s;
  h.q->expire_leases(expiry);
  CHECK(h.q->delayed() == 1);
  CHECK(*h.q->next_due() == expiry + 10s);
  h.q->release_due(expiry + 9s);
  CHECK(h.q->delayed() == 1);
  h.q->release_due(expiry + 10s);
  h.q->ack("w", second.token);  // the stale token frees its credit
  auto third = deliver();
  CHECK(third.attempt == 3);

  // Later attempts repeat the last step.
  REQUIRE(h.q->nack("w", third.token, "timeout") == queue::answer::settled);
  const auto due3 = *h.q->next_due();
  CHECK(due3 > steady::now() + 9s);
  h.q->release_due(due3);
  auto fourth = deliver();
  CHECK(fourth.attempt == 4);

  // The last attempt failed: no waiting, straight to the dead-letter queue.
  REQUIRE(h.q->nack("w", fourth.token, "timeout") == queue::answer::settled);
  CHECK(h.q->delayed() == 0);
  const auto dead = h.q->take_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK_THAT(dead[0].reason, Catch::Contains("4 attempts failed; last error: timeout"));
}

TEST_CASE("with backoff_nack_only an expired lease redelivers at once, and a clean cancel always does",
          "[queue][backoff]") {
  queue_config c;
  c.backoff = {60s};
  SECTION("backoff_nack_only") {
    c.backoff_nack_only = true;
    harness h(c);
    h.put("m");
    h.commit();
    h.q->subscribe("w", 2);
    REQUIRE(h.dispatch().at("w").size() == 1);
    h.q->expire_leases(h.now + c.lease);
    CHECK(h.q->delayed() == 0);
    const auto got = h.dispatch();
    REQUIRE(got.at("w").size() == 1);
    CHECK(got.at("w")[0].attempt == 2);
  }
  SECTION("a dead consumer's messages wait; a cancelled consumer's do not") {
    harness h(c);
    h.put("m");
    h.commit();
    h.q->subscribe("dead", 1);
    REQUIRE(h.dispatch().at("dead").size() == 1);
    h.q->unsubscribe("dead", true);  // heartbeat timeout: a failed attempt
    CHECK(h.q->delayed() == 1);
    h.q->release_due(steady::now() + 61s);
    h.q->subscribe("quitter", 1);
    REQUIRE(h.dispatch().at("quitter").size() == 1);
    h.q->unsubscribe("quitter", false);  // CANCEL: not an attempt, no wait
    CHECK(h.q->delayed() == 0);
    h.q->subscribe("next", 1);
    const auto got = h.dispatch();
    REQUIRE(got.at("next").size() == 1);
    CHECK(got.at("next")[0].attempt == 2);
  }
}

TEST_CASE("a delayed message can be purged, and it is listed while it waits", "[queue][backoff]") {
  harness h;
  h.put("k1", "K");
  h.put("k2", "K");
  h.commit();
  h.q->subscribe("w", 5);
  auto got = h.dispatch();
  REQUIRE(got.at("w").size() == 1);
  REQUIRE(h.q->nack("w", got.at("w")[0].token, "later", 1h) == queue::answer::settled);
  const auto listed = h.q->list(10);
  REQUIRE(listed.size() == 2);
  const std::uint64_t seq = listed[0].seq;
  REQUIRE(h.q->settle_waiting(seq, settle_reason::purged));
  CHECK(h.q->delayed() == 0);
  CHECK(h.q->depth() == 1);
  got = h.dispatch();  // its key is free again: k2 goes
  REQUIRE(got.at("w").size() == 1);
  CHECK(got.at("w")[0].payload == "k2");
}

// ---- lease extension (EXTEND) ------------------------------------------------------------------------

TEST_CASE("EXTEND moves a lease later, never past max_lease from the delivery and never earlier",
          "[queue][extend]") {
  queue_config c;
  c.lease = 1s;
  c.max_lease = 5s;
  harness h(c);
  h.put("long job");
  h.commit();
  h.q->subscribe("w", 1);
  h.q->subscribe("other", 1);
  auto got = h.dispatch();
  const std::string holder = got.count("w") ? "w" : "other";
  const std::uint64_t token = got.at(holder)[0].token;
  // Another connection cannot extend it.
  CHECK(h.q->extend(holder == "w" ? "other" : "w", token, 10s, h.now) == queue::answer::stale);
  // 3 s more from h.now + 900 ms: the lease now ends at h.now + 3.9 s instead of h.now + 1 s.
  CHECK(h.q->extend(holder, token, 3s, h.now + 900ms) == queue::answer::settled);
  h.q->expire_leases(h.now + 3800ms);
  CHECK(h.q->in_flight() == 1);
  // A shorter extension does not pull it earlier.
  CHECK(h.q->extend(holder, token, 100ms, h.now + 1s) == queue::answer::settled);
  h.q->expire_leases(h.now + 3800ms);
  CHECK(h.q->in_flight() == 1);
  // An hour more is capped at max_lease: h.now + 5 s.
  CHECK(h.q->extend(holder, token, 1h, h.now + 3s) == queue::answer::settled);
  h.q->expire_leases(h.now + 4900ms);
  CHECK(h.q->in_flight() == 1);
  h.q->expire_leases(h.now + 5s);
  CHECK(h.q->in_flight() == 0);
  CHECK(h.q->counters().expired == 1);
  CHECK(h.q->counters().extended == 3);
  // The expired token extends nothing.
  CHECK(h.q->extend(holder, token, 1s, h.now + 5s) == queue::answer::stale);
}
