#pragma once
// What the durable benchmarks share (bench_durable and bench_peers): producers as separate processes that
// start together, payloads that carry their send time, pacing, and latency percentiles.
//
// Producers are forked before the parent creates any thread or ZeroMQ context (fork copies only the calling
// thread, so a context made earlier would be unusable in the child). Each child connects, reports "ready",
// waits for "go", runs, and writes one result line back through a pipe. Times are CLOCK_MONOTONIC
// nanoseconds (std::chrono::steady_clock on Linux), which every process on the machine shares, so the
// parent can take the first send and the last confirm across all children.

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"

namespace bench {

/// Nanoseconds on the steady clock (CLOCK_MONOTONIC): comparable between processes of one machine.
inline std::int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
}

/// Smallest payload a durable benchmark sends: the send time takes the first 8 bytes.
inline constexpr std::size_t min_payload = 8;

/// Writes the send time into the first 8 bytes of `payload` (native byte order: read on the same machine).
inline void stamp_payload(char* payload, std::int64_t now_ns) {
  std::memcpy(payload, &now_ns, 8);
}

inline std::int64_t payload_stamp(const void* payload) {
  std::int64_t ns = 0;
  std::memcpy(&ns, payload, 8);
  return ns;
}

/// Spreads sends over time at `rate` messages/s from `start_ns`; rate 0 means flat out. A sender that is
/// more than 0.2 ms ahead of its schedule sleeps until the message is due, so messages leave in bursts of
/// at most 0.2 ms worth (not a system call per message). Sleeping until an absolute deadline keeps the
/// average rate exact even when the scheduler wakes us late (the late messages then leave back to back).
class pacer {
 public:
  pacer(double rate, std::int64_t start_ns) : start_ns_(start_ns), interval_ns_(rate > 0 ? 1e9 / rate : 0) {}
  /// Waits until message `i` is due and returns the time to stamp it with: when paced, the time it was
  /// due (so a sender that falls behind, blocked by a full window say, counts that delay as latency
  /// instead of hiding it); flat out, now.
  std::int64_t wait_turn(std::uint64_t i) const {
    if (interval_ns_ <= 0) return mono_ns();
    const auto due = start_ns_ + static_cast<std::int64_t>(static_cast<double>(i) * interval_ns_);
    const std::int64_t ahead = due - mono_ns();
    if (ahead > 200'000) std::this_thread::sleep_for(std::chrono::nanoseconds(ahead));
    return due;
  }

 private:
  std::int64_t start_ns_;
  double interval_ns_;
};

/// What one producer process reports.
struct producer_result {
  bool ok = true;
  std::string error;
  std::uint64_t sent = 0;
  std::uint64_t confirmed = 0;
  std::int64_t first_send_ns = 0;
  std::int64_t last_confirm_ns = 0;
  double cpu_ns = 0;
};

/// The role a child plays: connect, call ready() once connected (it returns when the parent says go), send,
/// and return what happened. Exceptions become an error result.
using producer_fn = std::function<producer_result(unsigned index, const std::function<void()>& ready)>;

/// Forked producer processes. start() forks them, await_ready() waits until each has connected, go()
/// releases them together, and results() collects what they report.
class producer_group {
 public:
  producer_group() = default;
  producer_group(const producer_group&) = delete;
  producer_group& operator=(const producer_group&) = delete;
  ~producer_group() {
    for (auto& c : children_) {
      if (c.pid > 0) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, nullptr, 0);
      }
      if (c.from_child >= 0) ::close(c.from_child);
      if (c.to_child >= 0) ::close(c.to_child);
    }
  }

  /// Forks `n` children running `fn`. Call before this process starts any thread.
  void start(unsigned n, const producer_fn& fn) {
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t parent = ::getpid();
    for (unsigned i = 0; i < n; ++i) {
      int up[2], down[2];
      if (::pipe(up) != 0 || ::pipe(down) != 0) throw std::runtime_error("pipe failed");
      const pid_t pid = ::fork();
      if (pid < 0) throw std::runtime_error("fork failed");
      if (pid == 0) {
        ::close(up[0]);
        ::close(down[1]);
        for (const auto& c : children_) {  // siblings' pipes are not ours
          ::close(c.from_child);
          ::close(c.to_child);
        }
        run_child(parent, i, fn, up[1], down[0]);  // does not return
      }
      ::close(up[1]);
      ::close(down[0]);
      children_.push_back({pid, up[0], down[1], {}});
    }
  }

  /// Waits until every child called ready(). Throws if one failed or the timeout passed.
  void await_ready(std::chrono::seconds timeout) {
    const auto deadline = clock::now() + timeout;
    for (auto& c : children_) {
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0) throw std::runtime_error("a producer did not connect within the timeout");
        pollfd p{c.from_child, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char b = 0;
        const ssize_t n = ::read(c.from_child, &b, 1);
        if (n == 1 && b == 'R') break;
        if (n == 1) {
          c.text.push_back(b);
          continue;
        }
        throw std::runtime_error("a producer failed before connecting: " + read_rest(c));
      }
    }
  }

  /// Lets every child start sending.
  void go() {
    for (auto& c : children_) {
      const char b = 'G';
      (void)!::write(c.to_child, &b, 1);
    }
  }

  /// Collects each child's result (waiting up to `timeout` in all) and reaps the children.
  std::vector<producer_result> results(std::chrono::seconds timeout) {
    std::vector<producer_result> out;
    const auto deadline = clock::now() + timeout;
    for (auto& c : children_) {
      producer_result r;
      std::string line;
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        pollfd p{c.from_child, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
          line = "E producer timed out";
          ::kill(c.pid, SIGKILL);  // it may be stuck; waitpid below must not wait for it
          break;
        }
        char buf[512];
        const ssize_t n = ::read(c.from_child, buf, sizeof buf);
        if (n <= 0) break;
        line.append(buf, static_cast<std::size_t>(n));
      }
      parse(line, r);
      int status = 0;
      if (::waitpid(c.pid, &status, 0) == c.pid) c.pid = -1;
      out.push_back(r);
    }
    return out;
  }

 private:
  struct child {
    pid_t pid;
    int from_child;
    int to_child;
    std::string text;
  };

  static std::string read_rest(child& c) {
    char buf[512];
    ssize_t n;
    while ((n = ::read(c.from_child, buf, sizeof buf)) > 0) c.text.append(buf, static_cast<std::size_t>(n));
    return c.text.empty() ? "it exited" : c.text;
  }

  [[noreturn]] static void run_child(pid_t parent, unsigned index, const producer_fn& fn, int up, int down) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);        // a parent killed on a timeout takes its producers along
    if (::getppid() != parent) std::_Exit(3);  // it died before prctl
    producer_result r;
    auto ready = [&] {
      const char b = 'R';
      (void)!::write(up, &b, 1);
      char g = 0;
      if (::read(down, &g, 1) != 1) std::_Exit(3);  // the parent is gone
    };
    try {
      r = fn(index, ready);
    } catch (const std::exception& e) {
      r.ok = false;
      r.error = e.what();
    }
    char line[256];
    if (r.ok) {
      std::snprintf(line, sizeof line, "K %llu %llu %lld %lld %.0f", static_cast<unsigned long long>(r.sent),
                    static_cast<unsigned long long>(r.confirmed), static_cast<long long>(r.first_send_ns),
                    static_cast<long long>(r.last_confirm_ns), r.cpu_ns);
    } else {
      std::snprintf(line, sizeof line, "E %s", r.error.c_str());
    }
    (void)!::write(up, line, std::strlen(line));
    // _Exit: no static destructors or atexit handlers of the parent's image run twice in the child.
    std::_Exit(r.ok ? 0 : 1);
  }

  static void parse(const std::string& line, producer_result& r) {
    if (line.rfind("K ", 0) == 0) {
      unsigned long long sent = 0, confirmed = 0;
      long long first = 0, last = 0;
      double cpu = 0;
      if (std::sscanf(line.c_str() + 2, "%llu %llu %lld %lld %lf", &sent, &confirmed, &first, &last, &cpu) ==
          5) {
        r.sent = sent;
        r.confirmed = confirmed;
        r.first_send_ns = first;
        r.last_confirm_ns = last;
        r.cpu_ns = cpu;
        return;
      }
    }
    r.ok = false;
    r.error = line.rfind("E ", 0) == 0 ? line.substr(2) : "unreadable result from a producer: '" + line + "'";
  }

  std::vector<child> children_;
};

