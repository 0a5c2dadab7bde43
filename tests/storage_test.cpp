#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "consumer_store.hpp"
#include "file_io.hpp"
#include "group_commit.hpp"
#include "journal.hpp"
#include "record.hpp"
#include "segment_log.hpp"
#include "segment_writer.hpp"
#include "seq_ranges.hpp"
#include "stream.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace ferry::storage;
namespace fs = std::filesystem;

namespace {

std::string records(std::uint64_t first, std::uint64_t count, std::size_t payload_size = 100) {
  std::string out;
  for (std::uint64_t s = first; s < first + count; ++s)
    append_message_record(out, s, 1'700'000'000'000'000 + static_cast<std::int64_t>(s),
                          message_id::generate(), s % 3, "env",
                          std::string(payload_size, static_cast<char>('a' + s % 26)));
  return out;
}

std::vector<std::uint64_t> recovered_seqs(const fs::path& dir, recovery_report& report) {
  segment_log log(dir);
  std::vector<std::uint64_t> seqs;
  log.recover(report, [&](const message_record& r, const record_location&) { seqs.push_back(r.seq); });
  return seqs;
}

std::uintmax_t size_of(const fs::path& p) {
  return fs::file_size(p);
}

void flip_byte(const fs::path& p, std::uintmax_t offset) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("a message record round-trips through its frame", "[storage]") {
  const auto id = message_id::generate();
  std::string buf;
  append_message_record(buf, 42, 123456, id, 99, "ENV", "payload bytes");
  REQUIRE(buf.size() == message_record_size(3, 13));
  std::string_view body;
  std::size_t total = 0;
  REQUIRE(check_frame(buf.data(), buf.size(), body, total) == frame_status::ok);
  CHECK(total == buf.size());
  const auto rec = parse_message(body);
  REQUIRE(rec);
  CHECK(rec->seq == 42);
  CHECK(rec->stored_at_us == 123456);
  CHECK(rec->id == id);
  CHECK(rec->key_hash == 99);
  CHECK(rec->envelope == "ENV");
  CHECK(rec->payload == "payload bytes");
  for (std::size_t cut = 0; cut < buf.size(); ++cut)
    CHECK(check_frame(buf.data(), cut, body, total) == frame_status::incomplete);
  buf[record_header_size + 20] ^= 1;
  CHECK(check_frame(buf.data(), buf.size(), body, total) == frame_status::bad);
}

TEST_CASE("key_hash is 0 only for no key", "[storage]") {
  CHECK(key_hash("") == 0);
  CHECK(key_hash("order-1") != 0);
  CHECK(key_hash("order-1") == key_hash("order-1"));
  CHECK(key_hash("order-1") != key_hash("order-2"));
}

TEST_CASE("scan_frames reports a torn tail and resynchronises after damage in the middle", "[storage]") {
  const std::string data = records(1, 10);
  std::vector<std::size_t> offsets;
  scan_frames(
      data.data(), data.size(),
      [&](std::string_view, std::size_t off, std::size_t) { offsets.push_back(off); },
      [](std::size_t, std::size_t) { FAIL("no damage expected"); });
  REQUIRE(offsets.size() == 10);

  SECTION("every cut inside the last record leaves the first nine") {
    for (std::size_t cut = offsets[9] + 1; cut < data.size(); ++cut) {
      int n = 0;
      const std::size_t end = scan_frames(
          data.data(), cut, [&](std::string_view, std::size_t, std::size_t) { ++n; },
          [](std::size_t, std::size_t) {});
      REQUIRE(n == 9);
      REQUIRE(end == offsets[9]);
    }
  }
  SECTION("a flipped byte in record 5 skips exactly that record") {
    std::string damaged = data;
    damaged[offsets[4] + record_header_size + 30] ^= 0x10;
    int n = 0;
    std::size_t bad_at = 0, bad_len = 0;
    const std::size_t end = scan_frames(
        damaged.data(), damaged.size(), [&](std::string_view, std::size_t, std::size_t) { ++n; },
        [&](std::size_t at, std::size_t len) {
          bad_at = at;
          bad_len = len;
        });
    CHECK(n == 9);
    CHECK(end == damaged.size());
    CHECK(bad_at == offsets[4]);
    CHECK(bad_len == offsets[5] - offsets[4]);
  }
  SECTION("a damaged length field is found too") {
    std::string damaged = data;
    damaged[offsets[2] + 5] ^= 0x7f;
    int n = 0;
    scan_frames(
        damaged.data(), damaged.size(), [&](std::string_view, std::size_t, std::size_t) { ++n; },
        [](std::size_t, std::size_t) {});
    CHECK(n == 9);
  }
}

TEST_CASE("segment_writer rolls segments and segment_log recovers them in order", "[storage]") {
  test::temp_dir dir;
  {
    segment_writer w(dir.path(), 4096);
    for (std::uint64_t batch = 0; batch < 5; ++batch) {
      const auto out = w.append(records(1 + batch * 20, 20));
      REQUIRE(out.error == 0);
      REQUIRE(out.durable_through == batch * 20 + 20);
    }
  }
  std::size_t segments = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) segments += e.path().extension() == ".seg";
  CHECK(segments == 5);  // 24 records of 167 bytes fit in 4096
  recovery_report report;
  const auto seqs = recovered_seqs(dir.path(), report);
  REQUIRE(seqs.size() == 100);
  for (std::size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == i + 1);
  CHECK(report.problems.empty());
  CHECK(report.truncated_bytes == 0);
}

