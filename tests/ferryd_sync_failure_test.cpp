// Fault tests: ferryd whose disk starts failing fdatasync (EIO) while it runs. The failure is injected by
// an LD_PRELOAD shim (tests/helpers/fail_sync_preload.cpp) that makes fdatasync/fsync fail once a flag file
// exists. ferryd must stop without confirming anything the failed sync covered, in both fsync modes, and a
// restart on a working disk must still hold everything it confirmed before.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string ferryd_program = test::built_program("apps/ferryd/ferryd");
const std::string ferry_program = test::built_program("apps/ferry/ferry");

std::string lines(int first, int count) {
  std::string out;
  for (int i = first; i < first + count; ++i) out += "m" + std::to_string(i) + "\n";
  return out;
}

struct failing_disk_ferryd {
  test::temp_dir dir{"ferry-sync-failure"};
  fs::path data = dir.path() / "data";
  fs::path flag = dir.path() / "fail-now";
  std::string ep = test::free_tcp_endpoint();
  std::unique_ptr<test::child_process> ferryd;

  explicit failing_disk_ferryd(const std::vector<std::string>& flags) {
    fs::create_directories(data);
    std::vector<std::string> argv{ferryd_program, "--data-dir", data.string(), "--bind", ep};
    argv.insert(argv.end(), flags.begin(), flags.end());
    ferryd = std::make_unique<test::child_process>(
        argv,
        std::map<std::string, std::string>{{"LD_PRELOAD", FERRY_FAIL_SYNC_PRELOAD},
                                           {"FERRY_TEST_FAIL_SYNC_IF", flag.string()},
                                           // The shim precedes the sanitizer runtime in an ASan build.
                                           {"ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0"}});
    const bool ready = ferryd->wait_for_output("[ferry] ready", 20s);
    INFO("ferryd: " << ferryd->err());
    REQUIRE(ready);
  }
  void break_disk() { std::ofstream(flag) << "on"; }
};

test::run_result send(const std::string& ep, const std::string& input, int timeout_ms) {
  return test::run({ferry_program, "send", "--forwarder", ep, "--queue", "jobs", "--timeout-ms",
                    std::to_string(timeout_ms)},
                   input, 30s);
}

// Starts a plain ferryd on `data` and returns every payload of queue jobs it holds.
std::vector<std::string> stored_payloads(const fs::path& data, std::size_t at_least) {
  const std::string ep = test::free_tcp_endpoint();
  test::child_process ferryd({ferryd_program, "--data-dir", data.string(), "--bind", ep});
  REQUIRE(ferryd.wait_for_output("[ferry] ready", 20s));
  const auto r = test::run({ferry_program, "consume", "--forwarder", ep, "--queue", "jobs", "--count",
                            std::to_string(at_least), "--timeout-ms", "10000"},
                           "", 30s);
  INFO("consume: " << r.err << "\nferryd: " << ferryd.err());
  REQUIRE(r.code == 0);
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nl = r.out.find('\n'); nl != std::string::npos; nl = r.out.find('\n', start)) {
    out.push_back(r.out.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("ferryd stops without confirming when fdatasync fails, and keeps what it confirmed before",
          "[ferryd][fault]") {
  failing_disk_ferryd d({});
  const auto first = send(d.ep, lines(1, 20), 10'000);
  INFO("send: " << first.err << "\nferryd: " << d.ferryd->err());
  REQUIRE(first.code == 0);  // all 20 confirmed

  d.break_disk();
  const auto second = send(d.ep, lines(21, 5), 3'000);
  CHECK(second.code != 0);  // nothing of it may be confirmed
  const auto code = d.ferryd->wait(10s);
  INFO("ferryd: " << d.ferryd->err());
  REQUIRE(code);
  CHECK(*code == 1);
  CHECK(d.ferryd->err().find("fdatasync failed") != std::string::npos);

  const auto got = stored_payloads(d.data, 20);
  REQUIRE(got.size() == 20);
  for (int i = 0; i < 20; ++i) CHECK(got[static_cast<std::size_t>(i)] == "m" + std::to_string(i + 1));
}

TEST_CASE("ferryd with --fsync interval stops when a background sync fails", "[ferryd][fault]") {
  failing_disk_ferryd d({"--fsync", "interval", "--fsync-interval-ms", "50"});
  const auto first = send(d.ep, lines(1, 10), 10'000);
  INFO("send: " << first.err << "\nferryd: " << d.ferryd->err());
  REQUIRE(first.code == 0);
  REQUIRE(test::wait_until([&] { return d.ferryd->running(); }, 1s));  // its syncs still work

  d.break_disk();
  (void)send(d.ep, lines(11, 1), 3'000);  // written, then its background sync fails
  const auto code = d.ferryd->wait(10s);
  INFO("ferryd: " << d.ferryd->err());
  REQUIRE(code);
  CHECK(*code == 1);
  CHECK(d.ferryd->err().find("fdatasync failed") != std::string::npos);
}
