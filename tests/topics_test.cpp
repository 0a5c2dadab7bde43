#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "ferry/publisher.hpp"
#include "ferry/subscriber.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

// One wire v2 frame of `msgs` (all of one topic), written from docs/protocol.md with the public envelope
// encoder: topic 00 [2, n] (envelope, payload as bin 8) x n.
void send_v2(zmq::socket_t& socket, std::span<message> msgs) {
  REQUIRE(msgs.size() < 128);  // the count as a positive fixint
  std::string frame = msgs.front().topic() + '\0' + "\x92\x02" + static_cast<char>(msgs.size());
  for (const message& m : msgs) {
    REQUIRE(m.payload().size() < 256);
    frame +=
        std::string(encode_envelope(m).to_string_view()) + "\xc4" + static_cast<char>(m.payload().size());
    frame += m.payload();
  }
  REQUIRE(socket.send(zmq::buffer(frame), zmq::send_flags::none));
}

// What a subscriber's handler saw of each message (by default its topic), thread-safely.
template <typename T = std::string>
class recorded {
 public:
  using projection = std::function<T(const message&)>;
  explicit recorded(projection what = [](const message& m) { return m.topic(); }) : what_(std::move(what)) {}
  message_handler handler() {
    return [this](message& m) {
      std::lock_guard lock(mutex_);
      values_.push_back(what_(m));
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex_);
    return values_.size();
  }
  std::vector<T> values() {
    std::lock_guard lock(mutex_);
    return values_;
  }

 private:
  projection what_;
  std::mutex mutex_;
  std::vector<T> values_;
};

using stream_position = std::tuple<std::string, std::uint64_t, std::uint64_t>;  // topic, origin, sequence

stream_position position_of(const message& m) {
  return {m.topic(), m.origin(), m.sequence()};
}

}  // namespace

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
  recorded<> got;
  subscriber sub(ctx, {.connect = {"inproc://topics-filter"}}, {"orders.", "alerts"}, got.handler());
  REQUIRE(pub.wait_for_subscriptions(2, 5s));
  // The last one arrives after everything published before it: what is missing then was filtered out.
  for (const char* t : {"orders.eu", "billing", "alerts", "orders", "alerts.high", "alerts.last"}) {
    message m(t, "x");
    REQUIRE(pub.publish(m) == send_status::ok);
  }
  REQUIRE(test::wait_until([&] { return got.size() == 4; }));
  sub.stop();
  CHECK(got.values() == std::vector<std::string>{"orders.eu", "alerts", "alerts.high", "alerts.last"});
}

TEST_CASE("sequence numbers count per topic and gaps are detected, in v1, v2 and v2 batches", "[topics]") {
  const std::string form = GENERATE(as<std::string>{}, "v1", "v2", "v2 batch");
  INFO(form);
  context ctx;
  // A raw PUB that skips sequence numbers, as a publisher behind a high-water-mark drop would look.
  zmq::socket_t raw = ctx.make_socket(zmq::socket_type::pub);
  raw.bind("inproc://topics-gaps");
  std::atomic<int> got{0};
  std::atomic<bool> last_seen{false};
  subscriber sub(ctx, {.connect = {"inproc://topics-gaps"}}, {""}, [&](message& m) {
    ++got;
    if (m.topic() == "b" && m.sequence() == 12) last_seen = true;
  });
  auto publish_seqs = [&](const std::string& topic, std::initializer_list<std::uint64_t> seqs) {
    std::vector<message> msgs;
    for (std::uint64_t seq : seqs) {
      msgs.emplace_back(topic, "x");
      msgs.back().set_stream(topic == "probe" ? 98 : 99, seq);
    }
    if (form == "v2 batch") return send_v2(raw, msgs);
    for (auto& m : msgs) {
      if (form == "v2") {
        send_v2(raw, {&m, 1});
        continue;
      }
      raw.send(zmq::buffer(topic), zmq::send_flags::sndmore);
      raw.send(encode_envelope(m), zmq::send_flags::sndmore);
      raw.send(m.payload_frame(), zmq::send_flags::none);
    }
  };
  // Wait for the subscription to arrive: send probes until one is received.
  REQUIRE(test::wait_until([&] {
    publish_seqs("probe", {1});
    return got > 0;
  }));
  publish_seqs("a", {1, 2, 3, 7, 8});  // 4,5,6 missing: 3
  publish_seqs("b", {10, 12});         // starts at 10; 11 missing: 1
  REQUIRE(test::wait_until([&] { return last_seen.load(); }));
  sub.stop();
  CHECK(sub.stats().gaps == 4);
  CHECK(sub.stats().malformed == 0);
  CHECK((form == "v1" ? sub.stats().v1_frames : sub.stats().v2_frames) >= 3);
}

