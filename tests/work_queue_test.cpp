#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "ferry/producer.hpp"
#include "ferry/publisher.hpp"
#include "ferry/pusher.hpp"
#include "ferry/worker_pool.hpp"
#include "support/log_capture.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

struct collected {
  std::mutex mutex;
  std::multiset<std::string> payloads;
  std::vector<std::string> in_order;  // the payloads as they came
  std::set<std::thread::id> threads;
  std::atomic<int> count{0};
  void add(const message& m) {
    std::lock_guard lock(mutex);
    payloads.insert(std::string(m.payload()));
    in_order.emplace_back(m.payload());
    threads.insert(std::this_thread::get_id());
    ++count;
  }
};

void send_n(pusher& p, int n, const std::string& prefix = "m") {
  for (int i = 0; i < n; ++i) {
    message m("jobs", prefix + std::to_string(i));
    REQUIRE(p.send(m) == send_status::ok);
  }
}

}  // namespace

TEST_CASE("work queue delivers every message once over inproc, ipc and tcp", "[work_queue]") {
  test::temp_dir dir;
  const std::string endpoint = GENERATE(as<std::string>{}, "inproc", "ipc", "tcp");
  std::string ep = endpoint == "inproc" ? "inproc://wq-basic"
                   : endpoint == "ipc"  ? "ipc://" + dir / "wq.sock"
                                        : "tcp://127.0.0.1:*";
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {ep}}, [&](message& m) { got.add(m); });
  pusher p(ctx, {.connect = {pool.bound().at(0)}});
  send_n(p, 1000);
  REQUIRE(test::wait_until([&] { return got.count == 1000; }));
  pool.stop();
  CHECK(got.payloads.size() == 1000);
  std::set<std::string> unique(got.payloads.begin(), got.payloads.end());
  CHECK(unique.size() == 1000);
  const auto s = pool.stats();
  CHECK(s.received == 1000);
  CHECK(s.handled == 1000);
  CHECK(s.failed == 0);
  CHECK(s.malformed == 0);
  CHECK(p.stats().sent == 1000);
}

TEST_CASE("received messages carry id, topic, key, headers and payload, in wire v1 and v2", "[work_queue]") {
  const wire_version version = GENERATE(wire_version::v1, wire_version::v2);
  INFO("wire " << to_string(version));
  context ctx;
  std::mutex mu;
  std::vector<message> got;
  worker_pool pool(ctx, {.bind = {"inproc://wq-fields"}}, [&](message& m) {
    std::lock_guard lock(mu);
    got.push_back(std::move(m));
  });
  pusher p(ctx, {.connect = {"inproc://wq-fields"}}, {.wire = {.version = version}});
  message m("orders.eu", "{\"order\":1}");
  m.set_key("order-1");
  m.set_header("source", "test");
  const auto id = m.id();
  REQUIRE(p.send(m) == send_status::ok);
  REQUIRE(test::wait_until([&] {
    std::lock_guard lock(mu);
    return got.size() == 1;
  }));
  std::lock_guard lock(mu);
  CHECK(got[0].id() == id);
  CHECK(got[0].topic() == "orders.eu");
  CHECK(got[0].key() == "order-1");
  CHECK(got[0].header("source") == "test");
  CHECK(got[0].payload() == "{\"order\":1}");
  CHECK(pool.stats().v1_frames == (version == wire_version::v1 ? 1 : 0));
  CHECK(pool.stats().v2_frames == (version == wire_version::v2 ? 1 : 0));
}

TEST_CASE("a pool with several threads spreads the load over them", "[work_queue]") {
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {"tcp://127.0.0.1:*"}},
                   [&](message& m) {
                     std::this_thread::sleep_for(1ms);  // slow handlers, so one thread alone cannot keep up
                     got.add(m);
                   },
                   {.threads = 4});
  pusher p(ctx, {.connect = {pool.bound().at(0)}});
  send_n(p, 200);
  REQUIRE(test::wait_until([&] { return got.count == 200; }));
  pool.stop();
  CHECK(got.threads.size() == 4);
  CHECK(pool.stats().handled == 200);
}

