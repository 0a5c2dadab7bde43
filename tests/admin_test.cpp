// ferry::admin and the STATS schema (lib/detail/stats_schema.hpp), against a fake ferryd: a ROUTER in this
// process that answers with bytes the test chose. tests/forwarder_test.cpp drives admin against a real one.
#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <zmq_addon.hpp>

#include "detail/stats_schema.hpp"
#include "ferry/admin.hpp"
#include "ferry/error.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;
namespace schema = ferry::detail::stats_schema;

namespace {

using frames = std::vector<std::string>;

// Answers every request on inproc://fake-ferryd with what `answer` returns (nothing when it returns {}),
// and records the requests.
class fake_ferryd {
 public:
  fake_ferryd(context& ctx, std::function<frames(const frames&)> answer)
      : socket_(ctx.make_socket(zmq::socket_type::router)), answer_(std::move(answer)) {
    (void)bind(socket_, endpoint);
    thread_ = std::thread([this] { serve(); });
  }
  ~fake_ferryd() {
    stop_ = true;
    thread_.join();
  }
  fake_ferryd(const fake_ferryd&) = delete;
  fake_ferryd& operator=(const fake_ferryd&) = delete;

  [[nodiscard]] std::vector<frames> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

  static constexpr const char* endpoint = "inproc://fake-ferryd";

 private:
  void serve() {
    while (!stop_) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, 20ms) == 0) continue;
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(socket_, std::back_inserter(parts));
      frames request;
      for (std::size_t i = 1; i < parts.size(); ++i) request.push_back(parts[i].to_string());
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(request);
      }
      const frames reply = answer_(request);
      if (reply.empty()) continue;
      std::vector<zmq::message_t> out;
      out.push_back(std::move(parts[0]));  // the routing id
      for (const auto& f : reply) out.emplace_back(f.data(), f.size());
      (void)zmq::send_multipart(socket_, out);
    }
  }

  zmq::socket_t socket_;
  std::function<frames(const frames&)> answer_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<frames> requests_;
  std::thread thread_;
};

std::string packed(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return std::string(buf.data(), buf.size());
}

// Every field set to a value of its own (1, 2, 3, ...), so a field decoded into another's place shows.
forwarder_stats distinct_stats() {
  forwarder_stats s;
  std::uint64_t next = 1;
  for (const auto& f : schema::forwarder_fields)
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(s.*member)>;
          if constexpr (std::is_same_v<T, std::string>) {
            s.*member = "value of " + std::string(f.name);
          } else if constexpr (std::is_same_v<T, double>) {
            s.*member = static_cast<double>(next++) + 0.25;
          } else {
            s.*member = (next++) << 40;  // beyond 32 bits
          }
        },
        f.member);
  for (const std::string name : {"jobs", "jobs.dlq"}) {
    queue_stats& q = s.queues[name];
    for (const auto& f : schema::queue_fields) q.*f.member = next++;
  }
  topic_stats& t = s.topics["events"];
  for (const auto& f : schema::topic_fields) t.*f.member = next++;
  return s;
}

}  // namespace

TEST_CASE("stats_schema: every field has a name, a label, a help text and a unit, each name once",
          "[stats_schema]") {
  // Each table's names are distinct (the STATS map and each queue's map are separate namespaces).
  auto check_table = [](const auto& table, const char* what) {
    std::set<std::string_view> names;
    for (const auto& f : table) {
      INFO(what << " field " << f.name);
      CHECK(!f.name.empty());
      CHECK(!f.label.empty());
      CHECK(!f.help.empty());
      CHECK(!f.unit.empty());
      CHECK(names.insert(f.name).second);
      CHECK(f.name != "queues");
    }
  };
  check_table(schema::forwarder_fields, "forwarder");
  check_table(schema::queue_fields, "queue");
  check_table(schema::topic_fields, "topic");
  for (const auto& f : schema::queue_fields) CHECK(f.kind != schema::field_kind::info);
  for (const auto& f : schema::topic_fields) CHECK(f.kind != schema::field_kind::info);
  // A member added to queue_stats or topic_stats without its line in the table fails here.
  STATIC_REQUIRE(sizeof(queue_stats) == schema::queue_fields.size() * sizeof(std::uint64_t));
  STATIC_REQUIRE(sizeof(topic_stats) == schema::topic_fields.size() * sizeof(std::uint64_t));
}

