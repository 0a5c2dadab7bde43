#include <catch2/catch.hpp>

#include <msgpack.hpp>
#include <random>

#include "ferry/envelope.hpp"

using namespace ferry;

namespace {

message sample(bool stream = false) {
  message m("orders", "hello");
  m.set_key("customer-17");
  m.set_header("content-type", "application/json");
  m.set_header("trace-id", std::string(40, 't'));
  m.set_attempt(2);
  if (stream) m.set_stream(0xDEADBEEFCAFEull, 123456789);
  return m;
}

std::string envelope_of(const message& m, envelope_form form = envelope_form::compact) {
  std::string out(envelope_size(m, form), '\0');
  REQUIRE(encode_envelope(m, out.data(), form) == out.size());
  return out;
}

std::string packed(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return {buf.data(), buf.size()};
}

void pack_id(msgpack::packer<msgpack::sbuffer>& pk, std::size_t size = 16) {
  pk.pack_bin(static_cast<std::uint32_t>(size));
  std::string raw(size, '\x07');
  pk.pack_bin_body(raw.data(), static_cast<std::uint32_t>(size));
}

}  // namespace

TEST_CASE("envelope round trip keeps every field", "[envelope]") {
  for (bool stream : {false, true}) {
    const message m = sample(stream);
    const std::string env = envelope_of(m);
    message out;
    REQUIRE(decode_envelope(env, out) == decode_error::none);
    CHECK(out.id() == m.id());
    CHECK(out.timestamp_us() == m.timestamp_us());
    CHECK(out.attempt() == 2);
    CHECK(out.key() == "customer-17");
    CHECK(out.headers() == m.headers());
    CHECK(out.origin() == m.origin());
    CHECK(out.sequence() == m.sequence());
  }
}

TEST_CASE("a plain work message's envelope fits libzmq's inline frame (33 bytes)", "[envelope]") {
  message m("q", "x");
  CHECK(envelope_size(m) == 32);
}

TEST_CASE("envelope decodes as standard MessagePack with msgpack-cxx", "[envelope]") {
  const message m = sample(true);
  const std::string env = envelope_of(m);
  msgpack::object_handle oh = msgpack::unpack(env.data(), env.size());
  const msgpack::object& o = oh.get();
  REQUIRE(o.type == msgpack::type::ARRAY);
  REQUIRE(o.via.array.size == 8);
  CHECK(o.via.array.ptr[0].as<int>() == 1);
  CHECK(o.via.array.ptr[1].type == msgpack::type::BIN);
  CHECK(o.via.array.ptr[2].as<std::int64_t>() == m.timestamp_us());
  CHECK(o.via.array.ptr[3].as<unsigned>() == 2);
  CHECK(o.via.array.ptr[4].as<std::string>() == "customer-17");
  CHECK(o.via.array.ptr[5].as<std::map<std::string, std::string>>().at("content-type") == "application/json");
  CHECK(o.via.array.ptr[6].as<std::uint64_t>() == 0xDEADBEEFCAFEull);
  CHECK(o.via.array.ptr[7].as<std::uint64_t>() == 123456789u);
}

TEST_CASE("envelope written by msgpack-cxx decodes, including nil key and nil headers", "[envelope]") {
  const std::string env = packed([](auto& pk) {
    pk.pack_array(6);
    pk.pack(1);
    pack_id(pk);
    pk.pack(std::int64_t{1700000000000000});
    pk.pack(0);
    pk.pack_nil();
    pk.pack_nil();
  });
  message out;
  REQUIRE(decode_envelope(env, out) == decode_error::none);
  CHECK(out.timestamp_us() == 1700000000000000);
  CHECK_FALSE(out.has_key());
  CHECK(out.headers().empty());
}

TEST_CASE("storage form puts attempt at a fixed offset that can be patched", "[envelope]") {
  message m = sample();
  std::string env = envelope_of(m, envelope_form::storage);
  REQUIRE(patch_envelope_attempt(env.data(), env.size(), 77));
  message out;
  REQUIRE(decode_envelope(env, out) == decode_error::none);
  CHECK(out.attempt() == 77);
  CHECK(out.key() == m.key());
  std::string compact = envelope_of(m);
  CHECK_FALSE(patch_envelope_attempt(compact.data(), compact.size(), 5));
}