TEST_CASE("a pusher spreads messages over several pools", "[work_queue]") {
  context ctx;
  collected a, b;
  worker_pool pa(ctx, {.bind = {"inproc://wq-spread-a"}}, [&](message& m) { a.add(m); });
  worker_pool pb(ctx, {.bind = {"inproc://wq-spread-b"}}, [&](message& m) { b.add(m); });
  pusher p(ctx, {.connect = {"inproc://wq-spread-a", "inproc://wq-spread-b"}});
  send_n(p, 1000);
  REQUIRE(test::wait_until([&] { return a.count + b.count == 1000; }));
  CHECK(a.count > 100);
  CHECK(b.count > 100);
}

TEST_CASE("handler exceptions are counted and the pool keeps going", "[work_queue]") {
  context ctx;
  std::atomic<int> calls{0};
  worker_pool pool(ctx, {.bind = {"inproc://wq-throw"}}, [&](message& m) {
    ++calls;
    if (m.payload().back() % 2 == 0) throw std::runtime_error("even payloads fail");
  });
  pusher p(ctx, {.connect = {"inproc://wq-throw"}});
  send_n(p, 100);
  REQUIRE(test::wait_until([&] { return calls == 100; }));
  pool.stop();
  CHECK(pool.stats().failed == 50);
  CHECK(pool.stats().handled == 50);
}

TEST_CASE("malformed frame sets are rejected and counted, and good ones still flow", "[work_queue]") {
  context ctx;
  std::atomic<int> handled{0};
  worker_pool pool(ctx, {.bind = {"inproc://wq-bad"}}, [&](message&) { ++handled; });
  zmq::socket_t raw = ctx.make_socket(zmq::socket_type::push);
  raw.connect("inproc://wq-bad");
  raw.send(zmq::str_buffer("one frame"), zmq::send_flags::none);  // v2 without the topic's 00
  raw.send(zmq::str_buffer("t"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("not msgpack"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("payload"), zmq::send_flags::none);  // bad envelope
  for (int i = 0; i < 4; ++i)
    raw.send(zmq::str_buffer("x"), i < 3 ? zmq::send_flags::sndmore : zmq::send_flags::none);
  message good("t", "ok");
  raw.send(zmq::buffer(std::string(300, 't')), zmq::send_flags::sndmore);  // topic too long
  raw.send(encode_envelope(good), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("p"), zmq::send_flags::none);
  pusher p(ctx, {.connect = {"inproc://wq-bad"}});
  REQUIRE(p.send(good) == send_status::ok);
  REQUIRE(test::wait_until([&] { return handled == 1 && pool.stats().malformed == 4; }));
  pool.stop();
  CHECK(pool.stats().received == 1);
}

TEST_CASE("malformed v2 frames are rejected and counted, and the pool keeps serving", "[work_queue]") {
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {"inproc://wq-bad-v2"}}, [&](message& m) { got.add(m); });
  zmq::socket_t raw = ctx.make_socket(zmq::socket_type::push);
  raw.connect("inproc://wq-bad-v2");
  message good("jobs", "x");
  const std::string entry = std::string(encode_envelope(good).to_string_view()) + "\xc4\x01x";
  const std::string frames[] = {
      std::string("jobs\0\x93\x02\x01", 8) + entry,           // header of 3 elements: bad_header
      std::string("jobs\0\x92\x02\x02", 8) + entry,           // count 2, one entry: truncated
      std::string("jobs\0\x92\x02\x01", 8) + entry + "\xc0",  // a byte after the last entry: batch_count
      std::string("jobs\0\x92\x02\x01", 8) + entry.substr(0, entry.size() - 3) + "\xa1x",  // bad_payload
      std::string(300, 't'),                                                               // topic_too_long
  };
  for (const auto& f : frames) REQUIRE(raw.send(zmq::buffer(f), zmq::send_flags::none));
  // split: a header frame that carries its payload as well (bad_payload)
  REQUIRE(raw.send(zmq::buffer(std::string("jobs\0\x92\x02\x01", 8) + entry), zmq::send_flags::sndmore));
  REQUIRE(raw.send(zmq::str_buffer("payload"), zmq::send_flags::none));
  REQUIRE(raw.send(zmq::buffer(std::string("jobs\0\x92\x02\x01", 8) + entry), zmq::send_flags::none));
  REQUIRE(test::wait_until([&] { return got.count == 1; }));
  pool.stop();
  const auto s = pool.stats();
  CHECK(s.malformed == 6);
  CHECK(s.received == 1);
  CHECK(s.v2_frames == 1);
  CHECK(got.payloads == std::multiset<std::string>{"x"});
}

