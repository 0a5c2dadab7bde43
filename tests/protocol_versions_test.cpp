// The durable clients against a ferryd that speaks only the forwarder protocol v1 (as ferryd did before
// v2): a fake server on inproc that refuses HELLO v2 the way that ferryd did, takes SENDs only as envelope
// and payload frame pairs, and delivers in frame pairs. A v2 client must fall back and lose nothing.
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <map>
#include <msgpack.hpp>
#include <mutex>
#include <thread>
#include <vector>
#include <zmq_addon.hpp>

#include "detail/wire.hpp"
#include "ferry/ferry.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

std::string map_of(const std::map<std::string, std::uint64_t>& fields) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, fields);
  return {buf.data(), buf.size()};
}

// With `speaks_v2` it answers like today's ferryd instead: WELCOME for HELLO v2 and SENDs as one block.
class v1_ferryd {
 public:
  explicit v1_ferryd(context& ctx, const std::string& where = endpoint, bool speaks_v2 = false,
                     socket_options so = {})
      : speaks_v2_(speaks_v2), socket_(ctx.make_socket(zmq::socket_type::router, so)) {
    // libzmq closes a socket's listener on its own thread after close() returns, so the port of a server
    // just destroyed can still be taken for a moment: retry, bounded.
    for (int attempt = 0;; ++attempt) {
      try {
        socket_.bind(where);
        break;
      } catch (const zmq::error_t& e) {
        if (e.num() != EADDRINUSE || attempt == 100) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~v1_ferryd() {
    stop_ = true;
    thread_.join();
  }
  v1_ferryd(const v1_ferryd&) = delete;
  v1_ferryd& operator=(const v1_ferryd&) = delete;

  static constexpr const char* endpoint = "inproc://v1-ferryd";
  std::atomic<bool> paused{false};  // reads nothing while set
  std::atomic<int> hellos_v2{0}, hellos_v1{0}, sends_v1{0}, sends_v2{0}, sends_other{0}, bad_envelopes{0};

 private:
  void reply(const std::string& identity, const std::vector<std::string>& frames) {
    std::vector<zmq::message_t> out;
    out.emplace_back(identity.data(), identity.size());
    for (const auto& f : frames) out.emplace_back(f.data(), f.size());
    (void)zmq::send_multipart(socket_, out);
  }

  void serve() {
    socket_.set(zmq::sockopt::rcvtimeo, 50);
    std::vector<std::pair<std::string, std::string>> stored;  // envelope, payload
    std::string consumer;
    std::size_t delivered = 0;
    while (!stop_) {
      if (paused) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      std::vector<zmq::message_t> in;
      if (!zmq::recv_multipart(socket_, std::back_inserter(in))) {
        if (!consumer.empty()) deliver(consumer, stored, delivered);
        continue;
      }
      const std::string identity(in[0].to_string_view());
      const std::string verb(in[1].to_string_view());
      if (verb == "HELLO") {
        const auto oh = msgpack::unpack(static_cast<const char*>(in[2].data()), in[2].size());
        const auto version = oh.get().as<std::map<std::string, std::uint64_t>>().at("version");
        if (version != 1 && speaks_v2_) {
          ++hellos_v2;
          reply(identity, {"WELCOME", map_of({{"version", 2}, {"instance", 99}, {"heartbeat_ms", 1000}})});
        } else if (version != 1) {
          ++hellos_v2;
          reply(identity, {"ERROR", "bad_frames",
                           "protocol version " + std::to_string(version) +
                               " is not supported; this ferryd speaks version 1"});
        } else {
          ++hellos_v1;
          reply(identity, {"WELCOME", map_of({{"version", 1}, {"instance", 77}, {"heartbeat_ms", 1000}})});
        }
      } else if (verb == "SEND" && speaks_v2_ && in.size() == 4) {
        std::vector<message> decoded;
        std::vector<detail::payload_span> spans;
        std::size_t n = 0;
        if (detail::decode_block(in[3].to_string_view(), decoded, spans, n, {}) != decode_error::none) {
          ++bad_envelopes;
          continue;
        }
        ++sends_v2;
        std::string ids;
        for (std::size_t i = 0; i < n; ++i) ids += std::string(decoded[i].id().view());
        reply(identity, {"CONFIRM", ids});
      } else if (verb == "SEND") {
        if (in.size() < 5 || (in.size() - 3) % 2 != 0) {  // a v1 ferryd knows nothing else
          ++sends_other;
          reply(identity,
                {"ERROR", "bad_frames", "SEND needs: queue, then envelope and payload frames in pairs"});
          continue;
        }
        ++sends_v1;
        std::string ids;
        for (std::size_t i = 3; i + 1 < in.size(); i += 2) {
          message m;
          if (decode_envelope(in[i].to_string_view(), m) != decode_error::none) ++bad_envelopes;
          ids += std::string(m.id().view());
          stored.emplace_back(std::string(in[i].to_string_view()), std::string(in[i + 1].to_string_view()));
        }
        reply(identity, {"CONFIRM", ids});
      } else if (verb == "CONSUME") {
        consumer = identity;
        reply(identity, {"CONSUMING", std::string(in[2].to_string_view()), map_of({{"heartbeat_ms", 1000}})});
      } else if (verb == "PING") {
        // The instance its WELCOME announced (99 or 77), as a real ferryd answers.
        reply(identity, {"PONG", std::string(7, '\0') + static_cast<char>(speaks_v2_ ? 99 : 77)});
      }
      if (!consumer.empty()) deliver(consumer, stored, delivered);
    }
  }

  // DELIVER | queue | tokens | (envelope | payload) x n, the v1 form.
  void deliver(const std::string& identity, const std::vector<std::pair<std::string, std::string>>& stored,
               std::size_t& delivered) {
    if (delivered == stored.size()) return;
    std::vector<std::string> frames{"DELIVER", "jobs", ""};
    for (; delivered < stored.size(); ++delivered) {
      frames[2] += std::string(7, '\0') + static_cast<char>(delivered + 1);
      frames.push_back(stored[delivered].first);
      frames.push_back(stored[delivered].second);
    }
    reply(identity, frames);
  }

  bool speaks_v2_;
  zmq::socket_t socket_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("a producer and a consumer fall back to protocol v1 with a ferryd that speaks only v1",
          "[forwarder][protocol]") {
  context ctx;
  v1_ferryd server(ctx);
  producer p(ctx, v1_ferryd::endpoint, {.heartbeat_interval = 100ms});
  for (int i = 0; i < 50; ++i) {
    message m("jobs", "job " + std::to_string(i));
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));
  CHECK(p.stats().confirmed == 50);
  CHECK(server.hellos_v2 >= 1);  // it asked for v2 first
  CHECK(server.hellos_v1 >= 1);
  CHECK(server.sends_v1 >= 1);
  CHECK(server.sends_other == 0);  // never a v2 SEND to a v1 ferryd
  CHECK(server.bad_envelopes == 0);

  std::mutex mu;
  std::vector<std::string> got;
  consumer c(ctx, v1_ferryd::endpoint, "jobs", [&](message& m) {
    std::lock_guard lock(mu);
    got.emplace_back(m.payload());
  });
  REQUIRE(test::wait_until([&] {
    std::lock_guard lock(mu);
    return got.size() == 50;
  }));
  std::lock_guard lock(mu);
  for (int i = 0; i < 50; ++i) CHECK(got[static_cast<std::size_t>(i)] == "job " + std::to_string(i));
}

TEST_CASE(
    "a producer whose ferryd is replaced by one that speaks only v1 agrees on v1 again and loses nothing",
    "[forwarder][protocol]") {
  context ctx;
  const std::string where = test::free_tcp_endpoint();
  auto server = std::make_unique<v1_ferryd>(ctx, where, true);
  producer p(ctx, where, {.heartbeat_interval = 100ms});
  auto send = [&](int from, int n) {
    for (int i = from; i < from + n; ++i) {
      message m("jobs", "job " + std::to_string(i));
      REQUIRE(p.send(m) == send_status::ok);
    }
  };
  send(0, 10);
  REQUIRE(p.flush(10s));
  CHECK(server->sends_v2 >= 1);
  server.reset();  // the v2 ferryd goes; one that predates v2 takes its place
  server = std::make_unique<v1_ferryd>(ctx, where, false);
  send(10, 10);
  CHECK(p.flush(15s));
  CHECK(p.stats().confirmed == 20);
  CHECK(server->sends_v1 >= 1);
  // A SEND already queued in libzmq before the producer saw the connection drop may reach the new ferryd in
  // v2 form: it answers ERROR and stores nothing, and the producer sends it again in v1 after WELCOME.
  CHECK(server->bad_envelopes == 0);
}

TEST_CASE(
    "a producer with socket.immediate sends once ferryd is there, not at confirm_timeout, and loses none",
    "[forwarder][protocol]") {
  context ctx;
  const std::string where = test::free_tcp_endpoint();
  socket_options immediate;  // libzmq takes nothing before the connection is complete
  immediate.immediate = true;
  producer p(ctx, where,
             {.confirm_timeout = std::chrono::minutes(10), .heartbeat_interval = 100ms, .socket = immediate});
  for (int i = 0; i < 50; ++i) {
    message m("jobs", "job " + std::to_string(i));
    REQUIRE(p.send(m) == send_status::ok);
  }
  std::this_thread::sleep_for(300ms);  // nobody listens yet
  CHECK(p.stats().confirmed == 0);
  auto server = std::make_unique<v1_ferryd>(ctx, where, true);
  CHECK(p.flush(20s));  // long before the ten minutes a lost SEND would wait
  CHECK(p.stats().confirmed == 50);
  CHECK(server->sends_v2 >= 1);
  CHECK(server->bad_envelopes == 0);
  // ferryd goes away: libzmq takes nothing sent meanwhile (counted), and the reconnect sends it again.
  server.reset();
  REQUIRE(test::wait_until([&] { return !p.stats().forwarder_up; }, 10s));
  for (int i = 50; i < 70; ++i) {
    message m("jobs", "job " + std::to_string(i));
    REQUIRE(p.send(m) == send_status::ok);
  }
  CHECK(test::wait_until([&] { return p.stats().send_retries > 0; }, 10s));
  server = std::make_unique<v1_ferryd>(ctx, where, true);
  CHECK(p.flush(20s));
  CHECK(p.stats().confirmed == 70);
  CHECK(server->bad_envelopes == 0);
}