TEST_CASE("recovery truncates a torn tail and reports damage in the middle", "[storage]") {
  test::temp_dir dir;
  {
    segment_writer w(dir.path(), 1 << 20);
    REQUIRE(w.append(records(1, 50)).error == 0);
  }
  const fs::path seg = dir.path() / segment_file_name(1);
  const auto full = size_of(seg);
  const std::size_t record_size = message_record_size(3, 100);

  SECTION("torn tail") {
    fs::resize_file(seg, full - 7);
    recovery_report report;
    const auto seqs = recovered_seqs(dir.path(), report);
    CHECK(seqs.size() == 49);
    CHECK(report.truncated_bytes == record_size - 7);
    CHECK(size_of(seg) == full - record_size);
    REQUIRE(report.problems.size() == 1);
    CHECK_THAT(report.problems[0], Catch::Contains("torn tail"));
    // A second recovery finds a clean file.
    recovery_report again;
    CHECK(recovered_seqs(dir.path(), again).size() == 49);
    CHECK(again.problems.empty());
  }
  SECTION("flipped byte in the middle") {
    flip_byte(seg, 10 * record_size + record_header_size + 40);
    recovery_report report;
    const auto seqs = recovered_seqs(dir.path(), report);
    CHECK(seqs.size() == 49);
    CHECK(std::find(seqs.begin(), seqs.end(), 11) == seqs.end());
    CHECK(report.corrupt_regions == 1);
    REQUIRE(report.problems.size() == 1);
    CHECK_THAT(report.problems[0], Catch::Contains("offset " + std::to_string(10 * record_size)));
    CHECK(size_of(seg) == full);  // damage in the middle is reported, not cut away
  }
}

TEST_CASE("journal replays its records and survives a rewrite", "[storage]") {
  test::temp_dir dir;
  const fs::path file = dir.path() / "journal";
  {
    journal j(file);
    recovery_report r;
    j.recover(r, [](const journal_record&) { FAIL("empty journal"); });
    j.append({record_type::attempts, 0, 2, 7});
    j.append({record_type::settle, static_cast<std::uint8_t>(settle_reason::acked), 0, 5});
    REQUIRE(j.flush() == 0);
  }
  std::vector<journal_record> seen;
  {
    journal j(file);
    recovery_report r;
    j.recover(r, [&](const journal_record& rec) { seen.push_back(rec); });
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].type == record_type::attempts);
    CHECK(seen[0].value == 2);
    CHECK(seen[0].seq == 7);
    CHECK(seen[1].type == record_type::settle);
    std::string snap;
    append_journal_record(snap, {record_type::watermark, 0, 0, 100});
    j.append({record_type::settle, 0, 0, 6});  // buffered, then superseded by the snapshot
    j.rewrite(snap);
    j.append({record_type::attempts, 0, 1, 101});
    REQUIRE(j.flush() == 0);
  }
  seen.clear();
  journal j(file);
  recovery_report r;
  j.recover(r, [&](const journal_record& rec) { seen.push_back(rec); });
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].type == record_type::watermark);
  CHECK(seen[0].seq == 100);
  CHECK(seen[1].seq == 101);
  CHECK_FALSE(fs::exists(file.string() + ".tmp"));
}