/// Totals over producers (the same fields, summed): confirmed messages, the first send and the last
/// confirm of any of them, CPU.
struct producer_totals : producer_result {
  [[nodiscard]] double seconds() const { return static_cast<double>(last_confirm_ns - first_send_ns) / 1e9; }
};

inline producer_totals total(const std::vector<producer_result>& results) {
  producer_totals t;
  for (const auto& r : results) {
    if (!r.ok) {
      t.ok = false;
      if (t.error.empty()) t.error = r.error;
      continue;
    }
    if (r.sent == 0) continue;  // nothing to time (more producers than messages)
    t.sent += r.sent;
    t.confirmed += r.confirmed;
    t.cpu_ns += r.cpu_ns;
    if (t.first_send_ns == 0 || r.first_send_ns < t.first_send_ns) t.first_send_ns = r.first_send_ns;
    t.last_confirm_ns = std::max(t.last_confirm_ns, r.last_confirm_ns);
  }
  return t;
}

/// Messages producer `index` of `n` sends when `count` are sent in all.
inline std::uint64_t share_of(std::uint64_t count, unsigned n, unsigned index) {
  return count / n + (index < count % n ? 1 : 0);
}

/// Produce-to-handler latencies, recorded from several handler threads without a lock.
class latency_log {
 public:
  explicit latency_log(std::size_t capacity) : ns_(capacity) {}
  /// Records one latency; returns how many were recorded so far (this one included).
  std::uint64_t add(std::int64_t ns) {
    const std::uint64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i < ns_.size()) ns_[i] = ns;
    return i + 1;
  }
  [[nodiscard]] std::uint64_t count() const { return next_.load(std::memory_order_relaxed); }

  /// p50, p99 and p99.9 in microseconds, skipping the first `skip` recorded (warm-up). Call once the
  /// handlers are stopped.
  [[nodiscard]] std::vector<double> percentiles_us(std::size_t skip) const {
    const std::size_t n = std::min<std::size_t>(ns_.size(), next_.load());
    std::vector<double> v;
    for (std::size_t i = std::min(skip, n); i < n; ++i) v.push_back(static_cast<double>(ns_[i]) / 1e3);
    std::sort(v.begin(), v.end());
    return {percentile(v, 0.5), percentile(v, 0.99), percentile(v, 0.999), v.empty() ? 0.0 : v.back()};
  }

 private:
  std::vector<std::int64_t> ns_;
  std::atomic<std::uint64_t> next_{0};
};

