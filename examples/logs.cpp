// Log shipping: several services, each a thread with its own pusher, send log lines to one collector.
//
// Each line carries its service and level as headers and the service as key; the collector (a worker pool
// bound on an ephemeral tcp port) counts lines per service and level and prints the table. Exit code 0 only
// when the collector's table equals what the services say they sent.
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ferry/ferry.hpp"

namespace {

constexpr std::array<const char*, 4> services = {"checkout", "payments", "search", "inventory"};
constexpr std::array<const char*, 3> levels = {"info", "warn", "error"};
using table = std::map<std::string, std::map<std::string, int>>;  // service -> level -> lines

// A service's own mix of levels, so every row of the summary differs.
const char* level_of(std::size_t service, int line) {
  if (line % static_cast<int>(40 + 10 * service) == 0) return "error";
  if (line % static_cast<int>(7 + service) == 0) return "warn";
  return "info";
}

}  // namespace

int main() {
  constexpr int lines_per_service = 5000;
  ferry::context ctx;

  std::mutex mutex;
  std::condition_variable changed;
  table collected, sent;
  int collected_total = 0;
  ferry::worker_pool collector(ctx, {.bind = {"tcp://127.0.0.1:*"}}, [&](ferry::message& line) {
    std::lock_guard lock(mutex);
    ++collected[line.key()][std::string(line.header("level"))];
    ++collected_total;
    changed.notify_one();
  });
  const std::string endpoint = collector.bound().at(0);

  // One pusher per service thread, kept open until the collector has everything: closing a socket right
  // after sending does not promise delivery (libzmq's linger is best effort).
  std::vector<std::unique_ptr<ferry::pusher>> pushers(services.size());
  std::vector<std::thread> running;
  for (std::size_t s = 0; s < services.size(); ++s) {
    running.emplace_back([&, s] {
      ferry::pusher& out =
          *(pushers[s] = std::make_unique<ferry::pusher>(ctx, ferry::endpoints{.connect = {endpoint}}));
      std::map<std::string, int> mine;
      for (int i = 1; i <= lines_per_service; ++i) {
        const char* level = level_of(s, i);
        ferry::message line("logs", std::string(services[s]) + ": request " + std::to_string(i) + " done");
        line.set_key(services[s]);
        line.set_header("service", services[s]);
        line.set_header("level", level);
        if (out.send(line) == ferry::send_status::ok) ++mine[level];
      }
      std::lock_guard lock(mutex);
      sent[services[s]] = std::move(mine);
    });
  }
  for (auto& t : running) t.join();

  int sent_total = 0;
  for (const auto& [service, by_level] : sent)
    for (const auto& [level, n] : by_level) sent_total += n;
  {
    // No end-of-stream on a brokerless queue: the services told us how many lines they sent.
    std::unique_lock lock(mutex);
    changed.wait_for(lock, std::chrono::seconds(30), [&] { return collected_total >= sent_total; });
  }
  collector.stop();
  pushers.clear();
  const ferry::receive_stats stats = collector.stats();
  const bool ok = collected == sent && sent_total == lines_per_service * static_cast<int>(services.size());

  std::printf("%-10s %7s %7s %7s\n", "service", levels[0], levels[1], levels[2]);
  for (const char* service : services) {
    std::printf("%-10s", service);
    for (const char* level : levels) std::printf(" %7d", collected[service][level]);
    std::printf("\n");
  }
  std::printf("lines sent %d, collected %d (rejected %llu, dropped %llu)\n", sent_total, collected_total,
              static_cast<unsigned long long>(stats.malformed),
              static_cast<unsigned long long>(stats.dropped));

  std::printf("%s\n", ok ? "OK: every service's lines collected, per level" : "FAILED");
  return ok ? 0 : 1;
}
