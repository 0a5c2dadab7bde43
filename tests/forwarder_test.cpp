#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "detail/forwarder_protocol.hpp"
#include "detail/wire.hpp"
#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "forwarder.hpp"
#include "support/ferryd_client.hpp"
#include "support/log_capture.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using ferry::test::envelope_of;
using ferry::test::queue_stats_of;
using ferry::test::raw_client;
using namespace std::chrono_literals;
namespace fwd = ferry::detail::fwd;

namespace {

// ferryd in this process, on a free loopback port and a temp data dir.
struct running_forwarder {
  test::temp_dir dir;
  std::string endpoint = test::free_tcp_endpoint();
  ferryd::forwarder_options options;
  std::unique_ptr<ferryd::forwarder> f;
  std::thread loop;

  explicit running_forwarder(ferryd::forwarder_options o = {}) : options(std::move(o)) { start(); }
  ~running_forwarder() { stop(); }

  void start() {
    options.data_dir = dir.path();
    options.bind = {endpoint};
    f = std::make_unique<ferryd::forwarder>(options);
    loop = std::thread([this] { f->run(false); });
  }
  void stop() {
    if (!f) return;
    f->stop();
    loop.join();
    f.reset();
  }
};

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

TEST_CASE("unknown verbs and malformed frames get an error and ferryd keeps serving", "[forwarder]") {
  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  c.send({"FLY"});
  auto r = c.receive();
  REQUIRE(r.size() == 3);
  CHECK(r[0] == "ERROR");
  CHECK(r[1] == "unknown_verb");
  c.send({"SEND", "q", "lonely envelope"});
  r = c.receive();
  CHECK(r[1] == "bad_frames");
  message m("q", "x");
  c.send({"SEND", "q", "not msgpack", "x"});
  r = c.receive();
  REQUIRE(r.size() == 4);
  CHECK(r[0] == "REFUSE");
  CHECK(r[2] == "malformed");
  c.send({"ACK", "q", "1234567"});
  r = c.receive();
  CHECK(r[1] == "bad_frames");
  c.send({"ACK", "q", "12345678"});
  r = c.receive();
  CHECK(r[1] == "not_consuming");
  c.send({"PING"});
  r = c.receive();
  REQUIRE(r.size() == 2);
  CHECK(r[0] == "PONG");
  CHECK(r[1].size() == 8);
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

TEST_CASE("a consumer ferryd has forgotten hears so on its next ping", "[forwarder]") {
  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  c.send({"PING", "jobs"});
  auto r = c.receive();
  REQUIRE(r.size() == 2);
  CHECK(r[0] == "PONG");
  r = c.receive();
  REQUIRE(r.size() == 3);
  CHECK(r[0] == "ERROR");
  CHECK(r[1] == "not_consuming");
  c.send({"CONSUME", "jobs"});
  CHECK(c.receive().at(0) == "CONSUMING");
  c.send({"PING", "jobs"});
  CHECK(c.receive().at(0) == "PONG");
  CHECK(c.receive(200ms).empty());  // subscribed: nothing more
}

TEST_CASE("batches over the protocol limit are refused and big deliveries are split", "[forwarder]") {
  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  // A SEND of 4097 messages is refused as a whole (ERROR: nothing in it was carried out), and leaves no
  // queue behind.
  std::vector<std::string> frames{"SEND", "q"};
  for (std::size_t i = 0; i < fwd::max_batch + 1; ++i) {
    message m("q", "x");
    frames.push_back(envelope_of(m));
    frames.push_back("x");
  }
  c.send(frames);
  auto r = c.receive();
  REQUIRE(r.size() == 3);
  CHECK(r[0] == "ERROR");
  CHECK(r[1] == "bad_frames");
  CHECK(r[2].find("at most 4096 per SEND") != std::string::npos);
  {
    context actx;
    admin a(actx, fwdr.endpoint);
    const forwarder_stats st = a.stats();
    CHECK(st.queues.count("q") == 0);
    CHECK(st.malformed_frames == 1);
  }

  context ctx;
  producer p(ctx, fwdr.endpoint, {.max_batch = 100000});
  for (std::size_t i = 0; i < 3000; ++i) {
    message m("big", "x");
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));
  raw_client w(fwdr.endpoint);
  msgpack::sbuffer opts;
  msgpack::packer<msgpack::sbuffer> pk(opts);
  pk.pack_map(1);
  pk.pack("prefetch");
  pk.pack(5000);
  w.send({"CONSUME", "big", std::string(opts.data(), opts.size())});
  REQUIRE(w.receive().at(0) == "CONSUMING");
  std::size_t delivered = 0;
  while (delivered < 3000) {
    auto d = w.receive();
    REQUIRE(d.size() >= 5);
    REQUIRE(d[0] == "DELIVER");
    const std::size_t n = (d.size() - 3) / 2;
    CHECK(n <= fwd::max_deliver);
    CHECK(d[2].size() == 8 * n);
    delivered += n;
  }
  CHECK(delivered == 3000);
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

TEST_CASE("CONSUME with options ferryd cannot take says what is wrong with them", "[forwarder]") {
  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  auto packed = [](auto fill) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    fill(pk);
    return std::string(buf.data(), buf.size());
  };
  using row = std::pair<std::string, std::string>;
  for (const auto& [options, expected] : {
           row{packed([](auto& pk) {
                 pk.pack_map(1);
                 pk.pack("prefetch");
                 pk.pack(-1);
               }),
               "CONSUME options: \"prefetch\" is -1, not an unsigned integer (\"prefetch\" takes 1 to "
               "100000)"},
           row{packed([](auto& pk) {
                 pk.pack_map(1);
                 pk.pack("prefetch");
                 pk.pack("64");
               }),
               "CONSUME options: \"prefetch\" is \"64\", not an unsigned integer"},
           row{packed([](auto& pk) {
                 pk.pack_map(2);
                 pk.pack("prefetch");
                 pk.pack(8);
                 pk.pack("version");
                 pk.pack(1.5);
               }),
               "CONSUME options: \"version\" is 1.5, not an unsigned integer"},
           row{packed([](auto& pk) { pk.pack(64); }), "CONSUME options: the frame is not a MessagePack map"},
       }) {
    const auto r = c.exchange({"CONSUME", "jobs", options});
    INFO(test::show_frames(r));
    REQUIRE(r.size() == 3);
    CHECK(r[0] == "ERROR");
    CHECK(r[1] == "bad_frames");
    CHECK(r[2].find(expected) == 0);
  }
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

namespace {

// A SEND v2 block of `msgs` (detail/wire.hpp's encoder: the same bytes the producer writes).
std::string block_of(const std::vector<message>& msgs) {
  std::string out(detail::block_header_size(msgs.size()), '\0');
  detail::write_block_header(out.data(), msgs.size());
  for (const auto& m : msgs) {
    const std::size_t at = out.size();
    out.resize(at + detail::block_entry_size(m));
    detail::write_block_entry(out.data() + at, m);
  }
  return out;
}

std::string options_map(const std::string& extra_key, int extra_value) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(extra_key.empty() ? 1 : 2);
  pk.pack("prefetch");
  pk.pack(10);
  if (!extra_key.empty()) {
    pk.pack(extra_key);
    pk.pack(extra_value);
  }
  return {buf.data(), buf.size()};
}

// Collects CONFIRM ids until `want` of them arrived (or a reply that is not a CONFIRM).
std::set<std::string> confirmed_ids(raw_client& c, std::size_t want) {
  std::set<std::string> ids;
  while (ids.size() < want) {
    const auto r = c.receive();
    INFO(test::show_frames(r));
    REQUIRE(r.size() == 2);
    REQUIRE(r[0] == "CONFIRM");
    for (std::size_t off = 0; off + 16 <= r[1].size(); off += 16) ids.insert(r[1].substr(off, 16));
  }
  return ids;
}

}  // namespace

TEST_CASE("a v2 SEND whose block does not decode is one ERROR: nothing stored, counted, ferryd keeps serving",
          "[forwarder][protocol]") {
  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  std::vector<message> msgs;
  msgs.emplace_back("v2q", "first");
  msgs.emplace_back("v2q", std::string(70'000, 'p'));  // a payload as bin 32
  const std::string block = block_of(msgs);
  const std::size_t first_end = 3 + envelope_of(msgs[0]).size() + 2 + 5;  // header, envelope, bin 8 "first"
  REQUIRE(block.substr(first_end, 1) == envelope_of(msgs[1]).substr(0, 1));
  std::vector<message> zero_id;
  zero_id.emplace_back("v2q", "x");
  zero_id[0].set_id(message_id{});
  const std::string entries = block.substr(3);
  const std::vector<std::pair<std::string, std::string>> bad{
      {"", "truncated"},
      {block.substr(0, 1), "truncated"},
      {block.substr(0, 3), "truncated"},                          // the header alone
      {block.substr(0, 3 + 10), "truncated"},                     // inside the first envelope
      {block.substr(0, first_end), "truncated"},                  // the first entry whole, the second missing
      {block.substr(0, block.size() - 3), "truncated"},           // inside the second payload
      {std::string("\x92\x02\x03", 3) + entries, "truncated"},    // a count that lies upwards
      {std::string("\x92\x02\x01", 3) + entries, "batch_count"},  // and downwards: bytes after the last entry
      {std::string("\x92\x02\x00", 3) + entries, "bad_header"},   // no messages
      {std::string("\x92\x01\x02", 3) + entries, "bad_header"},   // a tag that is not 2
      {std::string("\x93\x02\x02", 3) + entries, "bad_header"},
      {block.substr(0, first_end) + block_of(zero_id).substr(3), "bad_id"},  // one bad envelope: all of it
  };
  for (const auto& [frame, reason] : bad) {
    INFO("block " << test::show_frames({frame}) << " (" << frame.size() << " bytes)");
    const auto r = c.exchange({"SEND", "v2q", frame});
    REQUIRE(r.size() == 3);
    CHECK(r[0] == "ERROR");
    CHECK(r[1] == "bad_frames");
    CHECK(r[2] == "SEND: the block of messages does not decode: " + reason);
    CHECK(c.receive(100ms).empty());  // no REFUSE or CONFIRM for any message of it
  }
  // More than 4096 messages, however well formed: one ERROR too.
  std::vector<message> many;
  for (std::size_t i = 0; i < fwd::max_batch + 1; ++i) many.emplace_back("v2q", "m");
  auto r = c.exchange({"SEND", "v2q", block_of(many)});
  REQUIRE(r.size() == 3);
  CHECK(r[1] == "bad_frames");
  CHECK(r[2].find("4097 messages; at most 4096 per SEND, nothing was stored") != std::string::npos);
  {
    context actx;
    admin a(actx, fwdr.endpoint);
    const forwarder_stats st = a.stats();
    CHECK(st.queues.count("v2q") == 0);  // no queue was created
    CHECK(st.malformed_frames == bad.size() + 1);
  }
  // Per-message refusals are still per message in v2: each id refused bad_queue.
  c.send({"SEND", "bad/name", block});
  for (const auto& m : msgs) {
    r = c.receive();
    REQUIRE(r.size() == 4);
    CHECK(r[0] == "REFUSE");
    CHECK(r[1] == std::string(m.id().view()));
    CHECK(r[2] == "bad_queue");
  }
  // And the intact block is stored, both messages confirmed.
  c.send({"SEND", "v2q", block});
  CHECK(confirmed_ids(c, 2) ==
        std::set<std::string>{std::string(msgs[0].id().view()), std::string(msgs[1].id().view())});
  const auto q = queue_stats_of(fwdr.endpoint, "v2q");
  CHECK(q.depth == 2);
  CHECK(q.confirmed == 2);
}

TEST_CASE(
    "DELIVERs come as one block to a consumer that asked for version 2, as frame pairs to one that did not",
    "[forwarder][protocol]") {
  running_forwarder fwdr;
  raw_client producer(fwdr.endpoint);
  std::vector<message> msgs;
  for (int i = 0; i < 3; ++i) {
    msgs.emplace_back("q", "payload " + std::to_string(i));
    msgs.back().set_header("n", std::to_string(i));
  }
  // Sent in both forms: the form of a DELIVER depends on the consumer only.
  std::vector<std::string> v1_send{"SEND", ""};
  for (const auto& m : msgs) {
    v1_send.push_back(envelope_of(m));
    v1_send.push_back(std::string(m.payload()));
  }
  struct subscription {
    std::string queue, key;  // key "": CONSUME options without "version"
    int version;
  };
  const std::vector<subscription> subscriptions{{"asks-v2", "version", 2},
                                                {"asks-v7", "version", 7},
                                                {"asks-nothing", "", 0},
                                                {"asks-v1", "version", 1}};
  bool packed_send = true;
  for (const auto& [queue, key, version] : subscriptions) {
    if (packed_send) {
      producer.send({"SEND", queue, block_of(msgs)});
    } else {
      v1_send[1] = queue;
      producer.send(v1_send);
    }
    packed_send = !packed_send;
    (void)confirmed_ids(producer, msgs.size());
  }

  for (const auto& [queue, key, version] : subscriptions) {
    const bool want_block = version >= 2;  // ferryd speaks 1 and 2: 7 gets 2
    INFO("queue " << queue << ", CONSUME version " << version);
    raw_client c(fwdr.endpoint);
    REQUIRE(c.exchange({"CONSUME", queue, options_map(key, version)}).at(0) == "CONSUMING");
    std::vector<message> got;
    while (got.size() < msgs.size()) {
      const auto d = c.receive();
      INFO(test::show_frames(d));
      REQUIRE(d.size() >= 4);
      REQUIRE(d[0] == "DELIVER");
      CHECK(d[1] == queue);
      const std::size_t n = d[2].size() / 8;
      REQUIRE(d[2].size() == 8 * n);
      if (want_block) {
        REQUIRE(d.size() == 4);  // DELIVER | queue | tokens | block
        std::vector<message> decoded;
        std::vector<detail::payload_span> payloads;
        std::size_t count = 0;
        REQUIRE(detail::decode_block(d[3], decoded, payloads, count, {}) == decode_error::none);
        REQUIRE(count == n);
        for (std::size_t i = 0; i < n; ++i) {
          decoded[i].set_payload(d[3].substr(payloads[i].offset, payloads[i].size));
          got.push_back(std::move(decoded[i]));
        }
      } else {
        REQUIRE(d.size() == 3 + 2 * n);  // DELIVER | queue | tokens | (envelope | payload) x n
        for (std::size_t i = 0; i < n; ++i) {
          message m;
          REQUIRE(decode_envelope(d[3 + 2 * i], m) == decode_error::none);
          CHECK(static_cast<unsigned char>(d[3 + 2 * i].at(29)) == 0xce);
          m.set_payload(d[4 + 2 * i]);
          got.push_back(std::move(m));
        }
      }
      c.send({"ACK", queue, d[2]});
    }
    REQUIRE(got.size() == msgs.size());
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      CHECK(got[i].id() == msgs[i].id());
      CHECK(got[i].payload() == msgs[i].payload());
      CHECK(got[i].header("n") == std::to_string(i));
      CHECK(got[i].attempt() == 1);
    }
  }
  // A version that is not an unsigned integer is refused, and subscribes nothing.
  raw_client c(fwdr.endpoint);
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(1);
  pk.pack("version");
  pk.pack("2");
  const auto r = c.exchange({"CONSUME", "asks-v2", std::string(buf.data(), buf.size())});
  REQUIRE(r.size() == 3);
  CHECK(r[0] == "ERROR");
  CHECK(r[1] == "bad_frames");
}

TEST_CASE("a DELIVER block stays within 4 MiB unless one message alone is larger, so no consumer drops it",
          "[forwarder][protocol]") {
  // Six 12 MiB messages once made one 75 MB DELIVER, over a consumer's 64 MiB ZMQ_MAXMSGSIZE: the consumer
  // lost the connection and nothing was delivered. Each goes in a DELIVER of its own now, and smaller ones
  // share DELIVERs up to the bound.
  running_forwarder fwdr;
  context ctx;
  producer p(ctx, fwdr.endpoint);
  std::vector<std::string> sent;
  for (int i = 0; i < 6; ++i) {
    sent.push_back(std::string(12u << 20, static_cast<char>('a' + i)));
    message m("big", sent.back());
    REQUIRE(p.send(m) == send_status::ok);
  }
  for (int i = 0; i < 6; ++i) {
    sent.push_back(std::string(1536u << 10, static_cast<char>('A' + i)));  // 1.5 MiB: two per DELIVER
    message m("big", sent.back());
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(30s));
  std::mutex mu;
  std::vector<std::string> got;
  consumer c(ctx, fwdr.endpoint, "big",
             [&](message& m) {
               std::lock_guard lock(mu);
               got.emplace_back(m.payload());
             },
             {.prefetch = 64});
  REQUIRE(test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return got.size() == sent.size();
      },
      60s));
  std::lock_guard lock(mu);
  CHECK(got == sent);
  CHECK(c.stats().resubscribed == 0);  // the connection never dropped
}
