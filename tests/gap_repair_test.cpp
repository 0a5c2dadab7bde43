// Gap repair (the zguide's "Clone" idea): ferryd's live feed (--feed) publishes every stored topic message
// with the topic's sequence number; a ferry::subscriber with options.repair that sees a gap FETCHes the
// missing range from ferryd before it handles the next message. A proxy between the feed and the
// subscriber drops chosen frames, as a high-water mark or a broken connection would. Also FETCH itself:
// ranges, retention, other origins, unknown topics and malformed requests.

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "detail/wire.hpp"
#include "ferry/admin.hpp"
#include "ferry/producer.hpp"
#include "ferry/publisher.hpp"
#include "ferry/subscriber.hpp"
#include "support/ferryd_client.hpp"
#include "support/running_forwarder.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using ferry::test::raw_client;
using ferry::test::running_forwarder;
using namespace std::chrono_literals;

namespace {

ferryd::forwarder_options with_feed() {
  ferryd::forwarder_options o;
  o.feed = {"tcp://127.0.0.1:*"};
  return o;
}

// Forwards ferryd's feed to a PUB of its own, dropping every frame that contains `marker` (a frame holds
// whole messages of one topic: dropping it loses all of them, as a high-water mark would).
class dropping_proxy {
 public:
  dropping_proxy(context& ctx, const std::string& feed, std::string marker)
      : sub_(ctx.make_socket(zmq::socket_type::sub)),
        pub_(ctx.make_socket(zmq::socket_type::pub)),
        marker_(std::move(marker)) {
    sub_.set(zmq::sockopt::subscribe, "");
    connect(sub_, feed);
    endpoint_ = bind(pub_, "tcp://127.0.0.1:*");
    thread_ = std::thread([this] { run(); });
  }
  ~dropping_proxy() {
    stop_ = true;
    thread_.join();
  }
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }

 private:
  void run() {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{sub_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, 20ms) == 0) continue;
      zmq::message_t frame;
      (void)sub_.recv(frame);
      const std::string_view bytes = frame.to_string_view();
      if (bytes.find(marker_) != std::string_view::npos) {
        ++dropped_;
        continue;
      }
      (void)pub_.send(frame, zmq::send_flags::none);
    }
  }

  zmq::socket_t sub_;
  zmq::socket_t pub_;
  std::string marker_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> dropped_{0};
  std::thread thread_;
};

struct handled {
  std::mutex mu;
  std::vector<std::pair<std::uint64_t, std::string>> got;  // sequence, payload
  void add(const message& m) {
    std::lock_guard lock(mu);
    got.emplace_back(m.sequence(), std::string(m.payload()));
  }
  std::size_t count(std::string_view prefix) {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const auto& [s, p] : got) n += p.rfind(prefix, 0) == 0 ? 1 : 0;
    return n;
  }
  std::vector<std::pair<std::uint64_t, std::string>> all() {
    std::lock_guard lock(mu);
    return got;
  }
};

void publish_burst(producer& p, const std::string& topic, const std::string& prefix, int n) {
  for (int i = 0; i < n; ++i) {
    message m(topic, prefix + std::to_string(i));
    REQUIRE(p.publish(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));  // confirmed: its feed frames left before the confirm did
}

// Publishes "warm" messages until `sub` has handled one, so the feed's subscription has reached the proxy
// and the proxy's the subscriber (the slow-joiner effect).
void warm_up(producer& p, const std::string& topic, handled& seen) {
  for (int i = 0; i < 200 && seen.count("warm") == 0; ++i) {
    publish_burst(p, topic, "warm", 1);
    test::wait_until([&] { return seen.count("warm") > 0; }, 50ms);
  }
  REQUIRE(seen.count("warm") > 0);
}

}  // namespace

