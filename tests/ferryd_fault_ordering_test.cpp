// Fault tests for ferryd: per-key order across three workers while one of them is killed.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "support/ferryd_fault_support.hpp"

using namespace std::chrono_literals;
using namespace ferry::test;

TEST_CASE("per-key order holds across three workers when one of them is killed mid-run", "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "600"});
  const std::vector<std::string> worker_flags{"--threads",  "2", "--prefetch",     "4",
                                              "--sleep-ms", "2", "--heartbeat-ms", "100"};
  std::vector<std::unique_ptr<child_process>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(start_worker(port, "keyed", worker_flags));
  std::vector<child_process*> all{ferryd.get()};
  for (auto& w : workers) all.push_back(w.get());

  const int total = 2000;
  auto producer = start_producer(port, "keyed", total, {"--key-mod", "10"});
  all.push_back(producer.get());
  std::vector<child_process*> worker_ptrs{workers[0].get(), workers[1].get(), workers[2].get()};
  REQUIRE(wait_for(
      [&] {
        return count_events(worker_ptrs, "handled") >= 500 && !events_of(*workers[1], "handled").empty();
      },
      30s, all));
  workers[1]->kill(SIGKILL);
  REQUIRE(wait_exit(*producer, 60s, all).value_or(-1) == 0);

  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  const bool empty = wait_for([&] { return depth_of(admin, "keyed") == 0; }, 60s, all);
  INFO("ferryd stderr:\n" << ferryd->err());
  REQUIRE(empty);

  // First handling of each message: its earliest "begin" on any worker (a redelivered one may begin twice).
  struct first_seen {
    std::int64_t t_ns;
    std::string key;
    long payload;
  };
  std::map<std::string, first_seen> first;
  std::set<long> handled_payloads;
  for (auto* w : worker_ptrs) {
    for (const auto& e : events_of(*w)) {
      if (e.kind == "handled") handled_payloads.insert(std::stol(e.payload));
      if (e.kind != "begin") continue;
      auto [it, fresh] = first.try_emplace(e.id, first_seen{e.t_ns, e.key, std::stol(e.payload)});
      if (!fresh && e.t_ns < it->second.t_ns) it->second.t_ns = e.t_ns;
    }
  }
  std::map<std::string, std::vector<first_seen>> by_key;
  for (const auto& [id, f] : first) by_key[f.key].push_back(f);
  CHECK(by_key.size() == 10);
  for (auto& [key, seq] : by_key) {
    std::sort(seq.begin(), seq.end(),
              [](const first_seen& a, const first_seen& b) { return a.t_ns < b.t_ns; });
    for (std::size_t i = 1; i < seq.size(); ++i) {
      INFO("key " << key << ": payload " << seq[i].payload << " first handled after payload "
                  << seq[i - 1].payload);
      REQUIRE(seq[i].payload > seq[i - 1].payload);
    }
  }
  CHECK(handled_payloads.size() == static_cast<std::size_t>(total));
  CHECK(contains(ferryd->err(), "silent for over 600 ms"));
}
