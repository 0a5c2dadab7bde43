// Wire v2 and v1 through the codec of lib/detail/wire (docs/protocol.md, "Frames"): what ferry writes, byte
// for byte and as msgpack-cxx reads it; what msgpack-cxx writes, as ferry reads it; and the frames a
// receiver must refuse. Real inproc sockets where the framing matters (frame counts, the topic separator),
// decode_block on bytes elsewhere.
#include <catch2/catch.hpp>

#include <cstdint>
#include <msgpack.hpp>
#include <optional>
#include <zmq_addon.hpp>

#include "detail/wire.hpp"
#include "ferry/context.hpp"
#include "support/interop_support.hpp"

using namespace ferry;
using namespace ferry::detail;
using ferry::test::interop::fields;

namespace Catch {
template <>
struct StringMaker<ferry::decode_error> {
  static std::string convert(ferry::decode_error e) { return std::string(ferry::to_string(e)); }
};
}  // namespace Catch

namespace {

// Two PAIR sockets over inproc: what one sends, the other receives raw or through a frame_reader.
class pair_link {
 public:
  explicit pair_link(const decode_limits& limits = {}) : reader_(limits) {
    static int links = 0;
    const std::string endpoint = "inproc://wire-test-" + std::to_string(++links);
    rx_.set(zmq::sockopt::rcvtimeo, 5000);
    rx_.bind(endpoint);
    tx_.connect(endpoint);
  }

  zmq::socket_t& tx() noexcept { return tx_; }
  frame_reader& reader() noexcept { return reader_; }

  void send_raw(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i)
      REQUIRE(tx_.send(zmq::buffer(frames[i]),
                       i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none));
  }
  std::vector<std::string> receive_raw() {
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(rx_, std::back_inserter(frames)));
    std::vector<std::string> out;
    for (const auto& f : frames) out.emplace_back(f.to_string_view());
    return out;
  }
  /// Receives one frame set through the frame_reader: none when accepted, else why not.
  decode_error receive() {
    const receive_status st = reader_.receive(rx_, true);
    REQUIRE((st == receive_status::ok || st == receive_status::rejected));
    return st == receive_status::ok ? decode_error::none : reader_.error();
  }
  decode_error verdict(const std::vector<std::string>& frames) {
    send_raw(frames);
    return receive();
  }
  std::vector<fields> received() {
    std::vector<fields> out;
    for (const message& m : reader_.messages()) out.push_back(fields::of(m));
    return out;
  }

 private:
  context ctx_;
  zmq::socket_t tx_ = ctx_.make_socket(zmq::socket_type::pair);
  zmq::socket_t rx_ = ctx_.make_socket(zmq::socket_type::pair);
  frame_reader reader_;
};

// Messages exercising every field: key, headers, attempt, stream, an empty and a 300-byte payload.
std::vector<message> varied(const std::string& topic = "orders") {
  std::vector<message> out;
  out.emplace_back(topic, "hello");
  out.emplace_back(topic, "");
  out.back().set_key("customer-17");
  out.back().set_header("content-type", "application/json");
  out.back().set_header("empty", "");
  out.back().set_attempt(70'000);
  std::string every_byte;
  for (int i = 0; i < 300; ++i) every_byte.push_back(static_cast<char>(i));
  out.emplace_back(topic, every_byte);
  out.back().set_stream(0xFFFFFFFFFFFFFFFFull, 1ull << 40);
  out.back().set_timestamp_us(-1234);
  return out;
}

std::vector<message> plain(std::size_t n, const std::string& topic = "jobs") {
  std::vector<message> out;
  for (std::size_t i = 0; i < n; ++i) out.emplace_back(topic, "m" + std::to_string(i));
  return out;
}

std::vector<fields> fields_of(const std::vector<message>& msgs) {
  std::vector<fields> out;
  for (const auto& m : msgs) out.push_back(fields::of(m));
  return out;
}

// A v2 packed frame written with the block writers: topic, 00, a header declaring `count` (default: the
// number of messages), the entries.
std::string packed_frame(const std::string& topic, const std::vector<message>& msgs,
                         std::optional<std::size_t> count = {}) {
  const std::size_t declared = count.value_or(msgs.size());
  std::size_t bytes = topic.size() + 1 + block_header_size(declared);
  for (const auto& m : msgs) bytes += block_entry_size(m);
  std::string out(bytes, '\0');
  std::copy(topic.begin(), topic.end(), out.begin());
  char* p = write_block_header(out.data() + topic.size() + 1, declared);
  for (const auto& m : msgs) p = write_block_entry(p, m);
  REQUIRE(p == out.data() + out.size());
  return out;
}

std::string hex(std::string_view bytes) {
  return ferry::test::interop::to_hex(bytes);
}

std::string unhex(std::string_view digits) {
  return ferry::test::interop::unhex(digits);
}

decode_error decode(std::string_view block, std::size_t& count, const decode_limits& limits = {},
                    bool split = false) {
  std::vector<message> out;
  std::vector<payload_span> payloads;
  return decode_block(block, out, payloads, count, limits, split);
}

decode_error decode(std::string_view block) {
  std::size_t count = 0;
  return decode(block, count);
}

// Every MessagePack object in `bytes`, in order, read with msgpack-cxx; none may be left over.
std::vector<msgpack::object_handle> unpack_all(std::string_view bytes) {
  std::vector<msgpack::object_handle> out;
  std::size_t offset = 0;
  while (offset < bytes.size()) out.push_back(msgpack::unpack(bytes.data(), bytes.size(), offset));
  CHECK(offset == bytes.size());
  return out;
}

}  // namespace