TEST_CASE("malformed envelopes are rejected with a reason", "[envelope]") {
  const std::string good = envelope_of(sample());
  message out;
  SECTION("every truncation") {
    for (std::size_t n = 0; n < good.size(); ++n)
      CHECK(decode_envelope(std::string_view(good).substr(0, n), out) != decode_error::none);
  }
  SECTION("trailing bytes") {
    CHECK(decode_envelope(good + "x", out) == decode_error::trailing_bytes);
  }
  SECTION("not an array") {
    CHECK(decode_envelope(packed([](auto& pk) { pk.pack(5); }), out) == decode_error::not_an_array);
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(3);
                            pk.pack(1);
                            pk.pack(2);
                            pk.pack(3);
                          }),
                          out) == decode_error::not_an_array);
  }
  SECTION("unknown version") {
    std::string env = good;
    env[1] = 2;
    CHECK(decode_envelope(env, out) == decode_error::unknown_version);
  }
  SECTION("id of the wrong size or type") {
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pack_id(pk, 15);
                            pk.pack(1);
                            pk.pack(0);
                            pk.pack_nil();
                            pk.pack_nil();
                          }),
                          out) == decode_error::bad_id);
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pk.pack(std::string(16, 'a'));
                            pk.pack(1);
                            pk.pack(0);
                            pk.pack_nil();
                            pk.pack_nil();
                          }),
                          out) == decode_error::bad_id);
  }
  SECTION("wrong field types") {
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pack_id(pk);
                            pk.pack("now");
                            pk.pack(0);
                            pk.pack_nil();
                            pk.pack_nil();
                          }),
                          out) == decode_error::bad_field);
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pack_id(pk);
                            pk.pack(1);
                            pk.pack(-1);
                            pk.pack_nil();
                            pk.pack_nil();
                          }),
                          out) == decode_error::bad_field);
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pack_id(pk);
                            pk.pack(1);
                            pk.pack(0);
                            pk.pack(12);
                            pk.pack_nil();
                          }),
                          out) == decode_error::bad_field);
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pack_id(pk);
                            pk.pack(1);
                            pk.pack(0);
                            pk.pack_nil();
                            pk.pack_map(1);
                            pk.pack("k");
                            pk.pack(3);
                          }),
                          out) == decode_error::bad_field);
    CHECK(decode_envelope(packed([](auto& pk) {
                            pk.pack_array(6);
                            pk.pack(1);
                            pack_id(pk);
                            pk.pack(1);
                            pk.pack(std::uint64_t{1} << 40);
                            pk.pack_nil();
                            pk.pack_nil();
                          }),
                          out) == decode_error::bad_field);
  }
  SECTION("limits") {
    decode_limits limits;
    limits.max_key = 4;
    CHECK(decode_envelope(good, out, limits) == decode_error::key_too_long);
    limits = {};
    limits.max_headers = 1;
    CHECK(decode_envelope(good, out, limits) == decode_error::too_many_headers);
    limits = {};
    limits.max_envelope = 10;
    CHECK(decode_envelope(good, out, limits) == decode_error::envelope_too_large);
  }
  SECTION("huge declared lengths do not allocate or overread") {
    // A map header claiming 2^32-1 entries and a str claiming 4 GiB.
    std::string env = good.substr(0, 31);  // through the key's start... build explicitly instead
    env = packed([](auto& pk) {
      pk.pack_array(6);
      pk.pack(1);
      pack_id(pk);
      pk.pack(1);
      pk.pack(0);
      pk.pack_nil();
    });
    CHECK(decode_envelope(env + std::string("\xdf\xff\xff\xff\xff", 5), out) ==
          decode_error::too_many_headers);
    env = packed([](auto& pk) {
      pk.pack_array(6);
      pk.pack(1);
      pack_id(pk);
      pk.pack(1);
      pk.pack(0);
    });
    CHECK(decode_envelope(env + std::string("\xdb\xff\xff\xff\xff", 5), out) == decode_error::truncated);
  }
  SECTION("random bytes never crash") {
    std::mt19937 rng(12345);
    for (int i = 0; i < 20000; ++i) {
      std::string noise = good;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) noise[rng() % noise.size()] = static_cast<char>(rng());
      (void)decode_envelope(noise, out);
      std::string random(rng() % 64, '\0');
      for (auto& c : random) c = static_cast<char>(rng());
      (void)decode_envelope(random, out);
    }
    SUCCEED("no crash, no sanitizer report");
  }
}

TEST_CASE("decode_error names are stable", "[envelope]") {
  CHECK(to_string(decode_error::frame_count) == "frame_count");
  CHECK(to_string(decode_error::truncated) == "truncated");
  CHECK(to_string(decode_error::unknown_version) == "unknown_version");
}

TEST_CASE("check_limits names what a receiver with those limits would reject", "[envelope]") {
  message m("orders", "x");
  CHECK(check_limits(m) == decode_error::none);
  m.set_topic(std::string(256, 't'));
  CHECK(check_limits(m) == decode_error::topic_too_long);
  m.set_topic("orders");
  m.set_key(std::string(256, 'k'));
  CHECK(check_limits(m) == decode_error::key_too_long);
  m.set_key("");
  for (int i = 0; i < 65; ++i) m.set_header("h" + std::to_string(i), "v");
  CHECK(check_limits(m) == decode_error::too_many_headers);
  decode_limits small;
  small.max_envelope = 40;
  message n("orders", "x");
  n.set_header("trace", std::string(20, 'z'));
  CHECK(check_limits(n, small) == decode_error::envelope_too_large);
}

TEST_CASE("the common envelopes decode the same through the fast path", "[envelope]") {
  for (const envelope_form form : {envelope_form::compact, envelope_form::storage}) {
    message m("q", "x");
    m.set_attempt(form == envelope_form::storage ? 300 : 5);
    std::string env = envelope_of(m, form);
    REQUIRE(env.size() == (form == envelope_form::storage ? 36u : 32u));
    message out;
    out.set_key("stale");  // fields left from a previous message are reset
    out.set_header("stale", "1");
    out.set_stream(1, 2);
    REQUIRE(decode_envelope(env, out) == decode_error::none);
    CHECK(out.id() == m.id());
    CHECK(out.timestamp_us() == m.timestamp_us());
    CHECK(out.attempt() == m.attempt());
    CHECK_FALSE(out.has_key());
    CHECK(out.headers().empty());
    CHECK(out.sequence() == 0);
    // A nil id in the same layout is still rejected.
    std::fill(env.begin() + 4, env.begin() + 20, '\0');
    CHECK(decode_envelope(env, out) == decode_error::bad_id);
  }
}
