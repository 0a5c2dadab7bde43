#pragma once
// Helpers shared by the benchmark programs: one-line JSON output, endpoints, clocks, and the frames of the
// raw 3-frame baseline (wire v1's shape).

#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "ferry/envelope.hpp"
#include "ferry/message.hpp"

namespace bench {

using clock = std::chrono::steady_clock;

/// The topic (queue name) every benchmark message carries.
inline constexpr std::string_view topic = "bench";

/// Builds one JSON object on one line. Keys and string values are plain ASCII identifiers, error texts and
/// endpoints, so escaping quotes, backslashes and control characters is enough.
class json_line {
 public:
  json_line& add(std::string_view key, std::string_view value) {
    field(key);
    quoted(value);
    return *this;
  }
  json_line& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  json_line& add(std::string_view key, const std::string& value) { return add(key, std::string_view(value)); }
  json_line& add(std::string_view key, double value) {
    field(key);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", value);
    text_ += buf;
    return *this;
  }
  json_line& add(std::string_view key, std::uint64_t value) {
    field(key);
    text_ += std::to_string(value);
    return *this;
  }
  json_line& add(std::string_view key, std::int64_t value) {
    field(key);
    text_ += std::to_string(value);
    return *this;
  }
  json_line& add(std::string_view key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  json_line& add(std::string_view key, bool value) {
    field(key);
    text_ += value ? "true" : "false";
    if (key == "ok") ok_ = value;
    return *this;
  }

  /// False once an "ok": false field was added.
  [[nodiscard]] bool ok() const noexcept { return ok_; }

  /// Prints the object and a newline to stdout and flushes, so a driver reading a pipe sees it at once.
  void print() const {
    std::fputs((text_ + "}\n").c_str(), stdout);
    std::fflush(stdout);
  }

 private:
  void field(std::string_view key) {
    text_ += text_.size() == 1 ? "" : ",";
    quoted(key);
    text_ += ':';
  }
  void quoted(std::string_view s) {
    text_ += '"';
    for (char c : s) {
      if (c == '"' || c == '\\') {
        text_ += '\\';
        text_ += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        text_ += buf;
      } else {
        text_ += c;
      }
    }
    text_ += '"';
  }

  std::string text_ = "{";
  bool ok_ = true;
};

/// The libzmq version this program runs with, e.g. "4.3.4".
inline std::string zmq_version_string() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

/// The endpoint a benchmark binds by default on `transport`: an ephemeral tcp port, a fresh ipc path, or an
/// inproc name. `what` tells two endpoints of one run apart.
inline std::string default_endpoint(const std::string& transport, const std::string& what) {
  if (transport == "tcp") return "tcp://127.0.0.1:*";
  if (transport == "ipc") return "ipc:///tmp/ferry-bench-" + std::to_string(::getpid()) + "-" + what;
  if (transport == "inproc") return "inproc://ferry-bench-" + what;
  throw std::invalid_argument("unknown transport '" + transport + "': use tcp, ipc or inproc");
}

/// The endpoint next to `endpoint`, for a second socket when the user gave only one: the next tcp port, or
/// the ipc path / inproc name with `suffix` appended. A `*` port stays `*` (the binder prints what it got).
inline std::string companion_endpoint(const std::string& endpoint, const std::string& suffix) {
  if (endpoint.rfind("tcp://", 0) == 0) {
    const auto colon = endpoint.rfind(':');
    const std::string port = endpoint.substr(colon + 1);
    if (port == "*") return endpoint;
    return endpoint.substr(0, colon + 1) + std::to_string(std::stoi(port) + 1);
  }
  return endpoint + "-" + suffix;
}

/// Removes the socket file an ipc endpoint left behind (libzmq 4.3 does not always unlink it at close).
inline void remove_ipc_file(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0) ::unlink(endpoint.substr(6).c_str());
}

/// The transport part of an endpoint ("tcp", "ipc", "inproc").
inline std::string transport_of(const std::string& endpoint) {
  const auto sep = endpoint.find("://");
  return sep == std::string::npos ? std::string() : endpoint.substr(0, sep);
}

/// The three frames of one message in wire v1 (what ferry sent before v2): topic, envelope, payload. The raw
/// 3-frame baseline copies these bytes into new frames for every message, as it did when it moved exactly
/// what ferry moved; it is kept unchanged so ratios against it stay comparable across runs.
struct ferry_frames {
  std::string topic;
  std::string envelope;
  std::string payload;
};

/// Frames of a representative message of `size` payload bytes. A publisher stream's envelope also carries
/// the origin and a sequence number, so `stream` makes it the size a publisher sends.
inline ferry_frames sample_frames(std::size_t size, bool stream) {
  ferry::message msg{std::string(topic), std::string(size, 'x')};
  if (stream) msg.set_stream(0x9e3779b97f4a7c15ull, 1'000'000);  // random-looking origin, a mid-run sequence
  std::string envelope(ferry::envelope_size(msg), '\0');
  envelope.resize(ferry::encode_envelope(msg, envelope.data()));
  return {std::string(topic), std::move(envelope), std::string(msg.payload())};
}

/// Nearest-rank percentile of sorted `values`, `p` in [0, 1].
inline double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(p * static_cast<double>(sorted.size()) + 0.999999);
  if (rank == 0) rank = 1;
  if (rank > sorted.size()) rank = sorted.size();
  return sorted[rank - 1];
}

/// CPU time (user + system) this process has used so far, every thread included, in nanoseconds. The
/// CPU a measurement costs per message is steadier than its rate on a busy machine.
inline double process_cpu_ns() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto ns = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) * 1e9 + static_cast<double>(tv.tv_usec) * 1e3;
  };
  return ns(u.ru_utime) + ns(u.ru_stime);
}

inline double seconds_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace bench