/// Adds the fields every durable result line carries.
inline void add_totals(json_line& j, const producer_totals& t, std::uint64_t count) {
  const double s = t.seconds();
  j.add("sent", t.sent)
      .add("confirmed", t.confirmed)
      .add("seconds", s)
      .add("msgs_per_s", s > 0 ? static_cast<double>(t.confirmed) / s : 0.0)
      .add("client_cpu_ns_per_msg", count > 0 ? t.cpu_ns / static_cast<double>(count) : 0.0);
}

/// Adds the fields of an end-to-end result line: handled messages from the first send to the last handler
/// call `last_ns`, the producers' own rate, produce-to-handler percentiles (the first 5% left out:
/// connections and caches warming up) and the CPU of producers and consumer per message.
inline void add_e2e_figures(json_line& j, const producer_totals& t, const latency_log& lat,
                            std::uint64_t count, bool ok, std::uint64_t handled, std::int64_t last_ns,
                            double consumer_cpu_ns, double rate, unsigned threads) {
  const double seconds = static_cast<double>(last_ns - t.first_send_ns) / 1e9;
  const auto p = lat.percentiles_us(static_cast<std::size_t>(count / 20));
  j.add("handled", handled)
      .add("rate", rate)
      .add("seconds", seconds)
      .add("msgs_per_s", ok && seconds > 0 ? static_cast<double>(count) / seconds : 0.0)
      .add("produce_msgs_per_s", t.seconds() > 0 ? static_cast<double>(t.confirmed) / t.seconds() : 0.0)
      .add("p50_us", p[0])
      .add("p99_us", p[1])
      .add("p999_us", p[2])
      .add("max_us", p[3])
      .add("client_cpu_ns_per_msg", (t.cpu_ns + consumer_cpu_ns) / static_cast<double>(count))
      .add("threads", static_cast<std::uint64_t>(threads));
}

}  // namespace bench