TEST_CASE("a real publisher's sequences have no gaps and carry its origin", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-origin"}});
  recorded<stream_position> got(position_of);
  subscriber sub(ctx, {.connect = {"inproc://topics-origin"}}, {""}, got.handler());
  REQUIRE(pub.wait_for_subscriptions(1, 5s));
  for (int i = 0; i < 10; ++i) {
    message m(i % 2 ? "odd" : "even", "x");
    REQUIRE(pub.publish(m) == send_status::ok);
  }
  REQUIRE(test::wait_until([&] { return got.size() == 10; }));
  const auto seen = got.values();
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(std::get<1>(seen[i]) == pub.origin());
    CHECK(std::get<2>(seen[i]) == i / 2 + 1);
  }
}

TEST_CASE("a subscription ending in 00 takes one topic exactly, a prefix takes its extensions", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-exact"}});
  recorded<> exact, prefix;
  subscriber exact_sub(ctx, {.connect = {"inproc://topics-exact"}}, {std::string("orders\0", 7)},
                       exact.handler());
  subscriber prefix_sub(ctx, {.connect = {"inproc://topics-exact"}}, {"orders"}, prefix.handler());
  REQUIRE(pub.wait_for_subscriptions(2, 5s));
  for (const char* t : {"orders.eu", "orders", "orders2", "billing", "orders"}) {
    message m(t, "x");
    REQUIRE(pub.publish(m) == send_status::ok);
  }
  std::vector<message> batch;
  for (const char* t : {"orders.eu", "orders", "orders"}) batch.emplace_back(t, "x");
  REQUIRE(pub.publish_batch(batch).sent == 3);
  message last("orders", "end");  // once it has arrived, so has everything before it
  REQUIRE(pub.publish(last) == send_status::ok);
  REQUIRE(test::wait_until([&] { return exact.size() == 5 && prefix.size() == 8; }));
  exact_sub.stop();
  prefix_sub.stop();
  CHECK(exact.values() == std::vector<std::string>(5, "orders"));
  CHECK(prefix.values() == std::vector<std::string>{"orders.eu", "orders", "orders2", "orders", "orders.eu",
                                                    "orders", "orders", "orders"});
}

TEST_CASE("a subscription ending in 00 matches no v1 frame set: v1 topics have no separator", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-exact-v1"}}, {.wire = {.version = wire_version::v1}});
  recorded<> got;
  subscriber sub(ctx, {.connect = {"inproc://topics-exact-v1"}}, {std::string("orders\0", 7), "end"},
                 got.handler());
  REQUIRE(pub.wait_for_subscriptions(2, 5s));
  message orders("orders", "x"), end("end", "x");
  REQUIRE(pub.publish(orders) == send_status::ok);
  REQUIRE(pub.publish(end) == send_status::ok);  // after "orders" on the same connection
  REQUIRE(test::wait_until([&] { return got.size() == 1; }));
  sub.stop();
  CHECK(got.values() == std::vector<std::string>{"end"});
  CHECK(sub.stats().v1_frames == 1);
}