TEST_CASE("a pool takes wire v1 and v2 pushers at once and counts their frames apart", "[work_queue]") {
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {"inproc://wq-mixed"}}, [&](message& m) { got.add(m); });
  pusher old_pusher(ctx, {.connect = {"inproc://wq-mixed"}}, {.wire = {.version = wire_version::v1}});
  pusher new_pusher(ctx, {.connect = {"inproc://wq-mixed"}});
  std::atomic<int> v1_failed{0};  // Catch's assertions are for the test's own thread
  std::thread v1([&] {
    for (int i = 0; i < 300; ++i) {
      message m("jobs", "v1-" + std::to_string(i));
      if (old_pusher.send(m) != send_status::ok) ++v1_failed;
    }
  });
  send_n(new_pusher, 200, "v2-");
  std::vector<message> batch;
  for (int i = 0; i < 100; ++i) batch.emplace_back("jobs", "batch-" + std::to_string(i));
  REQUIRE(new_pusher.send_batch(batch).status == send_status::ok);
  v1.join();
  REQUIRE(v1_failed == 0);
  REQUIRE(test::wait_until([&] { return got.count == 600; }));
  pool.stop();
  const auto s = pool.stats();
  CHECK(s.v1_frames == 300);
  CHECK(s.v2_frames == 201);
  CHECK(s.malformed == 0);
  CHECK(std::set<std::string>(got.payloads.begin(), got.payloads.end()).size() == 600);
  CHECK(old_pusher.stats().frames == 300);
  CHECK(new_pusher.stats().frames == 201);
  CHECK(new_pusher.stats().sent == 300);
}

TEST_CASE("send_batch delivers a batch in order as one frame per run of a topic", "[work_queue]") {
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {"inproc://wq-batch"}}, [&](message& m) { got.add(m); });
  pusher p(ctx, {.connect = {"inproc://wq-batch"}});
  std::vector<message> batch;
  std::vector<std::string> expected;
  for (int i = 0; i < 250; ++i) {
    const std::string topic = i < 100 ? "a" : i < 200 ? "b" : "a";  // three runs
    expected.push_back(topic + ":" + std::to_string(i));
    batch.emplace_back(topic, expected.back());
  }
  const batch_status r = p.send_batch(batch);
  CHECK(r.status == send_status::ok);
  CHECK(r.sent == 250);
  CHECK(r.frames == 3);
  REQUIRE(test::wait_until([&] { return got.count == 250; }));
  pool.stop();
  CHECK(got.in_order == expected);
  CHECK(p.stats().sent == 250);
  CHECK(p.stats().frames == 3);
  CHECK(pool.stats().v2_frames == 3);
  CHECK(pool.stats().received == 250);
}

TEST_CASE("a batch never builds a frame larger than the socket's max_message_size", "[work_queue]") {
  // A receiver drops the connection on a larger frame, without a trace: the sender keeps under the limit.
  context ctx;
  collected got;
  socket_options small;
  small.max_message_size = 100'000;
  worker_pool pool(ctx, {.bind = {"tcp://127.0.0.1:*"}}, [&](message& m) { got.add(m); }, {.socket = small});
  pusher p(ctx, {.connect = {pool.bound().at(0)}}, {.socket = small});
  std::vector<message> batch;
  for (int i = 0; i < 200; ++i)
    batch.emplace_back("jobs", std::string(1000, static_cast<char>('a' + i % 26)));
  const batch_status r = p.send_batch(batch);
  CHECK(r.status == send_status::ok);
  CHECK(r.frames >= 2);  // 200 KB of payloads cannot go in one frame of at most 100 KB
  REQUIRE(test::wait_until([&] { return got.count == 200; }));
  CHECK(pool.stats().malformed == 0);
}

