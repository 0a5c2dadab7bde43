#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "ferry/publisher.hpp"
#include "ferry/subscriber.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

TEST_CASE("every subscriber gets every message once it is subscribed", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"tcp://127.0.0.1:*"}});
  constexpr int subscribers = 3, messages = 500;
  std::vector<std::atomic<int>> counts(subscribers);
  std::vector<std::unique_ptr<subscriber>> subs;
  for (int i = 0; i < subscribers; ++i)
    subs.push_back(std::make_unique<subscriber>(ctx, endpoints{.connect = {pub.bound().at(0)}},
                                                std::vector<std::string>{"news"},
                                                [&, i](message&) { ++counts[static_cast<std::size_t>(i)]; }));
  REQUIRE(pub.wait_for_subscriptions(subscribers, 5s));
  for (int i = 0; i < messages; ++i) {
    message m("news.sport", "goal " + std::to_string(i));
    REQUIRE(pub.publish(m) == send_status::ok);
  }
  REQUIRE(test::wait_until([&] {
    for (auto& c : counts)
      if (c < messages) return false;
    return true;
  }));
  for (auto& s : subs) {
    s->stop();
    CHECK(s->stats().gaps == 0);
    CHECK(s->stats().handled == static_cast<std::uint64_t>(messages));
  }
}

TEST_CASE("prefix subscriptions filter by topic", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-filter"}});
  std::mutex mu;
  std::vector<std::string> topics;
  subscriber sub(ctx, {.connect = {"inproc://topics-filter"}}, {"orders.", "alerts"}, [&](message& m) {
    std::lock_guard lock(mu);
    topics.push_back(m.topic());
  });
  REQUIRE(pub.wait_for_subscriptions(2, 5s));
  for (const char* t : {"orders.eu", "billing", "alerts", "orders", "alerts.high"}) {
    message m(t, "x");
    REQUIRE(pub.publish(m) == send_status::ok);
  }
  REQUIRE(test::wait_until([&] {
    std::lock_guard lock(mu);
    return topics.size() == 3;
  }));
  std::this_thread::sleep_for(50ms);
  std::lock_guard lock(mu);
  CHECK(topics == std::vector<std::string>{"orders.eu", "alerts", "alerts.high"});
}

TEST_CASE("sequence numbers count per topic and gaps are detected", "[topics]") {
  context ctx;
  // A raw PUB that skips sequence numbers, as a publisher behind a high-water-mark drop would look.
  zmq::socket_t raw(ctx.zmq(), zmq::socket_type::pub);
  raw.bind("inproc://topics-gaps");
  std::atomic<int> got{0};
  std::atomic<bool> last_seen{false};
  subscriber sub(ctx, {.connect = {"inproc://topics-gaps"}}, {""}, [&](message& m) {
    ++got;
    if (m.topic() == "b" && m.sequence() == 12) last_seen = true;
  });
  auto publish_seq = [&](const std::string& topic, std::uint64_t seq) {
    message m(topic, "x");
    m.set_stream(topic == "probe" ? 98 : 99, seq);
    raw.send(zmq::buffer(topic), zmq::send_flags::sndmore);
    raw.send(encode_envelope(m), zmq::send_flags::sndmore);
    raw.send(m.payload_frame(), zmq::send_flags::none);
  };
  // Wait for the subscription to arrive: send probes until one is received.
  REQUIRE(test::wait_until([&] {
    publish_seq("probe", 1);
    return got > 0;
  }));
  for (std::uint64_t s : {1, 2, 3, 7, 8}) publish_seq("a", s);  // 4,5,6 missing: 3
  for (std::uint64_t s : {10, 12}) publish_seq("b", s);         // starts at 10; 11 missing: 1
  REQUIRE(test::wait_until([&] { return last_seen.load(); }));
  sub.stop();
  CHECK(sub.stats().gaps == 4);
}

TEST_CASE("a real publisher's sequences have no gaps and carry its origin", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-origin"}});
  std::mutex mu;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seen;
  subscriber sub(ctx, {.connect = {"inproc://topics-origin"}}, {""}, [&](message& m) {
    std::lock_guard lock(mu);
    seen.emplace_back(m.origin(), m.sequence());
  });
  REQUIRE(pub.wait_for_subscriptions(1, 5s));
  for (int i = 0; i < 10; ++i) {
    message m(i % 2 ? "odd" : "even", "x");
    REQUIRE(pub.publish(m) == send_status::ok);
  }
  REQUIRE(test::wait_until([&] {
    std::lock_guard lock(mu);
    return seen.size() == 10;
  }));
  std::lock_guard lock(mu);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].first == pub.origin());
    CHECK(seen[i].second == i / 2 + 1);
  }
}

TEST_CASE("block mode waits instead of dropping and reports timed_out", "[topics]") {
  context ctx;
  socket_options small;
  small.send_hwm = 10;
  small.receive_hwm = 10;
  publisher pub(ctx, {.bind = {"inproc://topics-block"}},
                {.socket = small, .when_full = when_full::block, .send_timeout = 20ms});
  std::atomic<bool> release{false};
  std::atomic<int> got{0};
  subscriber sub(ctx, {.connect = {"inproc://topics-block"}}, {""},
                 [&](message&) {
                   while (!release) std::this_thread::sleep_for(1ms);
                   ++got;
                 },
                 {.socket = small});
  REQUIRE(pub.wait_for_subscriptions(1, 5s));
  int sent = 0;
  send_status last = send_status::ok;
  for (int i = 0; i < 1000 && last == send_status::ok; ++i) {
    message m("t", "x");
    last = pub.publish(m);
    if (last == send_status::ok) ++sent;
  }
  CHECK(last == send_status::timed_out);
  CHECK(pub.stats().timed_out == 1);
  release = true;
  REQUIRE(test::wait_until([&] { return got == sent; }));
  sub.stop();
  CHECK(sub.stats().gaps == 0);
}

TEST_CASE("wait_for_subscriptions times out when nobody subscribes", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-lonely"}});
  CHECK_FALSE(pub.wait_for_subscriptions(1, 30ms));
}
