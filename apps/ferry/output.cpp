#include "output.hpp"

#include <cstdint>
#include <cstdio>

namespace ferry::cli {
namespace {

void append_u64(std::string& out, std::uint64_t value) {
  char buf[24];
  const int n = std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(value));
  out.append(buf, static_cast<std::size_t>(n));
}

void append_json(std::string& out, const ferry::message& msg) {
  out += "{\"id\":\"";
  out += msg.id().to_hex();
  out += "\",\"topic\":";
  append_json_string(out, msg.topic());
  out += ",\"key\":";
  append_json_string(out, msg.key());
  out += ",\"headers\":";
  append_json_headers(out, msg.headers());
  out += ",\"attempt\":";
  append_u64(out, msg.attempt());
  out += ",\"timestamp\":";
  out += std::to_string(msg.timestamp_us());
  if (msg.origin() != 0) {
    out += ",\"origin\":";
    append_json_hex64(out, msg.origin());
  }
  if (msg.sequence() != 0) {
    out += ",\"sequence\":";
    append_u64(out, msg.sequence());
  }
  out += ',';
  append_json_payload(out, msg.payload());
  out += "}\n";
}

}  // namespace

void append_base64(std::string& out, std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto byte = [&](std::size_t k) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[k]));
  };
  out.reserve(out.size() + (bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += alphabet[v >> 6 & 63];
    out += alphabet[v & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest == 0) return;
  const std::uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
  out += alphabet[v >> 18 & 63];
  out += alphabet[v >> 12 & 63];
  out += rest == 2 ? alphabet[v >> 6 & 63] : '=';
  out += '=';
}

void append_message(std::string& out, const ferry::message& msg, output_format format) {
  if (format == output_format::json) {
    append_json(out, msg);
    return;
  }
  out.append(msg.payload());
  out += '\n';
}

void append_json_headers(std::string& out, const ferry::headers& headers) {
  out += '{';
  bool first = true;
  for (const auto& [name, value] : headers) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, name);
    out += ':';
    append_json_string(out, value);
  }
  out += '}';
}

void append_json_payload(std::string& out, std::string_view payload) {
  out += "\"payload\":";
  if (is_valid_utf8(payload)) {
    append_json_string(out, payload);
    return;
  }
  out += '"';
  append_base64(out, payload);
  out += "\",\"payload_base64\":true";
}

void append_json_hex64(std::string& out, std::uint64_t value) {
  char buf[20];
  const int n = std::snprintf(buf, sizeof buf, "\"%016llx\"", static_cast<unsigned long long>(value));
  out.append(buf, static_cast<std::size_t>(n));
}

}  // namespace ferry::cli