TEST_CASE("send_batch stops at a message it cannot send, says why and leaves the rest alone",
          "[work_queue]") {
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {"inproc://wq-batch-stop"}}, [&](message& m) { got.add(m); });
  pusher p(ctx, {.connect = {"inproc://wq-batch-stop"}}, {.max_payload = 100});
  std::vector<message> batch;
  for (int i = 0; i < 5; ++i) batch.emplace_back("jobs", "m" + std::to_string(i));
  send_status why = send_status::too_large;
  SECTION("a topic holding 00 cannot be framed in v2: invalid") {
    batch[2].set_topic(std::string("jo\0bs", 5));
    why = send_status::invalid;
  }
  SECTION("a payload over max_payload: too_large") {
    batch[2].set_payload(std::string(101, 'x'));
  }
  SECTION("a key over what receivers accept: too_large") {
    batch[2].set_key(std::string(256, 'k'));
  }
  const batch_status r = p.send_batch(batch);
  CHECK(r.status == why);
  CHECK(r.sent == 2);
  CHECK((why == send_status::invalid ? p.stats().invalid : p.stats().too_large) == 1);
  CHECK(p.stats().sent == 2);
  CHECK(batch[3].payload() == "m3");  // still the caller's
  CHECK(batch[4].payload() == "m4");
  REQUIRE(test::wait_until([&] { return got.count == 2; }));
  pool.stop();
  CHECK(got.payloads == std::multiset<std::string>{"m0", "m1"});
}

TEST_CASE("dedup lets a resent batch reach the handler once", "[work_queue][dedup]") {
  context ctx;
  collected got;
  worker_pool pool(ctx, {.bind = {"inproc://wq-batch-dedup"}}, [&](message& m) { got.add(m); },
                   {.threads = 2, .dedup = dedup_options{}});
  pusher p(ctx, {.connect = {"inproc://wq-batch-dedup"}});
  std::vector<message> batch, resent;
  for (int i = 0; i < 20; ++i) {
    batch.emplace_back("jobs", "m" + std::to_string(i));
    resent.push_back(batch.back().clone());
  }
  REQUIRE(p.send_batch(batch).sent == 20);
  REQUIRE(p.send_batch(resent).sent == 20);
  REQUIRE(test::wait_until([&] { return pool.stats().received == 40; }));
  pool.stop();
  CHECK(got.count == 20);
  CHECK(std::set<std::string>(got.payloads.begin(), got.payloads.end()).size() == 20);
  CHECK(pool.stats().duplicates == 20);
  CHECK(pool.stats().v2_frames == 2);
}

TEST_CASE("dedup lets a resent id reach the handler once", "[work_queue][dedup]") {
  context ctx;
  std::atomic<int> calls{0};
  worker_pool pool(ctx, {.bind = {"inproc://wq-dedup"}}, [&](message&) { ++calls; },
                   {.threads = 2, .dedup = dedup_options{}});
  pusher p(ctx, {.connect = {"inproc://wq-dedup"}});
  message original("jobs", "once");
  for (int i = 0; i < 5; ++i) {
    message copy = original.clone();
    REQUIRE(p.send(copy) == send_status::ok);
  }
  message other("jobs", "other");
  REQUIRE(p.send(other) == send_status::ok);
  REQUIRE(test::wait_until([&] { return pool.stats().received == 6; }));
  pool.stop();
  CHECK(calls == 2);
  CHECK(pool.stats().duplicates == 4);
}

TEST_CASE("send reports would_block or timed_out instead of dropping", "[work_queue]") {
  context ctx;
  SECTION("no worker connected, no waiting") {
    pusher p(ctx, {.bind = {"inproc://wq-nobody"}}, {.send_timeout = 0ms});
    message m("jobs", "x");
    CHECK(p.send(m) == send_status::would_block);
    CHECK(m.payload() == "x");  // still the caller's
    CHECK(p.stats().would_block == 1);
  }
  SECTION("no worker connected, bounded wait") {
    pusher p(ctx, {.bind = {"inproc://wq-nobody2"}}, {.send_timeout = 50ms});
    message m("jobs", "x");
    CHECK(p.send(m) == send_status::timed_out);
    CHECK(m.payload() == "x");
  }
  SECTION("topic, key or headers over what receivers accept") {
    pusher p(ctx, {.bind = {"inproc://wq-limits"}}, {.send_timeout = 0ms});
    message long_topic(std::string(256, 't'), "x");
    CHECK(p.send(long_topic) == send_status::too_large);
    message long_key("jobs", "x");
    long_key.set_key(std::string(256, 'k'));
    CHECK(p.send(long_key) == send_status::too_large);
    message many_headers("jobs", "x");
    for (int i = 0; i < 65; ++i) many_headers.set_header("h" + std::to_string(i), "v");
    CHECK(p.send(many_headers) == send_status::too_large);
    CHECK(many_headers.payload() == "x");
  }
  SECTION("payload over the limit") {
    pusher p(ctx, {.bind = {"inproc://wq-big"}}, {.max_payload = 10});
    message m("jobs", std::string(11, 'x'));
    CHECK(p.send(m) == send_status::too_large);
    CHECK(p.stats().too_large == 1);
  }
}

