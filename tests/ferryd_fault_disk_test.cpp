// Fault tests for ferryd: a full disk (a 2 MiB tmpfs): ferryd refuses with disk_full, loses nothing it
// confirmed, accepts again when space returns, and starts again on a full disk so workers can drain it.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <string>

#include "support/ferryd_fault_support.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace ferry::test;

namespace {

// Fills the 2 MiB tmpfs at `data` under a running ferryd: about a segment of messages while there is room
// (so the next ones roll over into a new segment file), then a filler file leaving 128 KiB, then 600 more
// paced messages, which run out of space. Returns every id confirmed; checks the refusals.
std::map<std::string, std::string> fill_disk(const fs::path& data, int port, child_process& ferryd) {
  std::map<std::string, std::string> confirmed =
      produce_all(port, "full", 900, {"--payload-bytes", "1024"}, {&ferryd}).confirmed;
  {
    const std::uint64_t size = free_bytes(data) - 128 * 1024;
    std::ofstream out(data / "filler", std::ios::binary);
    const std::string chunk(64 * 1024, 'f');
    for (std::uint64_t done = 0; done < size; done += chunk.size())
      out.write(chunk.data(),
                static_cast<std::streamsize>(std::min<std::uint64_t>(chunk.size(), size - done)));
    out.close();
    REQUIRE(out.good());
  }
  // Paced, so batches are small and the ones that still fit are confirmed before the disk runs out.
  auto producer =
      start_producer(port, "full", 600, {"--start", "1000", "--payload-bytes", "1024", "--rate", "400"});
  const auto code = wait_exit(*producer, 60s, {&ferryd});
  const produced full = outcome_of(*producer);
  INFO("producer stderr:\n" << producer->err() << "\nferryd stderr:\n" << ferryd.err());
  CHECK(code.value_or(-1) == 1);  // some refused
  REQUIRE(ferryd.running());
  CHECK(full.confirmed.size() + full.refused_code.size() == 600);
  INFO(full.confirmed.size() << " confirmed and " << full.refused_code.size() << " refused on the full disk");
  CHECK(!full.confirmed.empty());
  REQUIRE(!full.refused_code.empty());
  std::map<std::string, int> codes;
  for (const auto& [id, c] : full.refused_code) ++codes[c];
  for (const auto& [c, n] : codes) {
    INFO(n << " refusals with code " << c);
    CHECK(c == "disk_full");
  }
  confirmed.insert(full.confirmed.begin(), full.confirmed.end());
  return confirmed;
}

}  // namespace

TEST_CASE(
    "ferryd on a full disk refuses with disk_full and loses nothing it confirmed and accepts again when "
    "space returns",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const fs::path data = dir.path() / "data";
  tmpfs_mount disk(data, "size=2m");  // outlives every child below: they are gone before it is unmounted
  INFO("tmpfs: " << (disk.mounted() ? "mounted" : disk.error()));
  REQUIRE(disk.mounted());
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(data, port, {"--min-free-mb", "0", "--segment-mb", "1"});
  std::map<std::string, std::string> confirmed = fill_disk(data, port, *ferryd);

  // Space returns: a probe is confirmed within a few seconds, then a whole batch goes through.
  fs::remove(data / "filler");
  raw_client probe(endpoint(port));
  std::string probe_id;
  const bool accepting = wait_for(
      [&] {
        ferry::message m("full", "probe");
        const auto reply = probe.exchange({"SEND", "full", envelope_of(m), "probe"});
        if (reply.empty() || reply[0] != "CONFIRM") return false;
        probe_id = m.id().to_hex();
        return true;
      },
      10s, {ferryd.get()});
  REQUIRE(accepting);
  confirmed[probe_id] = "probe";
  const produced after =
      produce_all(port, "full", 100, {"--start", "2000", "--payload-bytes", "1024"}, {ferryd.get()});
  confirmed.insert(after.confirmed.begin(), after.confirmed.end());

  const auto handled = drain(port, "full", {ferryd.get()});
  INFO("ferryd stderr:\n" << ferryd->err());
  check_each_handled_once(confirmed, handled);  // refused messages were not stored, so they must not show up
}

TEST_CASE("ferryd killed on a full disk starts again there and lets workers drain the backlog",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const fs::path data = dir.path() / "data";
  tmpfs_mount disk(data, "size=2m");
  INFO("tmpfs: " << (disk.mounted() ? "mounted" : disk.error()));
  REQUIRE(disk.mounted());
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--min-free-mb", "0", "--segment-mb", "1"};
  auto ferryd = start_ferryd(data, port, flags);
  const std::map<std::string, std::string> confirmed = fill_disk(data, port, *ferryd);
  ferryd->kill(SIGKILL);
  REQUIRE(ferryd->wait(10s).value_or(-1) == 128 + SIGKILL);

  // Still full: consumers draining the queue are what frees the space, so ferryd has to come up for them.
  INFO(free_bytes(data) << " bytes free in the data directory");
  ferryd = start_ferryd(data, port, flags);
  check_each_handled_once(confirmed, drain(port, "full", {ferryd.get()}));
}

TEST_CASE("the free-space reserve (--min-free-mb) holds against a burst: journals and acks always have room",
          "[ferryd][fault]") {
  // 70,000 messages of 1 KiB flat out into a 64 MiB disk with an 8 MiB reserve: once the reserve is
  // reached producers are refused, so the free space never drops far under it (the check is per message,
  // against what is about to be written) and the journal can still record every ack.
  ferry::test::temp_dir dir("ferryd-fault");
  const fs::path data = dir.path() / "data";
  tmpfs_mount disk(data, "size=64m");
  INFO("tmpfs: " << (disk.mounted() ? "mounted" : disk.error()));
  REQUIRE(disk.mounted());
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(data, port, {"--min-free-mb", "8", "--segment-mb", "4"});
  auto producer =
      start_producer(port, "burst", 70'000, {"--payload-bytes", "1024", "--max-in-flight", "20000"});
  std::uint64_t lowest = free_bytes(data);
  const bool done = wait_for(
      [&] {
        lowest = std::min(lowest, free_bytes(data));
        return !producer->running();
      },
      120s, {ferryd.get()});
  REQUIRE(done);
  const produced burst = outcome_of(*producer);
  INFO("ferryd stderr:\n" << ferryd->err() << "\nlowest free: " << lowest);
  REQUIRE(!burst.refused_code.empty());  // the disk could not take it all
  for (const auto& [id, code] : burst.refused_code) CHECK(code == "disk_full");
  CHECK(lowest >= 6ull << 20);  // the 8 MiB reserve, less what was already in flight to the disk
  CHECK_FALSE(contains(ferryd->err(), "No space left"));

  // Every confirmed message is there and can be consumed and acknowledged: the journal has room.
  const auto handled = drain(port, "burst", {ferryd.get()}, 60s);
  check_each_handled_once(burst.confirmed, handled);
  CHECK_FALSE(contains(ferryd->err(), "cannot write its journal"));
}