TEST_CASE("a subscriber takes v1 and v2 publishers at once and counts their frames apart", "[topics]") {
  context ctx;
  publisher old_pub(ctx, {.bind = {"inproc://topics-v1"}}, {.wire = {.version = wire_version::v1}});
  publisher new_pub(ctx, {.bind = {"inproc://topics-v2"}});
  recorded<> got;
  subscriber sub(ctx, {.connect = {"inproc://topics-v1", "inproc://topics-v2"}}, {""}, got.handler());
  REQUIRE(old_pub.wait_for_subscriptions(1, 5s));
  REQUIRE(new_pub.wait_for_subscriptions(1, 5s));
  for (int i = 0; i < 20; ++i) {
    message a("old", "x"), b("new", "x");
    REQUIRE(old_pub.publish(a) == send_status::ok);
    REQUIRE(new_pub.publish(b) == send_status::ok);
  }
  REQUIRE(test::wait_until([&] { return got.size() == 40; }));
  sub.stop();
  CHECK(sub.stats().v1_frames == 20);
  CHECK(sub.stats().v2_frames == 20);
  CHECK(sub.stats().gaps == 0);
}

TEST_CASE("publish_batch sends one frame per run, with sequences that continue across batches", "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-batch"}});
  recorded<stream_position> got(position_of);
  subscriber sub(ctx, {.connect = {"inproc://topics-batch"}}, {""}, got.handler());
  REQUIRE(pub.wait_for_subscriptions(1, 5s));
  message first("a", "x");
  REQUIRE(pub.publish(first) == send_status::ok);  // a:1
  std::vector<message> batch;
  for (const char* t : {"a", "a", "a", "b", "b", "a"}) batch.emplace_back(t, "x");
  const batch_status r = pub.publish_batch(batch);  // a:2-4, b:1-2, a:5 in three frames
  CHECK(r.status == send_status::ok);
  CHECK(r.sent == 6);
  CHECK(r.frames == 3);
  message last("b", "x");
  REQUIRE(pub.publish(last) == send_status::ok);  // b:3
  REQUIRE(test::wait_until([&] { return got.size() == 8; }));
  sub.stop();
  const std::uint64_t o = pub.origin();
  CHECK(got.values() == std::vector<stream_position>{{"a", o, 1},
                                                     {"a", o, 2},
                                                     {"a", o, 3},
                                                     {"a", o, 4},
                                                     {"b", o, 1},
                                                     {"b", o, 2},
                                                     {"a", o, 5},
                                                     {"b", o, 3}});
  CHECK(pub.stats().published == 8);
  CHECK(pub.stats().frames == 5);
  CHECK(sub.stats().v2_frames == 5);
  CHECK(sub.stats().received == 8);
  CHECK(sub.stats().gaps == 0);
}

TEST_CASE("publish_batch stopping at a message it cannot frame gives back that message's sequence",
          "[topics]") {
  context ctx;
  publisher pub(ctx, {.bind = {"inproc://topics-batch-stop"}});
  recorded<std::uint64_t> sequences([](const message& m) { return m.sequence(); });
  subscriber sub(ctx, {.connect = {"inproc://topics-batch-stop"}}, {"t"}, sequences.handler());
  REQUIRE(pub.wait_for_subscriptions(1, 5s));
  std::vector<message> batch;
  for (int i = 0; i < 4; ++i) batch.emplace_back("t", "x");
  batch[2].set_topic(std::string("t\0", 2));
  const batch_status r = pub.publish_batch(batch);
  CHECK(r.status == send_status::invalid);
  CHECK(r.sent == 2);
  CHECK(batch[2].sequence() == 0);  // unchanged
  CHECK(batch[3].sequence() == 0);
  message next("t", "x");
  REQUIRE(pub.publish(next) == send_status::ok);
  CHECK(next.sequence() == 3);
  REQUIRE(test::wait_until([&] { return sequences.size() == 3; }));
  sub.stop();
  CHECK(sequences.values() == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(sub.stats().gaps == 0);
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