TEST_CASE("group_commit writes, syncs and reports each queue's batch", "[storage]") {
  test::temp_dir dir;
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  {
    group_commit gc(fsync_policy::always, std::chrono::milliseconds(10), fd);
    auto w1 = std::make_shared<segment_writer>(dir.path() / "a", 1 << 20);
    auto w2 = std::make_shared<segment_writer>(dir.path() / "b", 1 << 20);
    fs::create_directories(dir.path() / "a");
    fs::create_directories(dir.path() / "b");
    commit_batch batch;
    batch.number = 1;
    batch.appends.push_back({w1, 0, records(1, 10)});
    batch.appends.push_back({w2, 1, records(1, 3)});
    gc.submit(std::move(batch));
    CHECK(gc.busy());
    const auto result = gc.wait();
    REQUIRE(result);
    CHECK_FALSE(gc.busy());
    CHECK(result->sync_error == 0);
    REQUIRE(result->outcomes.size() == 2);
    CHECK(result->outcomes[0].second.durable_through == 10);
    CHECK(result->outcomes[1].second.durable_through == 3);
    CHECK(result->outcomes[0].second.new_segment);
  }
  ::close(fd);
  recovery_report report;
  CHECK(recovered_seqs(dir.path() / "a", report).size() == 10);
}

namespace {

// Makes every sync fail with EIO while it lives (storage::set_sync_hook), counting the attempts.
std::atomic<int> failed_syncs{0};
int failing_sync(int) {
  ++failed_syncs;
  return EIO;
}
struct failing_disk {
  failing_disk() {
    failed_syncs = 0;
    set_sync_hook(&failing_sync);
  }
  ~failing_disk() { set_sync_hook(nullptr); }
  failing_disk(const failing_disk&) = delete;
  failing_disk& operator=(const failing_disk&) = delete;
};

commit_result commit(group_commit& gc, std::shared_ptr<segment_writer> w, std::string bytes,
                     std::uint64_t number) {
  commit_batch batch;
  batch.number = number;
  batch.appends.push_back({std::move(w), 0, std::move(bytes)});
  gc.submit(std::move(batch));
  auto r = gc.wait();
  REQUIRE(r);
  return std::move(*r);
}

}  // namespace

TEST_CASE("a failed fdatasync of a batch is reported, never taken for success", "[storage]") {
  test::temp_dir dir;
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  group_commit gc(fsync_policy::always, std::chrono::milliseconds(10), fd);
  auto w = std::make_shared<segment_writer>(dir.path(), 1 << 20);
  CHECK(commit(gc, w, records(1, 5), 1).sync_error == 0);
  CHECK(gc.counters().syncs >= 1);
  {
    failing_disk disk;
    const auto r = commit(gc, w, records(6, 5), 2);
    CHECK(r.sync_error == EIO);
    CHECK(failed_syncs >= 1);
  }
  CHECK(gc.finish() == 0);
  ::close(fd);
}

TEST_CASE("a failed sync of a full segment before it is closed fails the batch that rolled it", "[storage]") {
  // Interval mode: the batch that fills a segment is not synced at once; the sync happens when the next
  // batch rolls to a new segment. That sync's result was once ignored.
  test::temp_dir dir;
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  group_commit gc(fsync_policy::interval, std::chrono::hours(1), fd);
  const std::size_t one = records(1, 1).size();
  auto w = std::make_shared<segment_writer>(dir.path(), 3 * one);
  CHECK(commit(gc, w, records(1, 3), 1).sync_error == 0);
  {
    failing_disk disk;
    const auto r = commit(gc, w, records(4, 2), 2);  // rolls: syncs and closes the first segment
    CHECK(r.sync_error == EIO);
    REQUIRE(r.outcomes.size() == 1);
    CHECK(r.outcomes[0].second.sync_error == EIO);
    CHECK(r.outcomes[0].second.durable_through == 0);  // nothing of this batch is called written
  }
  CHECK(gc.finish() == 0);  // before the writer closes its files
  ::close(fd);
}