TEST_CASE("stats_schema: encode_stats round-trips through the admin client's decoding, every field",
          "[stats_schema][admin]") {
  const forwarder_stats sent = distinct_stats();
  const std::string bytes = schema::encode_stats(sent);

  SECTION("decode_stats") {
    const auto got = schema::decode_stats(bytes);
    REQUIRE(got);
    CHECK(*got == sent);
  }
  SECTION("ferry::admin::stats, over a socket") {
    context ctx;
    fake_ferryd fake(ctx, [&](const frames& r) {
      return r.at(0) == "STATS" ? frames{"STATS", bytes} : frames{};
    });
    admin a(ctx, fake_ferryd::endpoint);
    const forwarder_stats got = a.stats();
    CHECK(got == sent);
    for (const auto& f : schema::queue_fields) {
      INFO("queue field " << f.name);
      CHECK(got.queues.at("jobs").*f.member == sent.queues.at("jobs").*f.member);
    }
    CHECK(fake.requests() == std::vector<frames>{{"STATS"}});
  }
}

TEST_CASE("stats_schema: a reply from an older or a newer ferryd decodes", "[stats_schema]") {
  SECTION("missing fields are 0, unknown ones are ignored") {
    const std::string bytes = packed([](auto& pk) {
      pk.pack_map(4);
      pk.pack("server");
      pk.pack("ferryd 9.9.9");
      pk.pack("from_the_future");
      pk.pack_array(0);
      pk.pack("commits");
      pk.pack(7);
      pk.pack("queues");
      pk.pack_map(2);
      pk.pack("jobs");
      pk.pack_map(2);
      pk.pack("depth");
      pk.pack(3);
      pk.pack("wormholes");
      pk.pack(1);
      pk.pack("broken");
      pk.pack("not a map");
    });
    const auto got = schema::decode_stats(bytes);
    REQUIRE(got);
    forwarder_stats expected;
    expected.server = "ferryd 9.9.9";
    expected.commits = 7;
    expected.queues["jobs"].depth = 3;
    CHECK(*got == expected);
  }
  SECTION("rejected_frames, the old name of malformed_frames") {
    auto with = [](bool old_name, bool new_name) {
      return packed([&](auto& pk) {
        pk.pack_map(static_cast<std::uint32_t>(old_name) + static_cast<std::uint32_t>(new_name));
        if (old_name) {
          pk.pack("rejected_frames");
          pk.pack(5);
        }
        if (new_name) {
          pk.pack("malformed_frames");
          pk.pack(6);
        }
      });
    };
    CHECK(schema::decode_stats(with(true, false))->malformed_frames == 5);
    CHECK(schema::decode_stats(with(false, true))->malformed_frames == 6);
    CHECK(schema::decode_stats(with(true, true))->malformed_frames == 6);
  }
  SECTION("anything but a map does not") {
    CHECK(!schema::decode_stats(""));
    CHECK(!schema::decode_stats("\xc1"));
    CHECK(!schema::decode_stats(packed([](auto& pk) { pk.pack_array(0); })));
  }
}

