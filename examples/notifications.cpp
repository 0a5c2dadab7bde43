// One publisher, three subscribers with different prefixes: each gets every notification its prefix matches.
//
// Two things make "every" true on brokerless pub/sub: wait_for_subscriptions() before the first publish (a
// message published before a subscription arrives is lost to the slow joiner), and when_full::block so the
// publisher waits for a slow subscriber instead of dropping at the high-water mark. Gaps would show any loss.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ferry/ferry.hpp"

int main() {
  using namespace std::chrono_literals;
  ferry::context ctx;  // first, so it outlives every subscriber and the publisher
  // Topics and how many of each are published; "audit.login" matches no subscriber.
  const std::map<std::string, int> published = {
      {"notify.email", 3000}, {"notify.sms", 2000}, {"notify.push", 1000}, {"audit.login", 500}};

  struct listener {
    std::string prefix;
    int expected = 0;
    std::atomic<int> received{0};
    std::unique_ptr<ferry::subscriber> sub;
  };
  std::vector<std::unique_ptr<listener>> listeners;
  for (const char* prefix : {"notify.email", "notify.", "notify.sms"}) {
    auto l = std::make_unique<listener>();
    l->prefix = prefix;
    for (const auto& [topic, n] : published)
      if (topic.starts_with(l->prefix)) l->expected += n;
    listeners.push_back(std::move(l));
  }

  ferry::publisher pub(ctx, {.bind = {"tcp://127.0.0.1:*"}}, {.when_full = ferry::when_full::block});
  for (auto& l : listeners)
    l->sub = std::make_unique<ferry::subscriber>(ctx, ferry::endpoints{.connect = {pub.bound().at(0)}},
                                                 std::vector<std::string>{l->prefix},
                                                 [&target = *l](ferry::message&) { ++target.received; });

  // One subscribe request per prefix per subscriber.
  if (!pub.wait_for_subscriptions(listeners.size(), 10s)) {
    std::printf("FAILED: subscribers did not subscribe within 10 s\n");
    return 1;
  }

  int sent = 0;
  for (int i = 0; i < 3000; ++i) {
    for (const auto& [topic, n] : published) {
      if (i >= n) continue;
      ferry::message note(topic, "notification " + std::to_string(i) + " for user " + std::to_string(i % 50));
      note.set_header("user", "u" + std::to_string(i % 50));
      if (pub.publish(note) == ferry::send_status::ok) ++sent;
    }
  }

  // Pub/sub has no end-of-stream: wait until each subscriber has what it should, or give up.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  auto complete = [&] {
    for (const auto& l : listeners)
      if (l->received < l->expected) return false;
    return true;
  };
  while (!complete() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);

  std::printf("published: %d notifications to %llu subscriptions\n", sent,
              static_cast<unsigned long long>(pub.stats().subscriptions));
  bool ok = true;
  for (auto& l : listeners) {
    l->sub->stop();
    const ferry::receive_stats s = l->sub->stats();
    const bool good = l->received == l->expected && s.gaps == 0 && s.malformed == 0;
    ok = ok && good;
    std::printf("  %-14s received %5d of %5d, gaps %llu  %s\n", ("\"" + l->prefix + "\"").c_str(),
                l->received.load(), l->expected, static_cast<unsigned long long>(s.gaps),
                good ? "ok" : "INCOMPLETE");
  }
  std::printf("%s\n", ok ? "OK: every subscriber got every notification matching its prefix" : "FAILED");
  return ok ? 0 : 1;
}
