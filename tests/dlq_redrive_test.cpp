// Redriving dead letters: DLQ requests that select by reason and by seq range and go on from where the last
// stopped (ferryd in this process, through ferry::admin and raw frames), and `ferry dlq replay --rate`
// against a ferryd child: paced, interrupted by SIGINT and resumed with nothing moved twice.
//
// Handshakes: the move to the DLQ is waited for (its depth), never slept on. Paced runs are checked from
// below only (a slow machine makes them slower, never faster).

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <functional>
#include <msgpack.hpp>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "ferry/admin.hpp"
#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "support/cli_durable_support.hpp"
#include "support/ferryd_client.hpp"
#include "support/running_forwarder.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using ferry::test::queue_stats_of;
using ferry::test::raw_client;
using ferry::test::running_forwarder;
using namespace std::chrono_literals;

namespace {

std::string packed(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return {buf.data(), buf.size()};
}

// Stores "<prefix>0" ... "<prefix><n-1>" in `queue`, confirmed.
void store_numbered(context& ctx, const std::string& endpoint, const std::string& queue, int n,
                    const std::string& prefix) {
  producer p(ctx, endpoint);
  for (int i = 0; i < n; ++i) {
    message m(queue, prefix + std::to_string(i));
    REQUIRE(p.send(m) == send_status::ok);
  }
  REQUIRE(p.flush(10s));
}

// A worker that rejects everything of `queue` (the reason names the payload's parity), until `n` were
// rejected and their dead letters wait in the DLQ.
void dead_letter_all(context& ctx, const std::string& endpoint, const std::string& queue, std::uint64_t n) {
  {
    consumer worker(ctx, endpoint, queue, [](message& m) {
      const int i = std::stoi(std::string(m.payload().substr(m.payload().find_first_of("0123456789"))));
      throw reject_message(i % 2 == 0 ? "upstream timeout" : "bad input");
    });
    REQUIRE(test::wait_until([&] { return worker.stats().rejected == n; }, 30s));
  }
  admin a(ctx, endpoint);
  REQUIRE(test::wait_until([&] { return a.dlq_list(queue, 1).depth == n; }, 20s));
}

// The payloads a consumer of `queue` handles until `n` arrived and nothing more came for a moment.
std::multiset<std::string> consume_all(context& ctx, const std::string& endpoint, const std::string& queue,
                                       std::size_t n) {
  std::mutex mutex;
  std::multiset<std::string> seen;
  consumer c(ctx, endpoint, queue, [&](message& m) {
    std::lock_guard lock(mutex);
    seen.emplace(m.payload());
  });
  const auto count = [&] {
    std::lock_guard lock(mutex);
    return seen.size();
  };
  REQUIRE(test::wait_until([&] { return count() >= n; }, 30s));
  // A duplicate would follow its first copy closely: give it a moment to show.
  (void)test::wait_until([&] { return count() > n; }, 500ms);
  std::lock_guard lock(mutex);
  return seen;
}

}  // namespace