TEST_CASE("a subscriber of ferryd's live feed fetches what it missed and handles every message in order",
          "[topics][repair][forwarder]") {
  running_forwarder fwdr(with_feed());
  REQUIRE(fwdr.f->feed_bound().size() == 1);
  context ctx;
  dropping_proxy proxy(ctx, fwdr.f->feed_bound().front(), "LOST");
  handled repaired_seen, plain_seen;
  subscriber_options with_repair;
  with_repair.repair = gap_repair{.forwarder = fwdr.endpoint};
  subscriber repairing(
      ctx, {.connect = {proxy.endpoint()}}, {"prices"}, [&](message& m) { repaired_seen.add(m); },
      with_repair);
  subscriber plain(ctx, {.connect = {proxy.endpoint()}}, {"prices"}, [&](message& m) { plain_seen.add(m); });
  producer p(ctx, fwdr.endpoint);
  warm_up(p, "prices", repaired_seen);
  REQUIRE(test::wait_until([&] { return plain_seen.count("warm") > 0; }, 10s));

  publish_burst(p, "prices", "a", 10);
  publish_burst(p, "prices", "LOST-b", 10);
  publish_burst(p, "prices", "c", 10);
  publish_burst(p, "prices", "LOST-d", 25);
  publish_burst(p, "prices", "e", 10);
  REQUIRE(
      test::wait_until([&] { return repaired_seen.count("e") == 10 && plain_seen.count("e") == 10; }, 10s));
  CHECK(proxy.dropped() >= 2);

  // The repairing subscriber handled every message from its first one on, in sequence order, once.
  const auto got = repaired_seen.all();
  for (std::size_t i = 1; i < got.size(); ++i) {
    INFO("message " << i << ": " << got[i].second);
    CHECK(got[i].first == got[i - 1].first + 1);
  }
  CHECK(repaired_seen.count("LOST-b") == 10);
  CHECK(repaired_seen.count("LOST-d") == 25);
  CHECK(repaired_seen.count("a") == 10);
  const receive_stats rs = repairing.stats();
  CHECK(rs.repaired == 35);
  CHECK(rs.gaps == 0);

  // Without repair the same feed leaves gaps, counted.
  CHECK(plain_seen.count("LOST") == 0);
  const receive_stats ps = plain.stats();
  CHECK(ps.gaps == 35);
  CHECK(ps.repaired == 0);

  admin adm(ctx, fwdr.endpoint);
  const forwarder_stats st = adm.stats();
  REQUIRE(st.topics.count("prices") == 1);
  CHECK(st.topics.at("prices").fetched == 35);
  CHECK(st.topics.at("prices").fetches >= 2);
  CHECK(st.topics.at("prices").fed == st.topics.at("prices").published);
}

TEST_CASE("gap repair leaves other publishers' gaps counted and unrepaired", "[topics][repair][forwarder]") {
  running_forwarder fwdr(with_feed());
  context ctx;
  // A brokerless publisher through the same dropping proxy: its gaps are not ferryd's to fill.
  publisher pub(ctx, {.bind = {"tcp://127.0.0.1:*"}});
  dropping_proxy proxy(ctx, pub.bound().front(), "LOST");
  handled seen;
  subscriber_options o;
  o.repair = gap_repair{.forwarder = fwdr.endpoint, .timeout = 2s};
  subscriber sub(
      ctx, {.connect = {proxy.endpoint()}}, {"ticks"}, [&](message& m) { seen.add(m); }, o);
  for (int i = 0; i < 200 && seen.count("warm") == 0; ++i) {
    message m("ticks", "warm");
    REQUIRE(pub.publish(m) == send_status::ok);
    test::wait_until([&] { return seen.count("warm") > 0; }, 50ms);
  }
  REQUIRE(seen.count("warm") > 0);
  for (const char* body : {"x1", "LOST-1", "x2", "LOST-2", "x3"}) {
    message m("ticks", body);
    REQUIRE(pub.publish(m) == send_status::ok);
    std::this_thread::sleep_for(20ms);  // one frame each
  }
  REQUIRE(test::wait_until([&] { return seen.count("x3") == 1; }, 10s));
  CHECK(seen.count("LOST") == 0);
  CHECK(sub.stats().gaps == 2);
  CHECK(sub.stats().repaired == 0);
}

