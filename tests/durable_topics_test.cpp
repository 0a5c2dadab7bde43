// Durable topics in ferryd, in this process, through ferry's producer (publish) and consumer
// (topic_subscription) and a raw DEALER: fan-out to several subscriptions, sequence numbers, resuming a
// durable subscription (after a stop and a restart of ferryd), a group of consumers sharing one name,
// replay from the start, a sequence number or a time, retention and the start before the retained range,
// ephemeral subscriptions, and malformed SUBSCRIBEs. Kill -9 of the ferryd program is in
// cli_durable_topics_test.cpp.

#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

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

namespace {

// Publishes `payloads` to `topic`, each confirmed.
void publish_all(context& ctx, const running_forwarder& fwdr, const std::string& topic,
                 const std::vector<std::string>& payloads) {
  producer p(ctx, fwdr.endpoint);
  for (const auto& body : payloads) {
    message m(topic, body);
    REQUIRE(p.publish(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));
  CHECK(p.stats().confirmed == payloads.size());
}

std::vector<std::string> numbered(const std::string& prefix, int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// What one subscription's handler saw, in handling order.
struct seen {
  std::mutex mu;
  std::vector<std::pair<std::uint64_t, std::string>> got;  // sequence, payload
  void add(const message& m) {
    std::lock_guard lock(mu);
    got.emplace_back(m.sequence(), std::string(m.payload()));
  }
  std::size_t size() {
    std::lock_guard lock(mu);
    return got.size();
  }
  std::vector<std::uint64_t> sequences() {
    std::lock_guard lock(mu);
    std::vector<std::uint64_t> out;
    for (const auto& [s, p] : got) out.push_back(s);
    return out;
  }
};

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

std::unique_ptr<consumer> subscribe(context& ctx, const running_forwarder& fwdr, topic_subscription sub,
                                    seen& into, consumer_options o = {}) {
  auto c = std::make_unique<consumer>(
      ctx, fwdr.endpoint, std::move(sub), [&into](message& m) { into.add(m); }, o);
  REQUIRE(c->wait_ready(10s));
  return c;
}

}  // namespace

TEST_CASE("every durable subscription of a topic gets every message once, in order, with its sequence number",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  seen billing, audit;
  auto a = subscribe(ctx, fwdr, {"events", "billing", start_position::first()}, billing);
  auto b = subscribe(ctx, fwdr, {"events", "audit", start_position::first()}, audit);
  publish_all(ctx, fwdr, "events", numbered("e", 0, 300));
  REQUIRE(test::wait_until([&] { return billing.size() == 300 && audit.size() == 300; }, 10s));
  a->stop();
  b->stop();
  CHECK(billing.sequences() == range(1, 300));
  CHECK(audit.sequences() == range(1, 300));
  CHECK(billing.got.front().second == "e0");
  CHECK(audit.got.back().second == "e299");

  admin adm(ctx, fwdr.endpoint);
  const forwarder_stats st = adm.stats();
  REQUIRE(st.topics.count("events") == 1);
  const topic_stats& t = st.topics.at("events");
  CHECK(t.first_seq == 1);
  CHECK(t.last_seq == 300);
  CHECK(t.messages == 300);
  CHECK(t.published == 300);
  CHECK(t.subscriptions == 2);
  CHECK(t.disk_bytes > 0);
  for (const char* name : {"events@billing", "events@audit"}) {
    INFO(name);
    REQUIRE(st.queues.count(name) == 1);
    CHECK(st.queues.at(name).depth == 0);
    CHECK(st.queues.at(name).acked == 300);
    CHECK(st.queues.at(name).position == 301);
  }
  CHECK(st.queues.count("events") == 0);  // a topic is not a queue
}

TEST_CASE("a durable subscription stopped mid-stream resumes after the last message it handled",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  seen first_run;
  auto c = subscribe(ctx, fwdr, {"feed", "reader", start_position::first()}, first_run, {.prefetch = 1});
  publish_all(ctx, fwdr, "feed", numbered("m", 0, 100));
  REQUIRE(test::wait_until([&] { return first_run.size() >= 40; }, 10s));
  c->stop();
  const std::size_t handled = first_run.size();
  publish_all(ctx, fwdr, "feed", numbered("m", 100, 150));  // while it is away

  seen second_run;
  auto again = subscribe(ctx, fwdr, {"feed", "reader", start_position::first()}, second_run);
  REQUIRE(test::wait_until([&] { return handled + second_run.size() >= 150; }, 10s));
  std::this_thread::sleep_for(200ms);  // nothing more may come
  again->stop();
  std::vector<std::uint64_t> all = first_run.sequences();
  for (auto s : second_run.sequences()) all.push_back(s);
  CHECK(all == range(1, 150));  // the start position applies only when the subscription is created
}

TEST_CASE("a durable subscription resumes where it was after ferryd restarts, with no gap and no duplicate",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  {
    seen before;
    auto c = subscribe(ctx, fwdr, {"log", "indexer", start_position::first()}, before, {.prefetch = 1});
    publish_all(ctx, fwdr, "log", numbered("x", 0, 60));
    REQUIRE(test::wait_until([&] { return before.size() >= 20; }, 10s));
    c->stop();
    REQUIRE(before.sequences() == range(1, before.size()));
    fwdr.stop();
    fwdr.start();
    seen after;
    auto d = subscribe(ctx, fwdr, {"log", "indexer"}, after);
    publish_all(ctx, fwdr, "log", numbered("x", 60, 80));
    REQUIRE(test::wait_until([&] { return before.size() + after.size() >= 80; }, 10s));
    std::this_thread::sleep_for(200ms);
    d->stop();
    std::vector<std::uint64_t> all = before.sequences();
    for (auto s : after.sequences()) all.push_back(s);
    CHECK(all == range(1, 80));
  }
  // A subscription made after the restart with "new" sees only what comes next.
  seen fresh;
  auto e = subscribe(ctx, fwdr, {"log", "latecomer"}, fresh);
  publish_all(ctx, fwdr, "log", {"x80"});
  REQUIRE(test::wait_until([&] { return fresh.size() == 1; }, 10s));
  e->stop();
  CHECK(fresh.sequences() == std::vector<std::uint64_t>{81});
}

TEST_CASE("consumers sharing a subscription name split its messages, and another name still gets them all",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  seen w1, w2, w3, all;
  auto c1 = subscribe(ctx, fwdr, {"jobs", "pool", start_position::first()}, w1, {.prefetch = 4});
  auto c2 = subscribe(ctx, fwdr, {"jobs", "pool", start_position::first()}, w2, {.prefetch = 4});
  auto c3 = subscribe(ctx, fwdr, {"jobs", "pool", start_position::first()}, w3, {.prefetch = 4});
  auto other = subscribe(ctx, fwdr, {"jobs", "everything", start_position::first()}, all);
  publish_all(ctx, fwdr, "jobs", numbered("j", 0, 600));
  REQUIRE(
      test::wait_until([&] { return w1.size() + w2.size() + w3.size() == 600 && all.size() == 600; }, 10s));
  for (auto* c : {c1.get(), c2.get(), c3.get(), other.get()}) c->stop();
  std::multiset<std::uint64_t> pooled;
  for (auto* w : {&w1, &w2, &w3})
    for (auto s : w->sequences()) pooled.insert(s);
  CHECK(std::set<std::uint64_t>(pooled.begin(), pooled.end()).size() == 600);  // no duplicate
  CHECK(pooled.size() == 600);
  CHECK(w1.size() > 0);
  CHECK(w2.size() > 0);
  CHECK(w3.size() > 0);
  CHECK(all.sequences() == range(1, 600));
}

TEST_CASE("a new subscription starts from the first message, a sequence number, a time, or only new ones",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  publish_all(ctx, fwdr, "ticks", numbered("t", 0, 50));
  std::this_thread::sleep_for(20ms);
  const auto between = std::chrono::system_clock::now();
  std::this_thread::sleep_for(20ms);
  publish_all(ctx, fwdr, "ticks", numbered("t", 50, 80));

  seen from_first, from_seq, from_time, only_new;
  auto a = subscribe(ctx, fwdr, {"ticks", "a", start_position::first()}, from_first);
  auto b = subscribe(ctx, fwdr, {"ticks", "b", start_position::at_seq(70)}, from_seq);
  auto c = subscribe(ctx, fwdr, {"ticks", "c", start_position::at_time(between)}, from_time);
  auto d = subscribe(ctx, fwdr, {"ticks", "d", start_position::new_messages()}, only_new);
  publish_all(ctx, fwdr, "ticks", {"t80"});
  REQUIRE(test::wait_until(
      [&] {
        return from_first.size() == 81 && from_seq.size() == 12 && from_time.size() == 31 &&
               only_new.size() == 1;
      },
      10s));
  for (auto* x : {a.get(), b.get(), c.get(), d.get()}) x->stop();
  CHECK(from_first.sequences() == range(1, 81));
  CHECK(from_seq.sequences() == range(70, 81));
  CHECK(from_time.sequences() == range(51, 81));
  CHECK(only_new.sequences() == std::vector<std::uint64_t>{81});
}

TEST_CASE("retention deletes whole segments, and a start before the retained range is told so and counted",
          "[topics][forwarder]") {
  ferryd::forwarder_options o;
  o.queue.segment_bytes = 16 * 1024;  // a few dozen messages per segment
  o.queue.retain_messages = 200;
  running_forwarder fwdr(o);
  context ctx;
  seen slow;
  // A subscription that falls behind: it handles nothing while the topic grows past its retention.
  std::atomic<bool> hold{true};
  auto lagging = std::make_unique<consumer>(
      ctx, fwdr.endpoint, topic_subscription{"metrics", "slow", start_position::first()},
      [&](message& m) {
        while (hold.load()) std::this_thread::sleep_for(1ms);
        slow.add(m);
      },
      consumer_options{.prefetch = 1});
  REQUIRE(lagging->wait_ready(10s));
  publish_all(ctx, fwdr, "metrics", std::vector<std::string>(1000, std::string(200, 'p')));
  admin adm(ctx, fwdr.endpoint);
  // Housekeeping runs every 100 ms (and may have run while the messages were coming in): wait for the
  // pass after the last commit, which leaves the limit and less than a segment more.
  REQUIRE(test::wait_until([&] { return adm.stats().topics.at("metrics").messages < 300; }, 10s));
  const topic_stats t = adm.stats().topics.at("metrics");
  CHECK(t.last_seq == 1000);
  CHECK(t.first_seq > 1);
  CHECK(t.messages >= 200);
  CHECK(t.messages < 300);  // whole segments: at most one segment's worth over the limit
  CHECK(t.first_seq + t.messages == 1001);
  hold = false;
  REQUIRE(test::wait_until([&] { return queue_stats_of(adm, "metrics@slow").depth == 0; }, 10s));
  lagging->stop();
  const queue_stats qs = queue_stats_of(adm, "metrics@slow");
  CHECK(qs.retention_skipped > 0);
  // What it handled: the message it held when retention ran, then the retained range, in order, no gap.
  const auto got = slow.sequences();
  REQUIRE(!got.empty());
  CHECK(std::is_sorted(got.begin(), got.end()));
  CHECK(got.back() == 1000);
  CHECK(qs.retention_skipped + got.size() >= 1000);

  // A raw SUBSCRIBE from seq 1 is told where the retained range starts.
  raw_client raw(fwdr.endpoint);
  const auto reply = raw.exchange(
      {"SUBSCRIBE", "metrics", test::msgpack_map({{"name", "late"}, {"from", "seq"}}, {{"seq", 1}})});
  REQUIRE(reply.size() == 3);
  CHECK(reply[0] == "CONSUMING");
  CHECK(reply[1] == "metrics@late");
  const auto fields = test::msgpack_fields(reply[2]);
  CHECK(fields.at("truncated") == "true");
  CHECK(fields.at("position") == std::to_string(t.first_seq));
  CHECK(fields.at("first_retained") == std::to_string(t.first_seq));
  CHECK(queue_stats_of(adm, "metrics@late").truncated_starts == 1);
}

TEST_CASE("an ephemeral subscription gets new messages while it lives and ends with its consumer",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  publish_all(ctx, fwdr, "alerts", {"old"});
  seen got;
  auto c = subscribe(ctx, fwdr, {"alerts", "", {}}, got);
  admin adm(ctx, fwdr.endpoint);
  CHECK(adm.stats().topics.at("alerts").subscriptions == 1);
  publish_all(ctx, fwdr, "alerts", {"new-1", "new-2"});
  REQUIRE(test::wait_until([&] { return got.size() == 2; }, 10s));
  c->stop();
  CHECK(got.sequences() == std::vector<std::uint64_t>{2, 3});
  REQUIRE(test::wait_until([&] { return adm.stats().topics.at("alerts").subscriptions == 0; }, 5s));
  for (const auto& [name, q] : adm.stats().queues) CHECK(name.rfind("alerts@", 0) != 0);
  // Nothing of it is left on disk.
  const auto subs = fwdr.dir.path() / "topics" / "alerts" / "subscriptions";
  std::size_t files = 0;
  if (std::filesystem::exists(subs))
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(subs)) ++files;
  CHECK(files == 0);
}

TEST_CASE("malformed SUBSCRIBEs are answered with errors and ferryd keeps serving", "[topics][forwarder]") {
  running_forwarder fwdr;
  raw_client raw(fwdr.endpoint);
  struct bad {
    std::vector<std::string> frames;
    std::string code;
    std::string says;
  };
  const std::vector<bad> cases{
      {{"SUBSCRIBE", "events"}, "bad_frames", "SUBSCRIBE needs"},
      {{"SUBSCRIBE", "events", "not msgpack \xc1"}, "bad_frames", "SUBSCRIBE options"},
      {{"SUBSCRIBE", "events", test::msgpack_map({{"from", "first"}}, {})}, "bad_queue", "subscription name"},
      {{"SUBSCRIBE", "ev/ents", test::msgpack_map({{"name", "a"}}, {})}, "bad_queue", "topic name"},
      {{"SUBSCRIBE", "events", test::msgpack_map({{"name", "a.dlq"}}, {})}, "bad_queue", "subscription name"},
      {{"SUBSCRIBE", "events", test::msgpack_map({{"name", "a"}, {"from", "yesterday"}}, {})},
       "bad_frames",
       "new, first, seq or time"},
      {{"SUBSCRIBE", "events", test::msgpack_map({{"name", "a"}, {"from", "seq"}}, {})},
       "bad_frames",
       "\"seq\""},
      {{"SUBSCRIBE", "events", test::msgpack_map({{"name", "a"}}, {{"prefetch", -1}})},
       "bad_frames",
       "\"prefetch\""},
      {{"SUBSCRIBE", "events", test::msgpack_map({{"name", std::string(195, 'n')}}, {})},
       "bad_queue",
       "too long"},
      {{"CONSUME", "events@a"}, "bad_queue", "SUBSCRIBE"},
      {{"PUBLISH", "events", "x"}, "bad_frames", "PUBLISH: the block of messages does not decode"},
      {{"PUBLISH", "events"}, "bad_frames", "PUBLISH needs"},
  };
  for (const auto& c : cases) {
    INFO(c.frames[0] << " " << c.frames[1]);
    const auto reply = raw.exchange(c.frames);
    REQUIRE(reply.size() == 3);
    CHECK(reply[0] == "ERROR");
    CHECK(reply[1] == c.code);
    CHECK(reply[2].find(c.says) != std::string::npos);
  }
  // Nothing was created, and ferryd still serves.
  context ctx;
  admin adm(ctx, fwdr.endpoint);
  const auto st = adm.stats();
  CHECK(st.queues.empty());
  CHECK(st.malformed_frames >= 6);
  seen got;
  auto c = subscribe(ctx, fwdr, {"events", "a", start_position::first()}, got);
  publish_all(ctx, fwdr, "events", {"fine"});
  REQUIRE(test::wait_until([&] { return got.size() == 1; }, 10s));
  c->stop();
}

TEST_CASE("a PUBLISH with a bad topic name is refused per message and stores nothing",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  std::vector<refusal> refused;
  std::mutex mu;
  producer p(ctx, fwdr.endpoint, {}, {}, [&](const refusal& r) {
    std::lock_guard lock(mu);
    refused.push_back(r);
  });
  message ok("good", "x");
  REQUIRE(p.publish(ok) == send_status::ok);
  message dlq("events.dlq", "x");
  CHECK(p.publish(dlq) == send_status::invalid);
  REQUIRE(p.flush(5s));
  CHECK(refused.empty());
  admin adm(ctx, fwdr.endpoint);
  CHECK(adm.stats().topics.at("good").published == 1);
  CHECK(adm.stats().topics.count("events.dlq") == 0);
}

TEST_CASE("a subscriber that handles nothing does not hold back the publisher or the other subscriptions",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  std::atomic<bool> hold{true};
  std::atomic<int> stuck_handled{0};
  consumer stuck(
      ctx, fwdr.endpoint, topic_subscription{"firehose", "stuck", start_position::first()},
      [&](message&) {
        while (hold.load()) std::this_thread::sleep_for(1ms);
        ++stuck_handled;
      },
      consumer_options{.prefetch = 2});
  REQUIRE(stuck.wait_ready(10s));
  seen fast;
  auto quick = subscribe(ctx, fwdr, {"firehose", "fast", start_position::first()}, fast);
  // Every message is confirmed and reaches the other subscription while the stuck one holds two.
  publish_all(ctx, fwdr, "firehose", numbered("f", 0, 5000));
  REQUIRE(test::wait_until([&] { return fast.size() == 5000; }, 20s));
  CHECK(stuck_handled == 0);
  admin adm(ctx, fwdr.endpoint);
  const queue_stats behind = queue_stats_of(adm, "firehose@stuck");
  CHECK(behind.in_flight <= 2);
  CHECK(behind.depth == 5000);  // it falls behind and reads from disk when it moves again
  hold = false;
  REQUIRE(test::wait_until([&] { return stuck_handled == 5000; }, 20s));
  quick->stop();
  stuck.stop();
  CHECK(fast.sequences() == range(1, 5000));
}

TEST_CASE(
    "a subscription starting past the topic's end waits there, and a restart does not move the topic's "
    "numbers",
    "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  publish_all(ctx, fwdr, "sparse", numbered("s", 1, 11));  // seqs 1..10
  seen ahead;
  {
    auto c = subscribe(ctx, fwdr, {"sparse", "ahead", start_position::at_seq(14)}, ahead);
    c->stop();
  }
  fwdr.stop();
  fwdr.start();
  auto c = subscribe(ctx, fwdr, {"sparse", "ahead"}, ahead);
  publish_all(ctx, fwdr, "sparse", numbered("s", 11, 16));  // seqs 11..15: only 14 and 15 are for it
  REQUIRE(test::wait_until([&] { return ahead.size() == 2; }, 10s));
  std::this_thread::sleep_for(100ms);
  c->stop();
  CHECK(ahead.sequences() == std::vector<std::uint64_t>{14, 15});
  admin adm(ctx, fwdr.endpoint);
  const forwarder_stats st = adm.stats();
  CHECK(st.topics.at("sparse").last_seq == 15);  // dense: the subscription's start did not move it
  CHECK(st.queues.at("sparse@ahead").position == 16);
  CHECK(st.queues.at("sparse@ahead").depth == 0);
}

TEST_CASE("retention by age and by bytes deletes the oldest whole segments and keeps the newest",
          "[topics][forwarder]") {
  const bool by_age = GENERATE(true, false);
  INFO((by_age ? "--topic-retain-ms 3000" : "--topic-retain-mb: 64 KiB"));
  ferryd::forwarder_options o;
  o.queue.segment_bytes = 16 * 1024;
  if (by_age) {
    o.queue.retain_age = std::chrono::milliseconds(3000);
  } else {
    o.queue.retain_bytes = 64 * 1024;
  }
  running_forwarder fwdr(o);
  context ctx;
  publish_all(ctx, fwdr, "history", std::vector<std::string>(1000, std::string(200, 'h')));  // ~20 segments
  admin adm(ctx, fwdr.endpoint);
  if (by_age) {
    // Nothing is old yet; once it is, everything but the segment being written goes.
    CHECK(adm.stats().topics.at("history").first_seq == 1);
    // Segments go as their newest message passes the age (they were written over a while), until only
    // the segment being written is left.
    const bool aged = test::wait_until(
        [&] { return adm.stats().topics.at("history").disk_bytes <= 16 * 1024 + 1024; }, 15s);
    const topic_stats t = adm.stats().topics.at("history");
    INFO("disk bytes " << t.disk_bytes << ", first seq " << t.first_seq);
    CHECK(aged);
    CHECK(t.first_seq > 1);
    CHECK(t.first_seq + t.messages == 1001);
  } else {
    REQUIRE(test::wait_until([&] { return adm.stats().topics.at("history").first_seq > 1; }, 10s));
    std::this_thread::sleep_for(300ms);  // housekeeping has run again: nothing more goes
    const topic_stats t = adm.stats().topics.at("history");
    CHECK(t.disk_bytes >= 64 * 1024);             // at least the limit is kept
    CHECK(t.disk_bytes < 64 * 1024 + 20 * 1024);  // and less than a segment more
    CHECK(t.first_seq + t.messages == 1001);
  }
  // A new subscription from the first message starts at the oldest retained one, in order, none missing.
  seen got;
  const std::uint64_t first = adm.stats().topics.at("history").first_seq;
  auto c = subscribe(ctx, fwdr, {"history", "reader", start_position::first()}, got);
  REQUIRE(test::wait_until([&] { return got.size() >= 1001 - first; }, 10s));
  c->stop();
  const auto seqs = got.sequences();
  REQUIRE(!seqs.empty());
  CHECK(seqs.front() >= first);
  CHECK(seqs == range(seqs.front(), 1000));
}

TEST_CASE("a consumer refuses a subscription's name as a queue, and takes its dead-letter queue",
          "[topics][forwarder]") {
  running_forwarder fwdr;
  context ctx;
  auto nothing = [](message&) {};
  try {
    consumer wrong(ctx, fwdr.endpoint, "events@audit", nothing);
    FAIL("a subscription's name was taken as a queue");
  } catch (const ferry::error& e) {
    CHECK(std::string(e.what()).find("topic_subscription") != std::string::npos);
  }
  consumer dead_letters(ctx, fwdr.endpoint, "events@audit.dlq", nothing);
  CHECK(dead_letters.wait_ready(10s));
  try {
    consumer bad(ctx, fwdr.endpoint, topic_subscription{"events", "~mine", {}}, nothing);
    FAIL("a '~' name was taken as a durable name");
  } catch (const ferry::error& e) {
    CHECK(std::string(e.what()).find("is not valid") != std::string::npos);
  }
}
