// ferryd's wire protocol, spoken frame by frame through a raw DEALER: unknown verbs and malformed frames,
// ERROR for a consumer ferryd has forgotten, the per-SEND batch limit and split deliveries, CONSUME options
// it refuses, and protocol v2: SEND blocks that do not decode, DELIVER blocks for consumers that asked for
// version 2 and their size bound. Storing, delivering and refusing messages is in forwarder_test.cpp.

#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include <mutex>
#include <set>
#include <thread>

#include "detail/forwarder_protocol.hpp"
#include "detail/wire.hpp"
#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "protocol_helpers.hpp"
#include "support/ferryd_client.hpp"
#include "support/running_forwarder.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using ferry::test::envelope_of;
using ferry::test::queue_stats_of;
using ferry::test::raw_client;
using ferry::test::running_forwarder;
using namespace std::chrono_literals;
namespace fwd = ferry::detail::fwd;

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

TEST_CASE("option frames are unpacked within limits their size implies, and deep nesting is refused",
          "[forwarder]") {
  // Found by fuzz/ferryd_fuzz.cpp: an array header claiming 0xdddddddd elements, five bytes in all, made
  // msgpack-cxx allocate 85 GiB for them before finding the frame short (bad_alloc, caught, in a plain
  // build; an abort under AddressSanitizer; a large overcommitted allocation where the kernel allows it).
  CHECK_THROWS_AS(ferry::ferryd::unpack_untrusted(std::string("\xdd\xdd\xdd\xdd\xdd", 5)),
                  msgpack::size_overflow);
  CHECK_THROWS_AS(ferry::ferryd::unpack_untrusted(std::string("\xdf\x00\x10\x00\x00", 5)),
                  msgpack::size_overflow);
  CHECK_THROWS_AS(ferry::ferryd::unpack_untrusted(std::string(33, '\x91') + '\x01'), msgpack::size_overflow);
  CHECK(ferry::ferryd::unpack_untrusted(std::string(32, '\x91') + '\x01').get().type == msgpack::type::ARRAY);

  running_forwarder fwdr;
  raw_client c(fwdr.endpoint);
  const std::string nested = std::string("\x81\xa8prefetch", 10) + std::string(1'000'000, '\x91') + '\x01';
  for (const std::string& options : {std::string("\x81\xa8prefetch\xdd\xff\xff\xff\xff", 14), nested}) {
    const auto r = c.exchange({"CONSUME", "jobs", options});
    INFO(test::show_frames(r));
    REQUIRE(r.size() == 3);
    CHECK(r[0] == "ERROR");
    CHECK(r[1] == "bad_frames");
  }
  CHECK(c.exchange({"PING"}).at(0) == "PONG");
}

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