TEST_CASE("FETCH reads a stored topic's range back, tells where retention starts, refuses what it cannot",
          "[topics][repair][forwarder]") {
  ferryd::forwarder_options o;
  o.queue.segment_bytes = 4096;
  o.queue.retain_messages = 40;
  running_forwarder fwdr(o);
  context ctx;
  producer p(ctx, fwdr.endpoint);
  for (int burst = 0; burst < 10; ++burst) publish_burst(p, "log", "m" + std::to_string(burst) + "-", 20);
  raw_client raw(fwdr.endpoint);
  admin adm(ctx, fwdr.endpoint);
  // Retention deletes the oldest segments when the commit thread is idle.
  REQUIRE(test::wait_until([&] { return adm.stats().topics.at("log").first_seq > 1; }, 10s));
  const topic_stats before = adm.stats().topics.at("log");
  REQUIRE(before.last_seq == 200);
  const std::uint64_t origin = [&] {
    // The topic's origin, from a message it delivered.
    std::vector<message> decoded;
    std::vector<detail::payload_span> spans;
    std::size_t n = 0;
    const auto r = raw.exchange({"FETCH", "log", test::msgpack_map({}, {{"from", 200}, {"count", 1}})});
    REQUIRE(r.size() == 4);
    REQUIRE(detail::decode_block(r[3], decoded, spans, n, {}) == decode_error::none);
    REQUIRE(n == 1);
    CHECK(decoded[0].sequence() == 200);
    return decoded[0].origin();
  }();

  SECTION("a range inside the retained messages") {
    const std::uint64_t from = before.first_seq + 3;
    const auto r = raw.exchange({"FETCH", "log",
                                 test::msgpack_map({}, {{"from", static_cast<std::int64_t>(from)},
                                                        {"count", 5},
                                                        {"origin", static_cast<std::int64_t>(origin)}})});
    REQUIRE(r.size() == 4);
    CHECK(r[0] == "FETCHED");
    CHECK(r[1] == "log");
    const auto meta = test::msgpack_fields(r[2]);
    CHECK(meta.at("count") == "5");
    CHECK(meta.at("next") == std::to_string(from + 5));
    CHECK(meta.at("last") == "200");
    CHECK(meta.at("first_retained") == std::to_string(before.first_seq));
    std::vector<message> decoded;
    std::vector<detail::payload_span> spans;
    std::size_t n = 0;
    REQUIRE(detail::decode_block(r[3], decoded, spans, n, {}) == decode_error::none);
    REQUIRE(n == 5);
    for (std::size_t i = 0; i < n; ++i) CHECK(decoded[i].sequence() == from + i);
  }
  SECTION("from before the retained range: it starts at the oldest retained message") {
    const auto r = raw.exchange({"FETCH", "log", test::msgpack_map({}, {{"from", 1}, {"count", 3}})});
    REQUIRE(r.size() == 4);
    const auto meta = test::msgpack_fields(r[2]);
    CHECK(meta.at("count") == "3");
    CHECK(meta.at("next") == std::to_string(before.first_seq + 3));
  }
  SECTION("from after the newest message: nothing, and where it would go on") {
    const auto r = raw.exchange({"FETCH", "log", test::msgpack_map({}, {{"from", 201}})});
    REQUIRE(r.size() == 4);
    const auto meta = test::msgpack_fields(r[2]);
    CHECK(meta.at("count") == "0");
    CHECK(meta.at("next") == "201");
  }
  SECTION("another stream's origin, an unknown topic, bad options") {
    auto r = raw.exchange(
        {"FETCH", "log",
         test::msgpack_map({}, {{"from", 1}, {"origin", static_cast<std::int64_t>(origin ^ 1)}})});
    REQUIRE(r.size() == 3);
    CHECK(r[0] == "ERROR");
    CHECK(r[1] == "other_origin");
    r = raw.exchange({"FETCH", "nothing-here", test::msgpack_map({}, {{"from", 1}})});
    REQUIRE(r.size() == 3);
    CHECK(r[1] == "no_topic");
    r = raw.exchange({"FETCH", "log", test::msgpack_map({}, {{"count", 1}})});
    REQUIRE(r.size() == 3);
    CHECK(r[1] == "bad_frames");
    r = raw.exchange({"FETCH", "log", "not msgpack \xc1"});
    REQUIRE(r.size() == 3);
    CHECK(r[1] == "bad_frames");
    r = raw.exchange({"FETCH", "log"});
    REQUIRE(r.size() == 3);
    CHECK(r[1] == "bad_frames");
    r = raw.exchange({"FETCH", "bad/name", test::msgpack_map({}, {{"from", 1}})});
    REQUIRE(r.size() == 3);
    CHECK(r[1] == "bad_queue");
    // ferryd still serves.
    publish_burst(p, "log", "after", 1);
  }
}