TEST_CASE("every wait of a sender is finite by default and says how long", "[work_queue]") {
  CHECK(pusher_options{}.send_timeout == 10s);
  CHECK(publisher_options{}.send_timeout == 10s);
  CHECK(producer_options{}.send_timeout == 30s);
}

TEST_CASE("a pusher to nobody queues one high-water mark, then times out, logging that it cannot reach it",
          "[work_queue]") {
  test::log_capture log;
  const std::string nobody = test::free_tcp_endpoint();
  {
    context ctx;
    socket_options o;
    o.linger = 0ms;
    o.send_hwm = 10;
    pusher p(ctx, {.connect = {nobody}}, {.socket = o, .send_timeout = 1500ms});
    std::size_t sent = 0;
    send_status st = send_status::ok;
    const auto start = std::chrono::steady_clock::now();
    while (st == send_status::ok && sent < 100) {
      message m("jobs", "x");
      st = p.send(m);
      if (st == send_status::ok) ++sent;
    }
    CHECK(st == send_status::timed_out);
    CHECK(std::chrono::steady_clock::now() - start >= 1500ms);
    CHECK(sent >= 10);  // queued for the connection being attempted
    CHECK(sent < 100);
    CHECK(p.stats().connects == 0);
    CHECK(p.stats().connected == 0);
  }
  CHECK(log.count("pusher: cannot reach " + nobody + " (retrying)") == 1);
}

TEST_CASE("a pusher counts and logs the connections it makes and loses", "[work_queue]") {
  test::log_capture log;
  {
    context ctx;
    std::string endpoint;
    auto pool = std::make_unique<worker_pool>(ctx, endpoints{.bind = {"tcp://127.0.0.1:*"}}, [](message&) {});
    endpoint = pool->bound().at(0);
    pusher p(ctx, {.connect = {endpoint}});
    REQUIRE(test::wait_until([&] { return p.stats().connected == 1; }));
    CHECK(p.stats().connects == 1);
    pool.reset();
    REQUIRE(test::wait_until([&] { return p.stats().connected == 0; }));
    CHECK(log.count("pusher: connected to " + endpoint) == 1);
    CHECK(log.count("pusher: connection to " + endpoint + " lost; reconnecting") == 1);
  }
}

TEST_CASE("graceful stop finishes the running handler and leaves no thread behind", "[work_queue]") {
  context ctx;
  std::atomic<bool> in_handler{false};
  std::atomic<int> finished{0};
  auto pool = std::make_unique<worker_pool>(ctx, endpoints{.bind = {"inproc://wq-stop"}}, [&](message&) {
    in_handler = true;
    std::this_thread::sleep_for(200ms);
    ++finished;
  });
  pusher p(ctx, {.connect = {"inproc://wq-stop"}});
  send_n(p, 20);
  REQUIRE(test::wait_until([&] { return in_handler.load(); }));
  pool->stop();
  const auto s = pool->stats();
  CHECK(finished >= 1);
  CHECK(s.handled == static_cast<std::uint64_t>(finished.load()));
  // Everything sent is either handled or counted as dropped: nothing vanishes.
  CHECK(s.handled + s.dropped == 20);
  pool.reset();  // destructor after stop is a no-op
}

TEST_CASE("binding a busy address is a clear ferry::error", "[work_queue]") {
  context ctx;
  worker_pool first(ctx, {.bind = {"tcp://127.0.0.1:*"}}, [](message&) {});
  try {
    worker_pool second(ctx, {.bind = {first.bound().at(0)}}, [](message&) {});
    FAIL("expected ferry::error");
  } catch (const ferry::error& e) {
    CHECK_THAT(e.what(), Catch::Contains("address in use"));
  }
  CHECK_THROWS_AS(pusher(ctx, {.connect = {"nonsense"}}), ferry::error);
  CHECK_THROWS_AS(pusher(ctx, {}), ferry::error);
}