// ---- what ferry writes ------------------------------------------------------------------------------------

TEST_CASE("a single message is one v2 frame: topic 00 92 02 01 envelope payload-bin", "[wire]") {
  pair_link link;
  message m("jobs", "hello");
  const std::string envelope(encode_envelope(m).to_string_view());
  REQUIRE(send_message(link.tx(), m, true, {}) == send_status::ok);
  const auto frames = link.receive_raw();
  REQUIRE(frames.size() == 1);
  CHECK(hex(frames[0]) == hex(std::string("jobs\0\x92\x02\x01", 8) + envelope + "\xc4\x05hello"));
}

TEST_CASE("packed frames of one and many messages round trip every field", "[wire]") {
  const std::string topic = GENERATE(as<std::string>{}, "orders", "");
  const std::size_t n = GENERATE(1, 3, 200);
  INFO("topic '" << topic << "', " << n << " messages");
  std::vector<message> msgs = varied(topic);
  msgs.resize(std::min<std::size_t>(n, msgs.size()));
  for (std::size_t i = msgs.size(); i < n; ++i) msgs.emplace_back(topic, "bulk-" + std::to_string(i));
  const auto sent = fields_of(msgs);
  const std::string expected = packed_frame(topic, msgs);

  pair_link link;
  const batch_status r = send_batch(link.tx(), msgs, true, {});
  CHECK(r.status == send_status::ok);
  CHECK(r.sent == n);
  CHECK(r.frames == 1);
  const auto frames = link.receive_raw();
  REQUIRE(frames.size() == 1);
  CHECK(hex(frames[0]) == hex(expected));  // the sender writes what the block writers write

  REQUIRE(link.verdict(frames) == decode_error::none);
  CHECK(link.reader().version() == wire_version::v2);
  CHECK(link.received() == sent);
}

