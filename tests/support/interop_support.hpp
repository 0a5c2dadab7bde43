#pragma once
// What the interop tests share (interop_test.cpp: the brokerless patterns, interop_ferryd_test.cpp: through
// ferryd): running the Python client of tests/interop/, reading what it prints, and comparing messages
// field by field.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/ferry.hpp"
#include "support/test_support.hpp"

namespace ferry::test::interop {

inline const std::string interop_dir = FERRY_SOURCE_DIR "/tests/interop/";
inline const std::string protocol_md = FERRY_SOURCE_DIR "/docs/protocol.md";

/// Waits for `text` from the script; on failure shows everything it printed (a missing Python module, a
/// traceback) instead of a bare timeout.
inline void require_output(child_process& py, const std::string& text,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const bool seen = py.wait_for_output(text, timeout);
  INFO("python stdout:\n" << py.out() << "\npython stderr:\n" << py.err());
  REQUIRE(seen);
}

/// Waits for the script to exit and requires exit code 0, showing its output otherwise.
inline void require_success(child_process& py, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const auto code = py.wait(timeout);
  INFO("python stdout:\n" << py.out() << "\npython stderr:\n" << py.err());
  REQUIRE(code.has_value());
  REQUIRE(*code == 0);
}

inline std::string unhex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

inline std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0x0F]);
  }
  return out;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// The rest of the first output line that starts with "<name> ", e.g. "endpoint tcp://...".
inline std::string output_value(const std::string& out, const std::string& name) {
  for (const auto& line : lines_of(out))
    if (line.rfind(name + " ", 0) == 0) return line.substr(name.size() + 1);
  return {};
}

inline std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

/// Every field of a message, as ferry_py.describe() prints it and as we compare it.
struct fields {
  std::string id, topic;
  std::optional<std::string> key;
  std::int64_t timestamp_us = 0;
  std::uint64_t attempt = 0, origin = 0, sequence = 0;
  std::string payload;
  ferry::headers headers;

  static fields of(const ferry::message& m) {
    fields f;
    f.id = m.id().to_hex();
    f.topic = m.topic();
    if (m.has_key()) f.key = m.key();
    f.timestamp_us = m.timestamp_us();
    f.attempt = m.attempt();
    f.origin = m.origin();
    f.sequence = m.sequence();
    f.payload = std::string(m.payload());
    f.headers = m.headers();
    return f;
  }
  bool operator==(const fields&) const = default;
};

inline std::ostream& operator<<(std::ostream& os, const fields& f) {
  return os << "{id " << f.id << ", topic '" << f.topic << "', key " << (f.key ? "'" + *f.key + "'" : "none")
            << ", ts " << f.timestamp_us << ", attempt " << f.attempt << ", origin " << f.origin << ", seq "
            << f.sequence << ", payload " << f.payload.size() << " bytes, " << f.headers.size()
            << " headers}";
}

inline void sort_by_id(std::vector<fields>& all) {
  std::sort(all.begin(), all.end(), [](const fields& a, const fields& b) { return a.id < b.id; });
}

/// Parses the `msg ...` lines of a script's output (ferry_py.describe), in order.
inline std::vector<fields> described(const std::string& out) {
  std::vector<fields> all;
  for (const auto& line : lines_of(out)) {
    if (line.rfind("msg ", 0) != 0) continue;
    fields f;
    std::istringstream words(line.substr(4));
    for (std::string word; words >> word;) {
      const auto eq = word.find('=');
      const std::string name = word.substr(0, eq), value = word.substr(eq + 1);
      if (name == "id") f.id = value;
      if (name == "topic") f.topic = unhex(value);
      if (name == "key") f.key = value == "-" ? std::nullopt : std::optional(unhex(value));
      if (name == "ts") f.timestamp_us = std::stoll(value);
      if (name == "attempt") f.attempt = std::stoull(value);
      if (name == "origin") f.origin = std::stoull(value);
      if (name == "seq") f.sequence = std::stoull(value);
      if (name == "payload") f.payload = unhex(value);
      if (name.rfind("h.", 0) == 0) f.headers[unhex(name.substr(2))] = unhex(value);
    }
    all.push_back(std::move(f));
  }
  return all;
}

/// Collects what a handler receives, thread-safely.
struct collector {
  std::mutex mutex;
  std::vector<fields> seen;
  ferry::message_handler handler() {
    return [this](ferry::message& m) {
      std::lock_guard lock(mutex);
      seen.push_back(fields::of(m));
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return seen.size();
  }
  std::vector<fields> sorted() {
    std::lock_guard lock(mutex);
    auto all = seen;
    sort_by_id(all);
    return all;
  }
};

}  // namespace ferry::test::interop