TEST_CASE("with fsync interval a failed background sync is reported, and so is one at the end", "[storage]") {
  test::temp_dir dir;
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  SECTION("the interval's sync") {
    group_commit gc(fsync_policy::interval, std::chrono::milliseconds(20), fd);
    auto w = std::make_shared<segment_writer>(dir.path(), 1 << 20);
    CHECK(commit(gc, w, records(1, 5), 1).sync_error == 0);  // creates the segment (its directory synced)
    failing_disk disk;
    CHECK(commit(gc, w, records(6, 5), 2).sync_error == 0);  // written, not yet synced: confirmed
    REQUIRE(test::wait_until([&] { return gc.sync_failure() != 0; }, std::chrono::seconds(10)));
    CHECK(gc.sync_failure() == EIO);
    std::uint64_t n = 0;
    CHECK(::read(fd, &n, sizeof n) == static_cast<ssize_t>(sizeof n));  // the loop is woken to see it
    CHECK(gc.finish() == EIO);
  }
  SECTION("the last sync at stop") {
    group_commit gc(fsync_policy::interval, std::chrono::hours(1), fd);
    auto w = std::make_shared<segment_writer>(dir.path(), 1 << 20);
    CHECK(commit(gc, w, records(1, 5), 1).sync_error == 0);
    failing_disk disk;
    CHECK(gc.finish() == EIO);
    CHECK(failed_syncs >= 1);
  }
  ::close(fd);
}

TEST_CASE("create_directories_durably creates every missing parent", "[storage]") {
  test::temp_dir dir;
  const fs::path deep = dir.path() / "a" / "b" / "c";
  create_directories_durably(deep);
  CHECK(fs::is_directory(deep));
  create_directories_durably(deep);  // already there: nothing to do, no error
  failing_disk disk;
  CHECK_THROWS_WITH(create_directories_durably(dir.path() / "x" / "y"),
                    Catch::Contains("cannot fsync directory"));
}

// ---- recycled segments ---------------------------------------------------------------------------------

namespace {

// A segment file that lived before as segment 1 (records 1..60) and was renamed to be segment 101, with
// records 101..101+live-1 written over its start: the older records stay behind the live ones.
fs::path recycled_segment(const fs::path& dir, std::uint64_t live) {
  {
    segment_writer w(dir, 1 << 20);
    REQUIRE(w.append(records(1, 60)).error == 0);
  }
  fs::rename(dir / segment_file_name(1), dir / segment_file_name(101));
  segment_writer w(dir, 1 << 20);
  w.resume(101, 0);
  REQUIRE(w.append(records(101, live)).error == 0);
  return dir / segment_file_name(101);
}

}  // namespace

TEST_CASE("a recycled segment recovers its live records and leaves the older ones behind, unreported",
          "[storage][recycle]") {
  test::temp_dir dir;
  const fs::path seg = recycled_segment(dir.path(), 20);
  const auto size = size_of(seg);
  recovery_report report;
  const auto seqs = recovered_seqs(dir.path(), report);
  REQUIRE(seqs.size() == 20);
  for (std::size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == 101 + i);
  CHECK(report.problems.empty());
  CHECK(report.truncated_bytes == 0);
  CHECK(size_of(seg) == size);  // the space stays allocated for the next writes
}

TEST_CASE("a torn write in a recycled segment is truncated, and the stale bytes after it are not live",
          "[storage][recycle]") {
  test::temp_dir dir;
  const fs::path seg = recycled_segment(dir.path(), 20);
  const std::size_t record_size = message_record_size(3, 100);
  // The 20th live record is torn: its last bytes never reached the disk (they still hold the old file's).
  flip_byte(seg, 20 * record_size - 5);
  recovery_report report;
  const auto seqs = recovered_seqs(dir.path(), report);
  CHECK(seqs.size() == 19);
  CHECK(seqs.back() == 119);
  REQUIRE(report.problems.size() == 1);
  // A complete record that fails its checksum; with no checkpoint of the durable end it may be either.
  CHECK_THAT(report.problems[0],
             Catch::Contains("damaged tail") && Catch::Contains("a torn write, or corruption"));
  CHECK(report.corruption.empty());
  CHECK(size_of(seg) == 19 * record_size);
}