TEST_CASE("a large payload travels split: topic 00 92 02 01 envelope, then the payload frame", "[wire]") {
  pair_link link;
  message m("blobs", std::string(40'000, 'x'));
  m.set_key("k");
  const auto sent = fields::of(m);
  const std::string envelope(encode_envelope(m).to_string_view());
  REQUIRE(send_message(link.tx(), m, true, {}) == send_status::ok);
  CHECK(m.payload().empty());  // moved into the frame, not copied
  const auto frames = link.receive_raw();
  REQUIRE(frames.size() == 2);
  CHECK(hex(frames[0]) == hex(std::string("blobs\0\x92\x02\x01", 9) + envelope));
  CHECK(frames[1] == std::string(40'000, 'x'));

  REQUIRE(link.verdict(frames) == decode_error::none);
  CHECK(link.reader().version() == wire_version::v2);
  CHECK(link.received() == std::vector<fields>{sent});
}

TEST_CASE("split_payload decides where a payload leaves the packed frame", "[wire]") {
  pair_link link;
  const wire_options wire{.split_payload = 100};
  std::vector<message> msgs;
  msgs.emplace_back("t", std::string(99, 'a'));
  msgs.emplace_back("t", std::string(100, 'b'));  // alone, split
  msgs.emplace_back("t", std::string(99, 'c'));
  const auto sent = fields_of(msgs);
  const batch_status r = send_batch(link.tx(), msgs, true, wire);
  CHECK(r.sent == 3);
  CHECK(r.frames == 3);
  std::vector<std::vector<std::string>> sets;
  for (int i = 0; i < 3; ++i) sets.push_back(link.receive_raw());
  std::vector<std::size_t> counts;
  std::vector<fields> got;
  for (const auto& frames : sets) {
    counts.push_back(frames.size());
    REQUIRE(link.verdict(frames) == decode_error::none);
    for (auto& f : link.received()) got.push_back(f);
  }
  CHECK(counts == std::vector<std::size_t>{1, 2, 1});
  CHECK(got == sent);
}

TEST_CASE("v1 is three frames, topic | envelope | payload, and may carry 00 in its topic", "[wire]") {
  pair_link link;
  const wire_options v1{.version = wire_version::v1};
  message m(std::string("a\0b", 3), "payload");
  m.set_header("h", "v");
  const auto sent = fields::of(m);
  const std::string envelope(encode_envelope(m).to_string_view());
  REQUIRE(send_message(link.tx(), m, true, v1) == send_status::ok);
  const auto frames = link.receive_raw();
  CHECK(frames == std::vector<std::string>{std::string("a\0b", 3), envelope, "payload"});
  REQUIRE(link.verdict(frames) == decode_error::none);
  CHECK(link.reader().version() == wire_version::v1);
  CHECK(link.received() == std::vector<fields>{sent});

  std::vector<message> batch = plain(3);
  const batch_status r = send_batch(link.tx(), batch, true, v1);
  CHECK(r.sent == 3);
  CHECK(r.frames == 3);  // one frame set per message
  for (int i = 0; i < 3; ++i) CHECK(link.receive_raw().size() == 3);
}

TEST_CASE("send_batch packs runs of one topic within the batch limits", "[wire]") {
  pair_link link;
  std::vector<message> msgs;
  for (const char* t : {"a", "a", "b", "b", "b", "a"}) msgs.emplace_back(t, "x");
  SECTION("one frame per run") {
    CHECK(send_batch(link.tx(), msgs, true, {}).frames == 3);
  }
  SECTION("max_batch_messages cuts a run") {
    CHECK(send_batch(link.tx(), msgs, true, {.max_batch_messages = 2}).frames == 4);
  }
  SECTION("max_batch_bytes cuts a run, but a frame always holds one message") {
    CHECK(send_batch(link.tx(), msgs, true, {.max_batch_bytes = 1}).frames == 6);
  }
  SECTION("max_batch_messages 0 is taken as 1") {
    CHECK(send_batch(link.tx(), msgs, true, {.max_batch_messages = 0}).frames == 6);
  }
}

TEST_CASE("no frame holds more messages than a receiver accepts (max_batch 65536)", "[wire]") {
  pair_link link;
  std::vector<message> msgs;
  msgs.reserve(65'537);
  for (int i = 0; i < 65'537; ++i) msgs.emplace_back("t", "");
  const batch_status r =
      send_batch(link.tx(), msgs, true, {.max_batch_bytes = SIZE_MAX, .max_batch_messages = SIZE_MAX});
  CHECK(r.sent == 65'537);
  CHECK(r.frames == 2);
  REQUIRE(link.receive() == decode_error::none);
  CHECK(link.reader().messages().size() == 65'536);
  REQUIRE(link.receive() == decode_error::none);
  CHECK(link.reader().messages().size() == 1);
}

TEST_CASE("received payloads are slices that outlive the next receive", "[wire]") {
  pair_link link;
  std::vector<message> first = plain(3), second = plain(3, "other");
  REQUIRE(send_batch(link.tx(), first, true, {}).sent == 3);
  REQUIRE(send_batch(link.tx(), second, true, {}).sent == 3);
  REQUIRE(link.receive() == decode_error::none);
  message kept = std::move(link.reader().messages()[1]);
  REQUIRE(link.receive() == decode_error::none);  // reuses the reader's messages
  CHECK(kept.payload() == "m1");
  CHECK(kept.topic() == "jobs");
  CHECK(kept.payload_frame().to_string_view() == "m1");  // copied out of the shared frame
  CHECK(link.reader().messages()[1].payload() == "m1");
  CHECK(link.reader().messages()[1].topic() == "other");
}

// ---- cross-checked with msgpack-cxx -----------------------------------------------------------------------

TEST_CASE("msgpack-cxx reads a packed frame as [2, n] then n envelope and bin pairs", "[wire][msgpack]") {
  std::vector<message> msgs = varied();
  const std::string frame = packed_frame("orders", msgs);
  REQUIRE(frame.substr(0, 7) == std::string("orders\0", 7));
  const auto objects = unpack_all(std::string_view(frame).substr(7));
  REQUIRE(objects.size() == 1 + 2 * msgs.size());
  const msgpack::object& header = objects[0].get();
  REQUIRE(header.type == msgpack::type::ARRAY);
  REQUIRE(header.via.array.size == 2);
  CHECK(header.via.array.ptr[0].as<int>() == 2);
  CHECK(header.via.array.ptr[1].as<std::size_t>() == msgs.size());
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    INFO("message " << i);
    const msgpack::object& env = objects[1 + 2 * i].get();
    const msgpack::object& payload = objects[2 + 2 * i].get();
    REQUIRE(env.type == msgpack::type::ARRAY);
    CHECK(env.via.array.size == (msgs[i].sequence() != 0 ? 8u : 6u));
    CHECK(std::string_view(env.via.array.ptr[1].via.bin.ptr, 16) == msgs[i].id().view());
    CHECK(env.via.array.ptr[2].as<std::int64_t>() == msgs[i].timestamp_us());
    CHECK(env.via.array.ptr[3].as<std::uint32_t>() == msgs[i].attempt());
    REQUIRE(payload.type == msgpack::type::BIN);
    CHECK(std::string_view(payload.via.bin.ptr, payload.via.bin.size) == msgs[i].payload());
  }
}

TEST_CASE("a frame packed by msgpack-cxx, in its own integer encodings, decodes in ferry",
          "[wire][msgpack]") {
  std::vector<message> msgs = varied();
  msgs[0].set_timestamp_us(1000);  // cd 03 e8 from msgpack-cxx, cf + 8 bytes from ferry
  msgpack::sbuffer buf;
  buf.write("orders\0", 7);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(2);
  pk.pack_fix_uint8(2);                                         // the tag as uint 8: cc 02
  pk.pack_fix_uint16(static_cast<std::uint16_t>(msgs.size()));  // the count as uint 16: cd 00 03
  for (const message& m : msgs) {
    const bool stream = m.sequence() != 0;
    pk.pack_array(stream ? 8 : 6);
    pk.pack(1);
    pk.pack_bin(16);
    pk.pack_bin_body(m.id().view().data(), 16);
    pk.pack(m.timestamp_us());  // the smallest encoding, not ferry's fixed 9 bytes
    pk.pack(m.attempt());
    if (m.has_key())
      pk.pack(m.key());
    else
      pk.pack_nil();
    pk.pack(std::map<std::string, std::string>(m.headers().begin(), m.headers().end()));
    if (stream) {
      pk.pack(m.origin());
      pk.pack(m.sequence());
    }
    pk.pack_bin(static_cast<std::uint32_t>(m.payload().size()));
    pk.pack_bin_body(m.payload().data(), static_cast<std::uint32_t>(m.payload().size()));
  }
  pair_link link;
  REQUIRE(link.verdict({std::string(buf.data(), buf.size())}) == decode_error::none);
  CHECK(link.received() == fields_of(msgs));
}

// ---- what a receiver refuses ------------------------------------------------------------------------------

TEST_CASE("a v2 frame cut at any byte is rejected: no_separator in the topic, truncated after it", "[wire]") {
  pair_link link;
  const std::string frame = packed_frame("orders", varied());
  for (std::size_t cut = 0; cut < frame.size(); ++cut) {
    INFO("cut at " << cut << " of " << frame.size());
    CHECK(link.verdict({frame.substr(0, cut)}) ==
          (cut <= 6 ? decode_error::no_separator : decode_error::truncated));
  }
  CHECK(link.verdict({packed_frame("orders", plain(1))}) == decode_error::none);  // and it keeps serving
}

TEST_CASE("a block cut at any byte is truncated, with a multi-byte count and bin lengths", "[wire]") {
  std::vector<message> msgs = plain(298);
  msgs.emplace_back("jobs", std::string(300, 'p'));     // bin 16
  msgs.emplace_back("jobs", std::string(70'000, 'p'));  // bin 32
  const std::string block = packed_frame("", msgs).substr(1);
  REQUIRE(hex(block.substr(0, 5)) == "9202cd012c");  // 300 messages: uint 16
  const std::size_t last_body = block.size() - 70'000;
  std::vector<message> out;
  std::vector<payload_span> payloads;
  std::size_t count = 0;
  for (std::size_t cut = 0; cut < block.size();
       cut += cut < last_body ? 1 : 997) {             // every byte but the last
    INFO("cut at " << cut << " of " << block.size());  // payload's own
    REQUIRE(decode_block(block.substr(0, cut), out, payloads, count, {}) == decode_error::truncated);
  }
  CHECK(decode_block(block, out, payloads, count, {}) == decode_error::none);
  CHECK(count == 300);
}

TEST_CASE("a split header frame cut at any byte is rejected", "[wire]") {
  pair_link link;
  message m("blobs", "");
  m.set_header("a", "b");
  const std::string head = packed_frame("blobs", {}, 1) + std::string(encode_envelope(m).to_string_view());
  for (std::size_t cut = 0; cut < head.size(); ++cut) {
    INFO("cut at " << cut);
    CHECK(link.verdict({head.substr(0, cut), "payload"}) ==
          (cut <= 5 ? decode_error::no_separator : decode_error::truncated));
  }
  CHECK(link.verdict({head, "payload"}) == decode_error::none);
  CHECK(link.reader().messages()[0].payload() == "payload");
}

TEST_CASE("a count that disagrees with the entries is rejected", "[wire]") {
  const std::vector<message> msgs = varied();
  std::size_t count = 99;
  CHECK(decode(packed_frame("", msgs, 4).substr(1), count) == decode_error::truncated);  // one missing
  CHECK(count == 0);
  CHECK(decode(packed_frame("", msgs, 2).substr(1)) == decode_error::batch_count);  // one too many
  CHECK(decode(packed_frame("", msgs, 0).substr(1)) == decode_error::bad_header);
  CHECK(decode(packed_frame("", {}, 0).substr(1)) == decode_error::bad_header);  // 92 02 00, nothing after
  CHECK(decode(packed_frame("", msgs, 65'537).substr(1)) == decode_error::bad_header);
  CHECK(decode(packed_frame("", {}, 65'537).substr(1)) == decode_error::bad_header);
  CHECK(decode(packed_frame("", msgs).substr(1), count, {.max_batch = 2}) == decode_error::bad_header);
}

TEST_CASE("a huge declared count is refused before anything is sized for it", "[wire]") {
  const std::string frame = packed_frame("", plain(1), 65'536);
  REQUIRE(hex(frame.substr(0, 8)) == "009202ce00010000");
  REQUIRE(frame.size() == 1 + 7 + 32 + 4);
  std::vector<message> out;
  std::vector<payload_span> payloads;
  std::size_t count = 0;
  CHECK(decode_block(frame.substr(1), out, payloads, count, {}) == decode_error::truncated);
  CHECK(out.empty());  // the 36 bytes left cannot hold 65536 entries: nothing is sized for them
  CHECK(payloads.empty());
}

TEST_CASE("a bin length that lies is rejected", "[wire]") {
  std::vector<message> msgs;
  msgs.emplace_back("t", "abcd");
  std::string block = packed_frame("", msgs).substr(1);
  REQUIRE(hex(block.substr(block.size() - 6)) == hex("\xc4\x04"
                                                     "abcd"));
  const std::size_t len_at = block.size() - 5;
  block[len_at] = 5;  // longer than the frame
  CHECK(decode(block) == decode_error::truncated);
  block[len_at] = 3;  // one byte left after the entry
  CHECK(decode(block) == decode_error::batch_count);
  block[len_at] = 4;
  block[len_at - 1] = '\xa4';  // str, not bin
  CHECK(decode(block) == decode_error::bad_payload);
}

TEST_CASE("block headers other than [2, count] are bad_header", "[wire]") {
  const std::string entry = packed_frame("", plain(1)).substr(4);
  for (const char* header :
       {"930201", "910201", "920301", "9201", "c0", "02", "92c001", "9202ff", "9202d0ff"}) {
    INFO("header " << header);
    CHECK(decode(unhex(header) + entry) == decode_error::bad_header);
  }
  // Any integer encoding of the tag and the count, and array 16 or 32, are accepted.
  for (const char* header : {"9202cc01", "92cc0201", "dc00020201", "dd000000020201", "9202d001"}) {
    INFO("header " << header);
    CHECK(decode(unhex(header) + entry) == decode_error::none);
  }
}

TEST_CASE("the first 00 ends the topic: a hand-made topic holding 00 is a shorter topic and a bad block",
          "[wire]") {
  pair_link link;
  CHECK(link.verdict({packed_frame(std::string("ord\0ers", 7), plain(1))}) ==
        decode_error::bad_header);  // topic "ord", block "ers\0\x92..."
  CHECK(link.verdict({packed_frame("orders", plain(1))}) == decode_error::none);
  CHECK(link.reader().messages()[0].topic() == "orders");
  CHECK(link.verdict({packed_frame("", plain(1))}) == decode_error::none);
  CHECK(link.reader().messages()[0].topic().empty());
}

TEST_CASE("topics: 255 bytes with the separator at most, or topic_too_long / no_separator", "[wire]") {
  pair_link link;
  CHECK(link.verdict({packed_frame(std::string(255, 't'), plain(1))}) == decode_error::none);
  CHECK(link.verdict({packed_frame(std::string(256, 't'), plain(1))}) == decode_error::topic_too_long);
  CHECK(link.verdict({std::string(300, 't')}) == decode_error::topic_too_long);
  CHECK(link.verdict({std::string(255, 't')}) == decode_error::no_separator);
  CHECK(link.verdict({""}) == decode_error::no_separator);
}

TEST_CASE("a split frame set whose header frame carries a payload too is bad_payload", "[wire]") {
  pair_link link;
  CHECK(link.verdict({packed_frame("t", plain(1)), "payload"}) == decode_error::bad_payload);
  CHECK(link.verdict({packed_frame("t", plain(2)), "payload"}) == decode_error::bad_header);  // count 2
  CHECK(link.verdict({packed_frame("t", plain(1))}) == decode_error::none);
}

TEST_CASE("frame sets of 4 or more frames are frame_count, consumed whole", "[wire]") {
  pair_link link;
  CHECK(link.verdict({"a", "b", "c", "d"}) == decode_error::frame_count);
  CHECK(link.verdict({"a", "b", "c", "d", "e", "f"}) == decode_error::frame_count);
  CHECK(link.verdict({packed_frame("t", plain(1))}) == decode_error::none);
}

TEST_CASE("an envelope longer than max_envelope inside a block is envelope_too_large", "[wire]") {
  message m("t", "p");
  m.set_header("h", std::string(70'000, 'v'));
  std::string block(block_header_size(1) + block_entry_size(m), '\0');
  write_block_entry(write_block_header(block.data(), 1), m);
  CHECK(decode(block) == decode_error::envelope_too_large);
}

// ---- what a sender refuses --------------------------------------------------------------------------------

TEST_CASE("a v2 sender refuses a topic holding 00 with invalid and keeps the message", "[wire]") {
  pair_link link;
  message m(std::string("a\0b", 3), "payload");
  const auto id = m.id();
  CHECK(send_message(link.tx(), m, true, {}) == send_status::invalid);
  CHECK(m.payload() == "payload");
  CHECK(m.id() == id);
  CHECK(check_sendable(m, {}) == send_status::invalid);
  CHECK(check_sendable(m, {.version = wire_version::v1}) == send_status::ok);
}

TEST_CASE("send_batch stops at the first message it cannot send and says why", "[wire]") {
  pair_link link;
  std::vector<message> msgs = plain(5);
  const bool invalid = GENERATE(true, false);
  if (invalid)
    msgs[2].set_topic(std::string("jo\0bs", 5));
  else
    msgs[2].set_key(std::string(256, 'k'));
  const auto before = fields_of(msgs);
  const batch_status r = send_batch(link.tx(), msgs, true, {});
  CHECK(r.status == (invalid ? send_status::invalid : send_status::too_large));
  CHECK(r.sent == 2);
  CHECK(r.frames == 1);
  for (std::size_t i = 2; i < msgs.size(); ++i) CHECK(fields::of(msgs[i]) == before[i]);  // untouched
  REQUIRE(link.receive() == decode_error::none);
  CHECK(link.received() == std::vector<fields>(before.begin(), before.begin() + 2));
}
