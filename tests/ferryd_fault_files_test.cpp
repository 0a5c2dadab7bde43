// Fault tests for ferryd: damaged segment files: a torn tail of the last segment is truncated, a damaged
// record in the middle is skipped and reported, and every other record is delivered.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/ferryd_fault_support.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace ferry::test;

namespace {

struct stored_queue {
  std::map<std::string, std::string> confirmed;  // id -> payload
  fs::path segment;                              // the last segment file
  std::string bytes;                             // its contents
  std::vector<record_span> records;
};

// A clean run: `count` messages stored in `queue`, ferryd stopped; returns the last segment as written.
stored_queue clean_run(const fs::path& data_dir, int port, const std::string& queue, int count) {
  auto ferryd = start_ferryd(data_dir, port);
  stored_queue s;
  s.confirmed = produce_all(port, queue, count, {"--payload-bytes", "64"}, {ferryd.get()}).confirmed;
  ferryd->kill(SIGTERM);
  if (!ferryd->wait(15s)) ferryd->kill(SIGKILL);
  (void)ferryd->wait(10s);
  s.segment = last_segment(data_dir / "queues" / queue);
  s.bytes = read_file(s.segment);
  s.records = records_of(s.bytes);
  REQUIRE(s.records.size() == static_cast<std::size_t>(count));
  REQUIRE(s.records.back().offset + s.records.back().size == s.bytes.size());
  return s;
}

}  // namespace

TEST_CASE("ferryd truncates a torn tail of the last segment and delivers every record before it",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const fs::path pristine = dir.path() / "pristine";
  fs::create_directories(pristine);
  const stored_queue s = clean_run(pristine, port, "torn", 40);
  const record_span last = s.records.back();
  std::map<std::string, std::string> kept = s.confirmed;
  REQUIRE(kept.erase(record_id(s.bytes, last)) == 1);

  // Cut 1 byte, half the record, all but its header, into the header, and the whole record.
  for (const std::uint64_t cut :
       {std::uint64_t{1}, last.size / 2, last.size - 16, last.size - 10, last.size}) {
    INFO("cut " << cut << " of the last record's " << last.size << " bytes");
    const fs::path copy = dir.path() / ("cut-" + std::to_string(cut));
    fs::copy(pristine, copy, fs::copy_options::recursive);
    const fs::path segment = copy / "queues" / "torn" / s.segment.filename();
    fs::resize_file(segment, s.bytes.size() - cut);
    // A torn write happens in a crash, before the checkpoint of the durable end reached the last record:
    // the checkpoint written at the clean stop goes too.
    fs::remove(copy / "queues" / "torn" / "log_end");

    auto ferryd = start_ferryd(copy, port);
    if (cut < last.size) {
      INFO("ferryd stderr:\n" << ferryd->err());
      CHECK(contains(ferryd->err(), segment.filename().string() + ": torn tail of " +
                                        std::to_string(last.size - cut) + " bytes at offset " +
                                        std::to_string(last.offset)));
      CHECK(contains(ferryd->err(), "never confirmed); truncated"));
      CHECK_FALSE(contains(ferryd->err(), "CORRUPTION"));
    }
    CHECK(fs::file_size(segment) == last.offset);

    auto worker = start_worker(port, "torn", {"--no-dedup"});
    ferry::context ctx;
    ferry::admin admin(ctx, endpoint(port));
    // A message sent after the repair lands after the last intact record and is delivered too.
    const produced after = produce_all(port, "torn", 1, {"--start", "1000"}, {ferryd.get(), worker.get()});
    std::map<std::string, std::string> expected = kept;
    expected.insert(after.confirmed.begin(), after.confirmed.end());
    const bool empty =
        wait_for([&] { return depth_of(admin, "torn") == 0; }, 20s, {ferryd.get(), worker.get()});
    INFO("ferryd stderr:\n" << ferryd->err());
    CHECK(empty);
    check_each_handled_once(expected, events_of(*worker, "handled"));
  }
}

TEST_CASE("bit rot in the last record of a cleanly stopped ferryd is reported as corruption, not a torn tail",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const stored_queue s = clean_run(dir.path(), port, "rot", 40);
  const record_span last = s.records.back();
  std::string bytes = s.bytes;
  bytes[last.offset + last.size - 3] ^= 0x01;  // one bit of the last record's payload
  write_file(s.segment, bytes);

  auto ferryd = start_ferryd(dir.path(), port);
  INFO("ferryd stderr:\n" << ferryd->err());
  // The clean stop checkpointed the log's durable end past that record: it was confirmed, no crash tore it.
  CHECK(contains(ferryd->err(), "error [ferry] queue rot: "));
  CHECK(contains(ferryd->err(), "CORRUPTION: the record at offset " + std::to_string(last.offset) +
                                    " fails its checksum although the log was durable up to offset " +
                                    std::to_string(s.bytes.size())));
  CHECK_FALSE(contains(ferryd->err(), "torn tail"));
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  CHECK(depth_of(admin, "rot") == 39);
}

TEST_CASE(
    "ferryd skips a damaged record in the middle of a segment and says where and delivers all the others",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const stored_queue s = clean_run(dir.path(), port, "damaged", 40);
  const record_span victim = s.records[20];
  std::map<std::string, std::string> kept = s.confirmed;
  REQUIRE(kept.erase(record_id(s.bytes, victim)) == 1);
  // A flipped bit in the payload fails the checksum; in the magic it is no frame; in the length it claims
  // megabytes the file does not have.
  const std::string where = GENERATE(std::string("payload"), std::string("magic"), std::string("length"));
  INFO("byte flipped in the " << where << " of the record at offset " << victim.offset);
  const std::uint64_t at = where == "payload" ? victim.offset + victim.size - 3
                           : where == "magic" ? victim.offset + 1
                                              : victim.offset + 6;
  std::string bytes = s.bytes;
  bytes[at] ^= 0x5a;
  write_file(s.segment, bytes);

  auto ferryd = start_ferryd(dir.path(), port);
  {
    INFO("ferryd stderr:\n" << ferryd->err());
    CHECK(contains(ferryd->err(), s.segment.filename().string() + ": " + std::to_string(victim.size) +
                                      " damaged bytes at offset " + std::to_string(victim.offset) +
                                      " skipped"));
    CHECK(contains(ferryd->err(), "1 damaged region(s) skipped"));
  }
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  CHECK(depth_of(admin, "damaged") == 39);
  // Messages stored after the repair, behind the damaged region in the same segment, are delivered too.
  const produced after = produce_all(port, "damaged", 5, {"--start", "1000"}, {ferryd.get()});
  kept.insert(after.confirmed.begin(), after.confirmed.end());
  const auto handled = drain(port, "damaged", {ferryd.get()}, 10s);
  INFO("ferryd stderr:\n" << ferryd->err());
  check_each_handled_once(kept, handled);
}