TEST_CASE("damage in the middle of a recycled segment is reported and the live records after it survive",
          "[storage][recycle]") {
  test::temp_dir dir;
  const fs::path seg = recycled_segment(dir.path(), 30);
  const std::size_t record_size = message_record_size(3, 100);
  flip_byte(seg, 10 * record_size + record_header_size + 40);
  recovery_report report;
  const auto seqs = recovered_seqs(dir.path(), report);
  CHECK(seqs.size() == 29);
  CHECK(std::find(seqs.begin(), seqs.end(), 111) == seqs.end());
  CHECK(seqs.back() == 130);
  CHECK(report.corrupt_regions == 1);
  REQUIRE(report.problems.size() == 1);  // the stale tail after record 130 is not a problem
}

TEST_CASE("a stream keeps settled segments as spares and writes new segments over them",
          "[storage][recycle]") {
  test::temp_dir dir;
  const fs::path qdir = dir.path() / "q";
  const std::size_t record_size = message_record_size(36, 100);
  stream_config config{.segment_bytes = 10 * record_size, .dedup_retain_bytes = 0, .spare_segments = 2};
  auto count_files = [&](const std::string& ext) {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(qdir)) n += e.path().extension() == ext;
    return n;
  };
  const std::string envelope(36, 'e');
  {
    stream s(qdir, config);
    auto write = [&](std::uint64_t n) {
      for (std::uint64_t i = 0; i < n; ++i)
        s.append(message_id::generate(), 0, envelope, std::string(100, 'p'), 1'700'000'000'000'000);
      s.committed(s.writer()->append(s.take_pending()));
    };
    write(40);  // segments 1, 11, 21, 31
    CHECK(count_files(".seg") == 4);
    s.remove_segments(1'800'000'000'000'000, [](const segment_info&) { return true; });  // all but the active
    CHECK(count_files(".seg") == 1);
    CHECK(count_files(".spare") == 2);  // two kept, the third deleted
    CHECK(s.spares() == 2);
    write(20);  // segments 41 and 51 reuse the spares
    CHECK(count_files(".spare") == 0);
    CHECK(count_files(".seg") == 3);
  }
  // Recovery sees exactly what was written, in order, across reused files.
  recovery_report report;
  const auto seqs = recovered_seqs(qdir, report);
  REQUIRE(seqs.size() == 30);
  for (std::size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == 31 + i);
  CHECK(report.problems.empty());
}

// ---- torn writes and corruption at the end -----------------------------------------------------------

TEST_CASE("a record's stored time from disk never overflows an age, whatever its value", "[storage]") {
  // Found by fuzz/storage_fuzz.cpp: recovery subtracted a record's stored_at_us from the clock (signed
  // overflow, undefined, for a time far in the past or the future) to place its id in the dedup window.
  constexpr std::int64_t now = 1'700'000'000'000'000;
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  CHECK(stored_age_us(now, now - 5) == 5);
  CHECK(stored_age_us(now, now + 5) == 0);  // the clock was set back since
  CHECK(stored_age_us(now, max) == 0);
  CHECK(stored_age_us(now, min) == max);
  CHECK(stored_age_us(-now, max) == 0);

  test::temp_dir dir;
  const fs::path qdir = dir.path() / "q";
  fs::create_directories(qdir);
  const message_id ancient = message_id::generate(), future = message_id::generate(),
                   recent = message_id::generate();
  std::string bytes;
  append_message_record(bytes, 1, min, ancient, 0, "env", "a");
  append_message_record(bytes, 2, max, future, 0, "env", "f");
  append_message_record(bytes, 3, now - 1'000'000, recent, 0, "env", "r");
  std::ofstream(qdir / segment_file_name(1), std::ios::binary) << bytes;
  stream s(qdir, {});
  recovery_report report;
  std::size_t n = 0;
  s.recover(report, now, [&](const message_record&, const record_location&) { ++n; });
  CHECK(n == 3);
  const auto at = stream::clock::now();
  CHECK(!s.seen(ancient, at));  // older than the window
  CHECK(s.seen(future, at));    // counts as stored now
  CHECK(s.seen(recent, at));
}

TEST_CASE(
    "damage at the end of a log is corruption before its checkpointed durable end, a torn write after it",
    "[storage][checkpoint]") {
  test::temp_dir dir;
  const fs::path qdir = dir.path() / "q";
  const std::size_t record_size = message_record_size(36, 100);
  const std::string envelope(36, 'e');
  auto write = [&](stream& s, std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i)
      s.append(message_id::generate(), 0, envelope, std::string(100, 'p'), 1'700'000'000'000'000);
    s.committed(s.writer()->append(s.take_pending()));
  };
  {
    stream s(qdir, {});
    write(s, 20);
    CHECK(s.checkpoint() >= 0);  // the end moved: written, to be synced by the caller
    CHECK(s.checkpoint() < 0);   // nothing new
    write(s, 5);                 // 5 more, after the checkpoint
  }
  const fs::path seg = qdir / segment_file_name(1);
  auto recover = [&](recovery_report& report) {
    stream s(qdir, {});
    std::size_t n = 0;
    s.recover(report, 1'700'000'000'000'000, [&](const message_record&, const record_location&) { ++n; });
    return n;
  };
  SECTION("a flipped byte in a record before the checkpoint: corruption of confirmed data") {
    flip_byte(seg, 19 * record_size + record_header_size + 50);  // the 20th record, and nothing live after?
    // Records 21..25 follow it: damage in the middle, reported and skipped as before.
    recovery_report report;
    CHECK(recover(report) == 24);
    CHECK(report.corrupt_regions == 1);
  }
  SECTION("the last five records lost after the checkpoint's 20: damaged tail, not corruption") {
    flip_byte(seg, 20 * record_size + record_header_size + 50);  // record 21; 22..25 come after it
    fs::resize_file(seg, 21 * record_size);                      // and they are gone
    recovery_report report;
    CHECK(recover(report) == 20);
    CHECK(report.corruption.empty());
    REQUIRE(report.problems.size() == 1);
    CHECK_THAT(report.problems[0], Catch::Contains("after the log's last durable point"));
  }
  SECTION("the last record cut short: a torn tail") {
    fs::resize_file(seg, 25 * record_size - 3);
    recovery_report report;
    CHECK(recover(report) == 24);
    CHECK(report.corruption.empty());
    REQUIRE(report.problems.size() == 1);
    CHECK_THAT(report.problems[0], Catch::Contains("torn tail"));
  }
  SECTION("a record the checkpoint covers fails its checksum at the end: corruption, never called torn") {
    fs::resize_file(seg, 20 * record_size);                      // as after a clean stop at 20
    flip_byte(seg, 19 * record_size + record_header_size + 50);  // bit rot in the last one
    recovery_report report;
    CHECK(recover(report) == 19);
    REQUIRE(report.corruption.size() == 1);
    CHECK_THAT(report.corruption[0],
               Catch::Contains("CORRUPTION") && Catch::Contains("durable up to offset"));
    CHECK(report.lost_durable_bytes == record_size);
  }
}

TEST_CASE(
    "a subscription's store counts from its start, and a message retention skipped is not settled twice",
    "[storage]") {
  test::temp_dir dir;
  std::map<std::uint64_t, storage::segment_info> segments;
  segments[1] = {.base = 1, .committed = 1000, .records = 10, .last_seq = 10};
  segments[11] = {.base = 11, .committed = 1000, .records = 10, .last_seq = 20};
  {
    storage::consumer_store store(dir.path() / "sub.journal");
    store.start_at(5, segments);  // 5..20 are its messages
    CHECK(store.unsettled() == 16);
    CHECK(store.unsettled_in(1) == 6);
    CHECK(store.low_watermark() == 5);
    store.stored(21, 5, 25);  // a later batch
    CHECK(store.unsettled() == 21);
    // Retention deletes segment 1: its 6 unsettled messages are skipped, once.
    CHECK(store.skip_before(1, 11) == 6);
    CHECK(store.unsettled() == 15);
    store.settle(7, 1, storage::settle_reason::dead_lettered);  // a move that finished after the skip
    CHECK(store.unsettled() == 15);
    store.settle(12, 11, storage::settle_reason::acked);
    CHECK(store.unsettled() == 14);
    REQUIRE(store.file().flush() == 0);
  }
  // After a restart the start is kept; the skip's watermark and the settled 12 say the log reached 12.
  storage::consumer_store again(dir.path() / "sub.journal");
  storage::recovery_report report;
  again.replay(report);
  CHECK(again.finish_recovery(3) == 13);
  CHECK(again.start() == 5);

  // A start past the log's end alone does not move the log's next sequence number.
  {
    storage::consumer_store ahead(dir.path() / "ahead.journal");
    ahead.start_at(50, {});
    REQUIRE(ahead.file().flush() == 0);
  }
  storage::consumer_store ahead(dir.path() / "ahead.journal");
  ahead.replay(report);
  CHECK(ahead.finish_recovery(3) == 3);
  CHECK(ahead.start() == 50);
  CHECK(ahead.low_watermark() == 50);
}

TEST_CASE("seq_ranges merges what touches and advances a watermark over a run", "[storage]") {
  seq_ranges r;
  r.insert(10);
  r.insert(12);
  CHECK(r.ranges() == 2);
  r.insert(11);  // joins both
  CHECK(r.ranges() == 1);
  CHECK(r.contains(10));
  CHECK(r.contains(12));
  CHECK_FALSE(r.contains(13));
  CHECK_FALSE(r.contains(9));
  r.insert(20, 30);
  r.insert(5, 25);  // swallows [10,13) and reaches into [20,30)
  CHECK(r.ranges() == 1);
  CHECK(r.lowest() == 5);
  CHECK(r.end() == 30);
  r.insert(40, 50);
  r.erase_below(27);
  CHECK(r.lowest() == 27);
  CHECK_FALSE(r.contains(26));
  CHECK(r.advance(26) == 26);  // 26 is not in it: the watermark stays
  CHECK(r.advance(27) == 30);  // the run 27..29 goes
  CHECK(r.ranges() == 1);
  r.insert(7, 7);  // empty: nothing
  CHECK(r.ranges() == 1);
  r.erase_below(1000);
  CHECK(r.empty());
}

TEST_CASE("a huge gap in a recovered stream settles as one run, and a compacted journal keeps its runs",
          "[storage]") {
  test::temp_dir dir;
  const fs::path journal_file = dir.path() / "journal";
  const std::uint64_t far = 1'000'000'000'000;  // the next record's seq after damage, say
  {
    consumer_store store(journal_file);
    recovery_report report;
    store.replay(report);
    auto recover = [&](std::uint64_t seq, std::uint64_t segment) {
      message_record rec;
      rec.seq = seq;
      return store.recovered(rec, {.segment = segment, .offset = 0, .size = 0});
    };
    CHECK(recover(1, 1));
    CHECK(recover(2, 1));
    CHECK(recover(far, far));  // 3 .. far-1 are missing: one run, not a trillion entries
    CHECK(recover(far + 1, far));
    CHECK(store.finish_recovery(far + 2) == far + 2);
    CHECK(store.unsettled() == 4);
    CHECK(store.low_watermark() == 1);
    CHECK_FALSE(store.settled(2));
    CHECK(store.settled(3));
    CHECK(store.settled(far - 1));
    CHECK_FALSE(store.settled(far));
    // Settle 2 and far+1 (out of order), and then 1: the watermark runs over the gap to far.
    store.settle(2, 1, settle_reason::acked);
    store.settle(far + 1, far, settle_reason::acked);
    CHECK(store.low_watermark() == 1);
    store.settle(1, 1, settle_reason::acked);
    CHECK(store.low_watermark() == far);
    CHECK(store.unsettled() == 1);
    CHECK_FALSE(store.settled(far));
    CHECK(store.settled(far + 1));
    REQUIRE(store.file().flush() == 0);
  }
  {
    // Many out-of-order settlements above an unsettled message, then a compaction: the run of them is one
    // record, and a restart reads it back as every one of them.
    consumer_store store(journal_file);
    recovery_report report;
    store.replay(report);
    message_record rec;
    for (std::uint64_t seq = far; seq < far + 1000; ++seq) {
      rec.seq = seq;
      store.recovered(rec, {.segment = far, .offset = 0, .size = 0});
    }
    CHECK(store.finish_recovery(far + 1000) == far + 1000);
    CHECK(store.unsettled() == 999);  // far, and far+2 .. far+999 (far+1 was settled before)
    for (std::uint64_t seq = far + 2; seq < far + 1000; ++seq) store.settle(seq, far, settle_reason::acked);
    CHECK(store.low_watermark() == far);
    REQUIRE(store.file().flush() == 0);
    const auto before = store.file().file_bytes();
    store.compact(0, [](const auto&) {});
    CHECK(store.file().file_bytes() < before / 10);
  }
  consumer_store again(journal_file);
  recovery_report report;
  again.replay(report);
  message_record rec;
  for (std::uint64_t seq = far; seq < far + 1000; ++seq) {
    rec.seq = seq;
    CHECK(again.recovered(rec, {.segment = far, .offset = 0, .size = 0}) == (seq == far));
  }
  CHECK(again.finish_recovery(far + 1000) == far + 1000);
  CHECK(again.unsettled() == 1);
  CHECK(again.low_watermark() == far);
  CHECK(again.settled(far + 999));
}

TEST_CASE("a record naming a seq past the seq space is damage, and the next seq still follows the log",
          "[storage]") {
  // Found by fuzz/storage_fuzz.cpp: a checksummed record with seq 2^64-1 made the stream's next seq wrap
  // to 0, so the next message stored would have reused seq 1 (and a journal run could end past 2^64).
  auto body_with_seq = [](std::uint64_t seq) {
    std::string b;
    append_message_record(b, seq, 0, message_id::generate(), 0, "e", "p");
    return b.substr(record_header_size);
  };
  CHECK(parse_message(body_with_seq(max_seq)));
  CHECK_FALSE(parse_message(body_with_seq(max_seq + 1)));
  CHECK_FALSE(parse_message(body_with_seq(UINT64_MAX)));
  CHECK_FALSE(parse_message(body_with_seq(0)));
  test::temp_dir dir;
  const fs::path qdir = dir.path() / "q";
  fs::create_directories(qdir);
  std::string bytes;
  // As the last records of the last segment (where the fuzzer put it): not live, so not recovered.
  append_message_record(bytes, 1, 0, message_id::generate(), 0, "env", "a");
  append_message_record(bytes, 2, 0, message_id::generate(), 0, "env", "b");
  append_message_record(bytes, UINT64_MAX, 0, message_id::generate(), 0, "env", "bad");
  std::ofstream(qdir / segment_file_name(1), std::ios::binary) << bytes;
  std::string journal;
  append_journal_record(journal,
                        {.type = record_type::settle, .value = 3, .seq = max_seq - 3});  // ends at 2^62
  append_journal_record(journal, {.type = record_type::settle, .value = 4, .seq = max_seq - 3});  // past it
  append_journal_record(journal, {.type = record_type::settle, .value = 0, .seq = UINT64_MAX});
  std::ofstream(qdir / "journal", std::ios::binary) << journal;

  consumer_store store(qdir / "journal");
  recovery_report journal_report, report;
  store.replay(journal_report);
  CHECK(journal_report.problems.size() == 2);
  stream s(qdir, {});
  std::vector<std::uint64_t> seqs;
  s.recover(report, 0, [&](const message_record& rec, const record_location& where) {
    seqs.push_back(rec.seq);
    (void)store.recovered(rec, where);
  });
  CHECK(seqs == std::vector<std::uint64_t>{1, 2});
  CHECK(s.next_seq() == 3);
  s.continue_at(store.finish_recovery(s.next_seq()));
  CHECK(s.next_seq() == max_seq + 1);  // after the valid run that ends at 2^62, and no wrap
  CHECK(store.settled(max_seq));
}
