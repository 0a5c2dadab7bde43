#include <catch2/catch.hpp>

#include <vector>

#include "ferry/dedup_window.hpp"
#include "ferry/error.hpp"

using namespace ferry;
using namespace std::chrono_literals;

TEST_CASE("dedup_window reports a repeated id once", "[dedup]") {
  dedup_window w;
  const auto id = message_id::generate();
  CHECK_FALSE(w.check_and_insert(id));
  CHECK(w.check_and_insert(id));
  CHECK(w.check_and_insert(id));
  CHECK(w.size() == 1);
}

TEST_CASE("dedup_window forgets the oldest ids past max_ids", "[dedup]") {
  dedup_window w({.max_ids = 1000, .max_age = 1h});
  std::vector<message_id> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back(message_id::generate());
  for (const auto& id : ids) REQUIRE_FALSE(w.check_and_insert(id));
  CHECK(w.size() == 1000);
  for (int i = 0; i < 2000; ++i) CHECK_FALSE(w.contains(ids[static_cast<std::size_t>(i)]));
  for (int i = 2000; i < 3000; ++i) CHECK(w.contains(ids[static_cast<std::size_t>(i)]));
  CHECK(w.memory_bytes() <= 1000 * 32 + 2048 * 8);  // 48 bytes per id at most
}

TEST_CASE("dedup_window forgets ids older than max_age", "[dedup]") {
  dedup_window w({.max_ids = 100, .max_age = 10s});
  const auto t0 = dedup_window::clock::time_point(std::chrono::hours(1000));
  const auto a = message_id::generate();
  const auto b = message_id::generate();
  CHECK_FALSE(w.check_and_insert(a, t0));
  CHECK_FALSE(w.check_and_insert(b, t0 + 6s));
  CHECK(w.contains(a, t0 + 9s));
  CHECK_FALSE(w.contains(a, t0 + 11s));
  CHECK(w.contains(b, t0 + 11s));
  CHECK_FALSE(w.check_and_insert(a, t0 + 12s));
  CHECK(w.size() == 2);
}

TEST_CASE("dedup_window stays correct under heavy churn (probe chains survive deletion)", "[dedup]") {
  dedup_window w({.max_ids = 4096, .max_age = 1h});
  std::vector<message_id> live;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 1000; ++i) {
      const auto id = message_id::generate();
      REQUIRE_FALSE(w.check_and_insert(id));
      live.push_back(id);
    }
    const std::size_t keep = std::min<std::size_t>(live.size(), 4096);
    for (std::size_t i = live.size() - keep; i < live.size(); ++i) REQUIRE(w.contains(live[i]));
  }
  CHECK(w.size() == 4096);
}

TEST_CASE("dedup_window rejects nonsense bounds", "[dedup]") {
  CHECK_THROWS_AS(dedup_window({.max_ids = 0, .max_age = 1s}), ferry::error);
  CHECK_THROWS_AS(dedup_window({.max_ids = 10, .max_age = 0s}), ferry::error);
}

TEST_CASE("dedup_window forgets an erased id and keeps the others", "[dedup]") {
  dedup_window w({.max_ids = 100, .max_age = 1h});
  std::vector<message_id> ids;
  for (int i = 0; i < 50; ++i) {
    ids.push_back(message_id::generate());
    REQUIRE_FALSE(w.check_and_insert(ids.back()));
  }
  CHECK(w.erase(ids[10]));
  CHECK_FALSE(w.erase(ids[10]));
  CHECK_FALSE(w.contains(ids[10]));
  for (int i = 0; i < 50; ++i)
    if (i != 10) CHECK(w.contains(ids[static_cast<std::size_t>(i)]));
  CHECK_FALSE(w.check_and_insert(ids[10]));  // it may come again
  // Eviction passes over the erased place without disturbing anything.
  for (int i = 0; i < 200; ++i) w.check_and_insert(message_id::generate());
  CHECK_FALSE(w.contains(ids[0]));
}

TEST_CASE("dedup_window hands back the value an id was first seen with", "[dedup]") {
  dedup_window w;
  const auto id = message_id::generate();
  std::uint64_t previous = 0;
  CHECK_FALSE(w.check_and_insert(id, dedup_window::clock::now(), 41, &previous));
  CHECK(previous == 0);
  CHECK(w.check_and_insert(id, dedup_window::clock::now(), 99, &previous));
  CHECK(previous == 41);
}

TEST_CASE("prefetch is only a hint: the answers of an empty, a filling and a full window do not change",
          "[dedup]") {
  dedup_window w({.max_ids = 64, .max_age = std::chrono::minutes(1)});
  std::vector<message_id> ids;
  for (int i = 0; i < 192; ++i) ids.push_back(message_id::generate());
  const auto now = dedup_window::clock::now();
  w.prefetch(ids.data(), ids.size());  // empty: no table yet
  for (std::size_t start = 0; start < ids.size(); start += 16) {
    w.prefetch(ids.data() + start, 16);
    for (std::size_t i = start; i < start + 16; ++i) CHECK_FALSE(w.check_and_insert(ids[i], now));
  }
  CHECK(w.size() == 64);  // full: the prefetch of evicted ids ran too
  w.prefetch(ids.data() + 128, 64);
  for (std::size_t i = 128; i < 192; ++i) CHECK(w.check_and_insert(ids[i], now));  // the newest 64 are known
  CHECK_FALSE(w.contains(ids[0], now));
}