TEST_CASE("DLQ replay and purge take the dead letters a reason and a seq range select, step by step",
          "[forwarder][dlq][redrive]") {
  running_forwarder fwdr;
  context ctx;
  store_numbered(ctx, fwdr.endpoint, "jobs", 10, "m");
  dead_letter_all(ctx, fwdr.endpoint, "jobs", 10);
  admin a(ctx, fwdr.endpoint);

  const dlq_listing all = a.dlq_list("jobs", dlq_filter{.limit = 100});
  REQUIRE(all.messages.size() == 10);
  CHECK_FALSE(all.position.more);
  CHECK(all.position.next_seq == all.messages.back().seq + 1);

  // list with a reason: only the matching ones, oldest first.
  const dlq_listing timeouts = a.dlq_list("jobs", dlq_filter{.limit = 100, .reason = "timeout"});
  REQUIRE(timeouts.messages.size() == 5);
  for (const auto& d : timeouts.messages)
    CHECK(d.headers.at("ferry-dead-letter-reason") == "rejected by the handler: upstream timeout");
  CHECK(timeouts.depth == 10);

  // A replay of two timeouts stops there and says where to go on.
  const dlq_result first = a.dlq_replay("jobs", dlq_filter{.limit = 2, .reason = "timeout"});
  CHECK(first.done == 2);
  CHECK(first.position.more);
  CHECK(first.position.next_seq == timeouts.messages[1].seq + 1);
  CHECK(first.end_seq == all.messages.back().seq + 1);
  // Going on from there takes the other three and reaches the end.
  const dlq_result rest = a.dlq_replay(
      "jobs", dlq_filter{.limit = 100, .from_seq = first.position.next_seq, .reason = "timeout"});
  CHECK(rest.done == 3);
  CHECK_FALSE(rest.position.more);
  // None is left to match.
  CHECK(a.dlq_replay("jobs", dlq_filter{.limit = 100, .reason = "timeout"}).done == 0);

  // purge by seq range: the 2nd and 3rd "bad input" ones only.
  REQUIRE(test::wait_until([&] { return a.dlq_list("jobs", 100).depth == 5; }, 20s));
  const dlq_listing bad = a.dlq_list("jobs", dlq_filter{.limit = 100});
  REQUIRE(bad.messages.size() == 5);
  const dlq_result purged = a.dlq_purge(
      "jobs", dlq_filter{.limit = 100, .from_seq = bad.messages[1].seq, .before_seq = bad.messages[3].seq});
  CHECK(purged.done == 2);
  CHECK(purged.depth == 3);
  std::vector<std::string> left;
  for (const auto& d : a.dlq_list("jobs", 100).messages) left.push_back(d.payload);
  CHECK(left ==
        std::vector<std::string>{bad.messages[0].payload, bad.messages[3].payload, bad.messages[4].payload});

  // The five timeouts are back in jobs, once each.
  CHECK(consume_all(ctx, fwdr.endpoint, "jobs", 5) ==
        std::multiset<std::string>{"m0", "m2", "m4", "m6", "m8"});
}

TEST_CASE("two DLQ replays at once move each dead letter once", "[forwarder][dlq][redrive]") {
  ferryd::forwarder_options o;
  o.sync_delay = 300ms;  // the first replay's copies are still on their way when the second comes
  running_forwarder fwdr(o);
  context ctx;
  store_numbered(ctx, fwdr.endpoint, "jobs", 40, "m");
  dead_letter_all(ctx, fwdr.endpoint, "jobs", 40);
  // The second request comes while the first one's copies wait for their commit (sync_delay).
  raw_client one(fwdr.endpoint);
  raw_client two(fwdr.endpoint);
  const std::string options = packed([](auto& pk) {
    pk.pack_map(1);
    pk.pack("limit");
    pk.pack(100);
  });
  one.send({"DLQ", "jobs", "replay", options});
  two.send({"DLQ", "jobs", "replay", options});
  const auto replayed = [](const std::vector<std::string>& reply) -> std::uint64_t {
    INFO(test::show_frames(reply));
    REQUIRE(reply.size() == 2);
    REQUIRE(reply[0] == "DLQ");
    const auto oh = msgpack::unpack(reply[1].data(), reply[1].size());
    return oh.get().via.map.ptr[0].val.as<std::uint64_t>();
  };
  const std::uint64_t a = replayed(one.receive(10s));
  const std::uint64_t b = replayed(two.receive(10s));
  CHECK(a + b == 40);
  const auto seen = consume_all(ctx, fwdr.endpoint, "jobs", 40);
  CHECK(seen.size() == 40);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 40);
}

