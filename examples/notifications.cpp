// One publisher, three subscribers with different prefixes: each gets every notification its prefix matches.
//
// Two things make "every" true on brokerless pub/sub: wait_for_subscriptions() before the first publish (a
// message published before a subscription arrives is lost to the slow joiner), and when_full::block so the
// publisher waits for a slow subscriber instead of dropping at the high-water mark. Gaps would show any loss.
//
// With a ferryd endpoint as argument it goes on through ferryd: notifications published to a durable topic,
// and a durable subscriber ("mailer") that is stopped halfway and started again, and still sees every
// notification once, in order, including those published while it was away. The topic is this run's own.
//   mkdir -p /tmp/ferryd && ferryd --data-dir /tmp/ferryd &
//   ./notifications tcp://127.0.0.1:5570
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ferry/ferry.hpp"

namespace {

using namespace std::chrono_literals;

// Publishes notifications n .. n + count - 1 to `topic`; true once ferryd confirmed each.
bool publish_durably(ferry::producer& p, const std::string& topic, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    ferry::message note(topic, "notification " + std::to_string(i));
    note.set_header("n", std::to_string(i));
    if (p.publish(note) != ferry::send_status::ok) return false;
  }
  return p.flush(30s) && p.stats().refused == 0;
}

// The durable part: a subscriber stopped and restarted sees every notification once.
bool durable_part(ferry::context& ctx, const std::string& forwarder) {
  const std::string topic = "notify-" + std::to_string(::getpid());
  constexpr int total = 3000;
  std::mutex mutex;
  std::vector<int> seen;  // notification numbers, in handling order, across both runs
  auto handler = [&](ferry::message& note) {
    std::lock_guard lock(mutex);
    seen.push_back(std::stoi(std::string(note.header("n"))));
  };
  auto count_seen = [&] {
    std::lock_guard lock(mutex);
    return seen.size();
  };
  auto wait_for = [&](std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (count_seen() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    return count_seen() >= n;
  };
  const ferry::topic_subscription mailer{topic, "mailer", ferry::start_position::first()};

  ferry::producer producer(ctx, forwarder);
  if (!publish_durably(producer, topic, 0, total / 2)) return false;
  {
    ferry::consumer first_run(ctx, forwarder, mailer, handler);
    if (!wait_for(total / 2)) return false;
  }  // stopped: what it handled is acknowledged, its position stays with ferryd
  if (!publish_durably(producer, topic, total / 2, total / 2)) return false;  // while it is away
  {
    ferry::consumer second_run(ctx, forwarder, mailer, handler);  // resumes where it stopped
    if (!wait_for(total)) return false;
    std::this_thread::sleep_for(200ms);  // anything more would be a duplicate
  }
  std::lock_guard lock(mutex);
  bool in_order = seen.size() == static_cast<std::size_t>(total);
  for (std::size_t i = 0; in_order && i < seen.size(); ++i) in_order = seen[i] == static_cast<int>(i);
  std::printf("durable: subscriber \"mailer\" stopped after %d and restarted: %zu of %d notifications, %s\n",
              total / 2, seen.size(), total, in_order ? "each once, in order" : "NOT each once in order");
  return in_order;
}

}  // namespace

int main(int argc, char** argv) {
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
  if (ok && argc > 1) {
    ok = durable_part(ctx, argv[1]);
    std::printf("%s\n",
                ok ? "OK: the durable subscriber saw every notification across its restart" : "FAILED");
  }
  return ok ? 0 : 1;
}
