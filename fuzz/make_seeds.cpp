// Writes the seed corpus of every fuzz target: valid inputs made with ferry's own encoders, so the fuzzers
// start from what ferry really sends and stores. Run it by hand:
//   build-fuzz/fuzz/ferry_fuzz_seeds fuzz/corpus     writes fuzz/corpus/<target>/<name> for each target
// The seeds are committed under fuzz/corpus/; regenerate them when a format changes.
#include <msgpack.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "detail/wire.hpp"
#include "ferry/envelope.hpp"
#include "ferry/message.hpp"
#include "fuzz_support.hpp"
#include "record.hpp"

namespace {

namespace fs = std::filesystem;
namespace storage = ferry::storage;
using ferry::message;

// Fixed ids and times, so regenerating gives the same bytes.
ferry::message_id id_of(std::uint8_t n) {
  std::array<std::uint8_t, 16> b{};
  b[0] = 0x01;
  b[5] = 0x42;
  b[6] = 0x70;
  b[15] = n;
  return ferry::message_id(b);
}

message make(std::uint8_t n, std::string topic, std::string_view payload) {
  message m(std::move(topic), payload);
  m.set_id(id_of(n));
  m.set_timestamp_us(1'700'000'000'000'000 + n);
  return m;
}

std::string envelope(const message& m, ferry::envelope_form form = ferry::envelope_form::compact) {
  std::string out(ferry::envelope_size(m, form), '\0');
  ferry::encode_envelope(m, out.data(), form);
  return out;
}

std::string block(const std::vector<const message*>& msgs) {
  std::string out(ferry::detail::block_header_size(msgs.size()), '\0');
  ferry::detail::write_block_header(out.data(), msgs.size());
  for (const message* m : msgs) {
    const std::size_t at = out.size();
    out.resize(at + ferry::detail::block_entry_size(*m));
    ferry::detail::write_block_entry(out.data() + at, *m);
  }
  return out;
}

std::string split_block(const message& m) {
  std::string out(ferry::detail::block_header_size(1), '\0');
  ferry::detail::write_block_header(out.data(), 1);
  return out + envelope(m);
}

template <typename Fill>
std::string map(Fill fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return {buf.data(), buf.size()};
}

void write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string u16(std::uint16_t v) {
  return {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)};
}

std::string segment(std::uint64_t first_seq, int records, std::int64_t stored_at) {
  std::string out;
  for (int i = 0; i < records; ++i) {
    const auto n = static_cast<std::uint8_t>(first_seq + i);
    message m = make(n, "q", "payload");
    if (i % 2 == 1) m.set_key("order-7");
    m.set_attempt(0);
    storage::append_message_record(out, first_seq + i, stored_at + i, m.id(), storage::key_hash(m.key()),
                                   envelope(m, ferry::envelope_form::storage), m.payload());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];

  // ---- envelope_fuzz: envelopes, packed blocks, split blocks -------------------------------------------
  const fs::path env = root / "envelope_fuzz";
  message plain = make(1, "q", "hello");
  message rich = make(2, "orders", "{\"total\": 12}");
  rich.set_key("customer-42");
  rich.set_header("content-type", "application/json");
  rich.set_header("trace", "00-4bf92f3577b34da6-01");
  rich.set_attempt(3);
  message streamed = make(3, "prices", "1.25");
  streamed.set_stream(0x1234'5678'9abc, 77);
  write(env, "envelope-compact", envelope(plain));
  write(env, "envelope-storage", envelope(rich, ferry::envelope_form::storage));
  write(env, "envelope-stream", envelope(streamed));
  write(env, "block-one", block({&plain}));
  write(env, "block-three", block({&plain, &rich, &streamed}));
  write(env, "block-split", split_block(rich));

  // ---- ferryd_fuzz: requests, frames joined by fuzz_support.hpp's join_frames --------------------------
  const fs::path fd = root / "ferryd_fuzz";
  using ferry::fuzz::join_frames;
  auto pk_map = [](std::initializer_list<std::pair<const char*, std::uint64_t>> fields) {
    return map([&](auto& pk) {
      pk.pack_map(static_cast<std::uint32_t>(fields.size()));
      for (const auto& [k, v] : fields) {
        pk.pack(std::string(k));
        pk.pack(v);
      }
    });
  };
  write(fd, "hello", join_frames({"HELLO", pk_map({{"version", 2}})}));
  write(fd, "send-v2", join_frames({"SEND", "q", block({&plain, &rich})}));
  write(fd, "send-v1", join_frames({"SEND", "q", envelope(plain), "hello", envelope(rich), "x"}));
  write(fd, "consume", join_frames({"CONSUME", "q", pk_map({{"prefetch", 10}, {"version", 2}})}));
  write(fd, "ack", join_frames({"ACK", "q", std::string(8, '\0') + std::string("\0\0\0\0\0\0\0\1", 8)}));
  write(fd, "nack", join_frames({"NACK", "q", std::string("\0\0\0\0\0\0\0\1", 8), "failed"}));
  write(fd, "publish", join_frames({"PUBLISH", "prices", block({&streamed})}));
  write(fd, "subscribe", join_frames({"SUBSCRIBE", "prices", map([](auto& pk) {
                                        pk.pack_map(3);
                                        pk.pack(std::string("name"));
                                        pk.pack(std::string("s1"));
                                        pk.pack(std::string("from"));
                                        pk.pack(std::string("first"));
                                        pk.pack(std::string("prefetch"));
                                        pk.pack(5);
                                      })}));
  write(fd, "fetch", join_frames({"FETCH", "prices", pk_map({{"from", 1}, {"count", 10}})}));
  write(fd, "dlq-list", join_frames({"DLQ", "q", "list", pk_map({{"limit", 10}})}));
  write(fd, "stats", join_frames({"STATS"}));
  write(fd, "cancel", join_frames({"CANCEL", "q"}));

  // ---- storage_fuzz: control | segment 1 | segment 2 | journal | log_end --------------------------------
  const fs::path st = root / "storage_fuzz";
  const std::int64_t t = 1'700'000'000'000'000;
  std::string journal;
  storage::append_journal_record(journal, {storage::record_type::attempts, 0, 2, 1});
  storage::append_journal_record(journal, {storage::record_type::settle,
                                           static_cast<std::uint8_t>(storage::settle_reason::acked), 0, 2});
  storage::append_journal_record(journal, {storage::record_type::watermark, 0, 0, 2});
  std::string log_end;
  storage::append_log_end_record(log_end, {4, 0});
  const std::string one = segment(1, 3, t);
  // Sealed (bit 0 of the control byte): the fuzzer's changes to a body keep a valid checksum.
  write(st, "one-segment", join_frames({std::string("\1", 1) + u16(3), one}));
  write(st, "two-segments",
        join_frames({std::string("\1", 1) + u16(3), one, segment(4, 2, t + 10), journal}));
  write(st, "with-log-end",
        join_frames({std::string("\0", 1) + u16(3), one, segment(4, 2, t + 10), journal, log_end}));
  write(st, "torn-tail", join_frames({std::string("\0", 1) + u16(3), one.substr(0, one.size() - 5)}));
  std::string damaged = one;
  damaged[one.size() / 2] ^= 0x20;
  write(st, "damaged-middle", join_frames({std::string("\0", 1) + u16(3), damaged + segment(4, 1, t + 20)}));
  return 0;
}