TEST_CASE("admin: DLQ list, replay and purge send their request and decode the answer", "[admin]") {
  const auto id = message_id::generate();
  context ctx;
  fake_ferryd fake(ctx, [&](const frames& r) -> frames {
    if (r.size() < 3 || r[0] != "DLQ") return {"ERROR", "bad_frames", "DLQ needs more"};
    if (r[2] == "replay")
      return {"DLQ", packed([](auto& pk) {
                pk.pack_map(1);
                pk.pack("replayed");
                pk.pack(4);
              })};
    if (r[2] == "purge")
      return {"DLQ", packed([](auto& pk) {
                pk.pack_map(1);
                pk.pack("purged");
                pk.pack(2);
              })};
    return {"DLQ", packed([&](auto& pk) {
              pk.pack_map(3);
              pk.pack("queue");
              pk.pack(r[1] + ".dlq");
              pk.pack("depth");
              pk.pack(9);
              pk.pack("messages");
              pk.pack_array(2);
              pk.pack_map(7);
              pk.pack("seq");
              pk.pack(12);
              pk.pack("id");
              pk.pack_bin(16);
              pk.pack_bin_body(id.view().data(), 16);
              pk.pack("timestamp_us");
              pk.pack(1'700'000'000'000'000);
              pk.pack("key");
              pk.pack("k");
              pk.pack("headers");
              pk.pack(std::map<std::string, std::string>{{"ferry-attempts", "3"}, {"source", "cli"}});
              pk.pack("stored_at_us");
              pk.pack(1'700'000'000'000'001);
              pk.pack("payload");
              pk.pack_bin(3);
              pk.pack_bin_body("a\0b", 3);
              pk.pack_map(1);  // a record ferryd could not read: every field empty
              pk.pack("id");
              pk.pack_bin(0);
              pk.pack_bin_body("", 0);
            })};
  });
  admin a(ctx, fake_ferryd::endpoint);

  const dlq_listing listing = a.dlq_list("jobs", 50);
  CHECK(listing.queue == "jobs.dlq");
  CHECK(listing.depth == 9);
  REQUIRE(listing.messages.size() == 2);
  const dead_letter& d = listing.messages[0];
  CHECK(d.seq == 12);
  CHECK(d.id == id);
  CHECK(d.timestamp_us == 1'700'000'000'000'000);
  CHECK(d.key == "k");
  CHECK(d.headers == ferry::headers{{"ferry-attempts", "3"}, {"source", "cli"}});
  CHECK(d.stored_at_us == 1'700'000'000'000'001);
  CHECK(d.payload == std::string("a\0b", 3));
  CHECK(listing.messages[1].id.is_nil());
  CHECK(listing.messages[1].payload.empty());

  CHECK(a.dlq_replay("jobs", 10) == 4);
  CHECK(a.dlq_purge("jobs") == 2);

  const auto limit = [](std::uint64_t n) {
    return packed([&](auto& pk) {
      pk.pack_map(1);
      pk.pack("limit");
      pk.pack(n);
    });
  };
  CHECK(fake.requests() == std::vector<frames>{{"DLQ", "jobs", "list", limit(50)},
                                               {"DLQ", "jobs", "replay", limit(10)},
                                               {"DLQ", "jobs", "purge", limit(100)}});
}

TEST_CASE("admin: a DLQ filter is sent as from, before and reason, and the answer says where to go on",
          "[admin]") {
  context ctx;
  fake_ferryd fake(ctx, [&](const frames& r) -> frames {
    if (r.size() < 3 || r[0] != "DLQ") return {"ERROR", "bad_frames", "DLQ needs more"};
    return {"DLQ", packed([&](auto& pk) {
              pk.pack_map(5);
              pk.pack(r[2] == "purge" ? "purged" : "replayed");
              pk.pack(3);
              pk.pack("depth");
              pk.pack(17);
              pk.pack("end");
              pk.pack(40);
              pk.pack("next");
              pk.pack(25);
              pk.pack("more");
              pk.pack(r[2] == "purge");
            })};
  });
  admin a(ctx, fake_ferryd::endpoint);
  const dlq_result replayed =
      a.dlq_replay("jobs", dlq_filter{.limit = 3, .from_seq = 9, .before_seq = 40, .reason = "timeout"});
  CHECK(replayed.done == 3);
  CHECK(replayed.depth == 17);
  CHECK(replayed.end_seq == 40);
  CHECK(replayed.position.next_seq == 25);
  CHECK_FALSE(replayed.position.more);
  const dlq_result purged = a.dlq_purge("jobs", dlq_filter{.limit = 5});
  CHECK(purged.done == 3);
  CHECK(purged.position.more);

  const std::string full = packed([](auto& pk) {
    pk.pack_map(4);
    pk.pack("limit");
    pk.pack(3);
    pk.pack("from");
    pk.pack(9);
    pk.pack("before");
    pk.pack(40);
    pk.pack("reason");
    pk.pack("timeout");
  });
  const std::string bare = packed([](auto& pk) {
    pk.pack_map(1);
    pk.pack("limit");
    pk.pack(5);
  });
  CHECK(fake.requests() ==
        std::vector<frames>{{"DLQ", "jobs", "replay", full}, {"DLQ", "jobs", "purge", bare}});
}

TEST_CASE("admin: ERROR, silence and bytes that do not decode are ferry::errors that say what to check",
          "[admin]") {
  context ctx;
  std::atomic<int> asked{0};
  fake_ferryd fake(ctx, [&](const frames& r) -> frames {
    ++asked;
    if (r[0] == "DLQ")
      return {"ERROR", "bad_queue", "DLQ takes the name of the queue whose dead letters to use"};
    if (asked == 1) return {};  // the first STATS goes unanswered
    if (asked == 2) return {"STATS", "not msgpack"};
    return {"PONG", "12345678"};
  });
  admin a(ctx, fake_ferryd::endpoint);
  const std::string ep = fake_ferryd::endpoint;

  CHECK_THROWS_MATCHES(a.stats(200ms), ferry::error,
                       Catch::Message("ferryd at " + ep + " did not answer within 200 ms"));
  CHECK_THROWS_MATCHES(
      a.stats(), ferry::error,
      Catch::Message("ferryd at " + ep + " sent a STATS reply that does not decode (is it a ferryd?)"));
  CHECK_THROWS_WITH(a.stats(), Catch::StartsWith("ferryd at " + ep + " answered PONG to STATS"));
  CHECK_THROWS_WITH(a.dlq_list("jobs.dlq"),
                    Catch::StartsWith("ferryd at " + ep +
                                      " refused DLQ list of queue jobs.dlq: bad_queue: DLQ takes the name") &&
                        Catch::Contains("not ending in .dlq"));

  SECTION("nothing listening") {
    admin nobody(ctx, test::free_tcp_endpoint());
    CHECK_THROWS_WITH(nobody.dlq_purge("jobs", 1, 100ms), Catch::EndsWith("did not answer within 100 ms"));
  }
  SECTION("a malformed endpoint") {
    CHECK_THROWS_AS(admin(ctx, "tcp://"), ferry::error);
  }
}
