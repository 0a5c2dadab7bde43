// Fuzzes the envelope v1 and wire v2 block decoders (lib/envelope.cpp, lib/detail/wire.cpp) with the
// input as one envelope, one packed block and one split block. Checks:
//   - decoding never crashes and reports a problem only as a decode_error (no exception escapes);
//   - a decoded block's payloads lie inside the block;
//   - what decodes re-encodes (compact and storage form, as senders and ferryd write it) to bytes that
//     decode to an equal message, and re-encoding that gives the same bytes again.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "detail/wire.hpp"
#include "ferry/envelope.hpp"
#include "ferry/log.hpp"
#include "ferry/message.hpp"
#include "fuzz_support.hpp"

namespace {

using ferry::decode_error;
using ferry::message;
using ferry::fuzz::require;

bool same_fields(const message& a, const message& b) {
  return a.id() == b.id() && a.timestamp_us() == b.timestamp_us() && a.attempt() == b.attempt() &&
         a.key() == b.key() && a.headers() == b.headers() && a.origin() == b.origin() &&
         a.sequence() == b.sequence();
}

std::string encoded(const message& m, ferry::envelope_form form) {
  std::string out(ferry::envelope_size(m, form), '\0');
  require(ferry::encode_envelope(m, out.data(), form) == out.size(),
          "encode_envelope wrote envelope_size bytes");
  return out;
}

// Limits that admit what `bytes` needs: a re-encoded envelope may be a few bytes longer than the one decoded
// (a fixint timestamp is written as 9 bytes).
ferry::decode_limits admitting(std::size_t bytes) {
  ferry::decode_limits limits;
  limits.max_envelope = std::max(limits.max_envelope, bytes);
  return limits;
}

void check_envelope_round_trip(const message& decoded) {
  for (const auto form : {ferry::envelope_form::compact, ferry::envelope_form::storage}) {
    const std::string bytes = encoded(decoded, form);
    message again;
    require(ferry::decode_envelope(bytes, again, admitting(bytes.size())) == decode_error::none,
            "an encoded envelope decodes");
    require(same_fields(decoded, again), "decode(encode(m)) == m");
    require(encoded(again, form) == bytes, "encode(decode(encode(m))) == encode(m)");
  }
  // The storage form's attempt can be patched in place, and the patch is what decodes.
  std::string storage = encoded(decoded, ferry::envelope_form::storage);
  const std::uint32_t attempt = decoded.attempt() + 1;
  require(ferry::patch_envelope_attempt(storage.data(), storage.size(), attempt),
          "storage form is patchable");
  message patched;
  require(ferry::decode_envelope(storage, patched, admitting(storage.size())) == decode_error::none &&
              patched.attempt() == attempt,
          "a patched storage envelope decodes with the new attempt");
}

void fuzz_envelope(std::string_view input) {
  message m;
  if (ferry::decode_envelope(input, m) != decode_error::none) return;
  require(ferry::envelope_size(m) <= input.size() + 8,
          "a decoded envelope re-encodes no larger than 8 bytes more");
  check_envelope_round_trip(m);
}

void fuzz_block(std::string_view block, bool split) {
  std::vector<message> out;
  std::vector<ferry::detail::payload_span> payloads;
  std::size_t count = 0;
  if (ferry::detail::decode_block(block, out, payloads, count, {}, split) != decode_error::none) return;
  require(count >= 1 && out.size() >= count && payloads.size() >= count, "a decoded block has messages");
  require(!split || count == 1, "a split block holds one message");
  // Rebuilt from its parts, as ferryd rebuilds a DELIVER's block from stored envelopes and payloads.
  std::size_t bytes = ferry::detail::block_header_size(count);
  std::vector<std::string> envelopes;
  for (std::size_t i = 0; i < count; ++i) {
    require(payloads[i].offset <= block.size() && payloads[i].size <= block.size() - payloads[i].offset,
            "a payload lies inside its block");
    require(!split || payloads[i].size == 0, "a split block carries no payload");
    check_envelope_round_trip(out[i]);
    envelopes.push_back(encoded(out[i], ferry::envelope_form::compact));
    bytes += split ? envelopes.back().size()
                   : ferry::detail::block_entry_size(envelopes.back().size(), payloads[i].size);
  }
  std::string rebuilt(bytes, '\0');
  char* p = ferry::detail::write_block_header(rebuilt.data(), count);
  for (std::size_t i = 0; i < count; ++i) {
    if (split) {
      p = std::copy(envelopes[i].begin(), envelopes[i].end(), p);
    } else {
      p = ferry::detail::write_block_entry(p, envelopes[i],
                                           block.substr(payloads[i].offset, payloads[i].size));
    }
  }
  require(p == rebuilt.data() + rebuilt.size(), "block_entry_size matches write_block_entry");
  std::vector<message> again;
  std::vector<ferry::detail::payload_span> again_payloads;
  std::size_t again_count = 0;
  ferry::decode_limits limits;
  limits.max_envelope += 16;
  require(ferry::detail::decode_block(rebuilt, again, again_payloads, again_count, limits, split) ==
              decode_error::none,
          "a rebuilt block decodes");
  require(again_count == count, "a rebuilt block has as many messages");
  for (std::size_t i = 0; i < count; ++i) {
    require(same_fields(out[i], again[i]), "decode(encode(block)) == block: envelope fields");
    require(rebuilt.substr(again_payloads[i].offset, again_payloads[i].size) ==
                block.substr(payloads[i].offset, payloads[i].size),
            "decode(encode(block)) == block: payloads");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = ferry::fuzz::bytes_of(data, size);
  try {
    fuzz_envelope(input);
    fuzz_block(input, false);
    fuzz_block(input, true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ferry fuzz: exception escaped a decoder: %s\n", e.what());
    std::abort();
  }
  return 0;
}