TEST_CASE("bad DLQ options are refused with bad_frames and change nothing", "[forwarder][dlq][redrive]") {
  running_forwarder fwdr;
  context ctx;
  store_numbered(ctx, fwdr.endpoint, "jobs", 2, "m");
  dead_letter_all(ctx, fwdr.endpoint, "jobs", 2);
  raw_client client(fwdr.endpoint);
  const auto option = [](const std::string& key, auto value) {
    return packed([&](auto& pk) {
      pk.pack_map(1);
      pk.pack(key);
      pk.pack(value);
    });
  };
  for (const std::string& bad :
       {option("reason", 7), option("reason", std::string(1025, 'x')), option("from", -1),
        option("before", "soon"), option("limit", 1.5), std::string("\x92\x01\x02")}) {
    client.send({"DLQ", "jobs", "purge", bad});
    const auto reply = client.receive(10s);
    INFO(test::show_frames(reply));
    REQUIRE(reply.size() == 3);
    CHECK(reply[0] == "ERROR");
    CHECK(reply[1] == "bad_frames");
  }
  admin a(ctx, fwdr.endpoint);
  CHECK(a.dlq_list("jobs", 10).depth == 2);
}

// ---- ferry dlq replay --rate --------------------------------------------------------------------------

TEST_CASE("cli: ferry dlq replay --rate paces the replay, and one stopped by SIGINT goes on where it stopped",
          "[cli][durable][dlq][redrive]") {
  test::cli::ferryd_child ferryd;
  const std::string& ep = ferryd.endpoint();
  context ctx;
  constexpr int total = 60;
  store_numbered(ctx, ep, "jobs", total, "m");
  dead_letter_all(ctx, ep, "jobs", total);

  // 20 at 20/s: the last step may go no earlier than about 0.9 s after the first.
  const auto started = std::chrono::steady_clock::now();
  const auto paced = test::cli::ferry_run(
      {"dlq", "replay", "--forwarder", ep, "--queue", "jobs", "--limit", "20", "--rate", "20/s"});
  const auto took = std::chrono::steady_clock::now() - started;
  INFO(paced.out << paced.err);
  REQUIRE(paced.code == 0);
  CHECK(paced.out == "20\n");
  CHECK(took >= 850ms);

  // --all at 10/s, stopped by SIGINT after a while: it says how many it moved, and exits 130.
  test::child_process run(test::cli::ferry_args(
      {"dlq", "replay", "--forwarder", ep, "--queue", "jobs", "--all", "--rate", "10/s"}));
  REQUIRE(run.wait_for_output("ferry: replayed", 20s));  // the first progress line, after a second
  run.kill(SIGINT);
  const auto code = run.wait(10s);
  INFO(run.out() << run.err());
  REQUIRE(code == 130);
  CHECK(test::cli::contains(run.err(), "stopped by SIGINT"));
  const int moved = std::stoi(run.out());
  CHECK(moved > 0);
  CHECK(moved < total - 20);

  // The rest, in one go; together every dead letter came back once.
  admin a(ctx, ep);
  REQUIRE(test::wait_until(
      [&] { return a.dlq_list("jobs", 1).depth == static_cast<std::uint64_t>(total - 20 - moved); }, 20s));
  const auto rest = test::cli::ferry_run({"dlq", "replay", "--forwarder", ep, "--queue", "jobs", "--all"});
  INFO(rest.out << rest.err);
  REQUIRE(rest.code == 0);
  CHECK(std::stoi(rest.out) == total - 20 - moved);

  const auto seen = consume_all(ctx, ep, "jobs", total);
  CHECK(seen.size() == static_cast<std::size_t>(total));
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == static_cast<std::size_t>(total));
}

TEST_CASE("cli: ferry dlq replay refuses a bad --rate and --limit with --all",
          "[cli][durable][dlq][redrive]") {
  for (const std::vector<std::string>& extra : {std::vector<std::string>{"--rate", "0"},
                                                {"--rate", "fast"},
                                                {"--rate", "10/min"},
                                                {"--all", "--limit", "5"},
                                                {"--reason", std::string(1025, 'r')}}) {
    std::vector<std::string> args{"dlq", "replay", "--forwarder", "tcp://127.0.0.1:1", "--queue", "jobs"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = test::cli::ferry_run(args);
    INFO(extra[0] << " " << extra.back() << ": " << r.err);
    CHECK(r.code == 2);
    CHECK(r.out.empty());
  }
}
