// An order stream handled by a pool of 4 worker threads, each order exactly once.
//
// The producer is "at least once": it re-sends some orders with their original id, as a producer does after
// a timeout or a restart that replays its outbox. The pool's dedup window recognises the repeats, so every
// order id reaches a handler exactly once. Exit code 0 only when that holds.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "ferry/ferry.hpp"

int main() {
  constexpr int orders = 20'000;
  constexpr int retry_every = 25;  // every 25th order is sent twice with the same id

  std::mutex mutex;
  std::unordered_map<std::string, int> per_order;  // order id -> times handled
  std::map<std::thread::id, int> per_thread;
  long long revenue_cents = 0;

  ferry::context ctx;
  ferry::worker_pool pool(ctx, {.bind = {"tcp://127.0.0.1:*"}},
                          [&](ferry::message& order) {
                            const long long cents = std::stoll(std::string(order.header("amount_cents")));
                            std::lock_guard lock(mutex);
                            ++per_order[order.key()];
                            ++per_thread[std::this_thread::get_id()];
                            revenue_cents += cents;
                          },
                          {.threads = 4, .dedup = ferry::dedup_options{}});
  ferry::pusher producer(ctx, {.connect = {pool.bound().at(0)}});

  int sent = 0, resent = 0;
  long long billed_cents = 0;  // what the customers should pay, each order once
  for (int i = 1; i <= orders; ++i) {
    ferry::message order("orders", "{\"sku\":\"SKU-" + std::to_string(i % 97) + "\",\"qty\":1}");
    order.set_key("order-" + std::to_string(i));
    order.set_header("customer", "c" + std::to_string(i % 1000));
    const long long cents = 100 + i % 5000;
    order.set_header("amount_cents", std::to_string(cents));
    if (i % retry_every == 0) {
      ferry::message retry = order.clone();  // same id: a retry, not a new order
      if (producer.send(retry) == ferry::send_status::ok) ++resent;
    }
    if (producer.send(order) == ferry::send_status::ok) {
      ++sent;
      billed_cents += cents;
    }
  }

  // Brokerless means no end-of-stream from the pool: we know how many messages we sent (retries included)
  // and wait until the pool has taken them all; stop() then lets the handlers finish what they hold.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (pool.stats().received < static_cast<std::uint64_t>(sent + resent) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  pool.stop();
  const ferry::receive_stats stats = pool.stats();

  int once = 0, missing = 0, twice = 0;
  for (int i = 1; i <= orders; ++i) {
    const auto it = per_order.find("order-" + std::to_string(i));
    const int n = it == per_order.end() ? 0 : it->second;
    once += n == 1;
    missing += n == 0;
    twice += n > 1;
  }

  std::printf("orders sent:       %d (+%d retries with the same id)\n", sent, resent);
  std::printf("orders handled:    %llu (received %llu, duplicates dropped %llu, failed %llu, dropped %llu)\n",
              static_cast<unsigned long long>(stats.handled), static_cast<unsigned long long>(stats.received),
              static_cast<unsigned long long>(stats.duplicates),
              static_cast<unsigned long long>(stats.failed), static_cast<unsigned long long>(stats.dropped));
  std::printf("revenue:           %lld.%02lld (billed %lld.%02lld)\n", revenue_cents / 100,
              revenue_cents % 100, billed_cents / 100, billed_cents % 100);
  std::printf("per-thread spread:");
  for (const auto& [thread, n] : per_thread) std::printf(" %d", n);
  std::printf("  (%zu threads)\n", per_thread.size());
  std::printf("exactly once:      %d of %d (missing %d, more than once %d)\n", once, orders, missing, twice);

  const bool ok = sent == orders && once == orders && revenue_cents == billed_cents &&
                  stats.duplicates == static_cast<std::uint64_t>(resent) && stats.failed == 0 &&
                  stats.malformed == 0;
  std::printf("%s\n", ok ? "OK: every order handled exactly once" : "FAILED");
  return ok ? 0 : 1;
}
