// The ferryd program the durable commands of the `ferry` tool talk to, run as a child process: SIGHUP, the
// defaults its --help shows against docs/operations.md, the docs starting it on a directory they create,
// and its TOML --config file and that file's errors. The commands themselves are in cli_durable_test.cpp
// and cli_durable_admin_test.cpp.

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "support/cli_durable_support.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace ferry::test::cli;
using namespace std::chrono_literals;

TEST_CASE("cli durable: ferryd logs SIGHUP, ignores it and keeps serving", "[cli][durable]") {
  ferryd_child ferryd;
  ferryd.process().kill(SIGHUP);
  REQUIRE(ferryd.process().wait_for_output("received SIGHUP: nothing to reload", 10s));
  CHECK(ferryd.process().running());
  CHECK(ferry_run({"send", "--forwarder", ferryd.endpoint(), "--queue", "jobs"}, "after\n").code == 0);
  ferryd.process().kill(SIGTERM);
  CHECK(ferryd.process().wait(10s) == 0);
}

TEST_CASE("cli durable: ferryd --help shows the defaults docs/operations.md lists for its flags",
          "[cli][durable]") {
  const auto help = test::run({test::built_program("apps/ferryd/ferryd"), "--help"});
  REQUIRE(help.code == 0);
  std::ifstream doc(std::string(FERRY_SOURCE_DIR) + "/docs/operations.md");
  REQUIRE(doc);
  int rows = 0;
  for (std::string line; std::getline(doc, line);) {
    // | `--lease-ms MS` | `30000` | ...      (a default that is not a plain value is skipped)
    if (line.rfind("| `--", 0) != 0) continue;
    const auto name_end = line.find_first_of(" `", 3);
    const std::string flag = line.substr(3, name_end - 3);
    const auto flag_cell_end = line.find("` |", 3);  // the flag's cell may hold "\|"
    if (flag_cell_end == std::string::npos || line.compare(flag_cell_end, 5, "` | `") != 0) continue;
    const auto cell = flag_cell_end + 5;
    const std::string value = line.substr(cell, line.find('`', cell) - cell);
    if (value.empty() || value[0] == '$') continue;
    INFO(flag << " defaults to " << value << " in docs/operations.md; ferryd --help:\n" << help.out);
    const auto at = help.out.find("  " + flag + " ");
    REQUIRE(at != std::string::npos);
    const std::string shown = help.out.substr(at, help.out.find('\n', at) - at);
    CHECK(contains(shown, "=" + value));
    ++rows;
  }
  CHECK(rows >= 15);
}

TEST_CASE("cli durable: the README and operations.md start ferryd on one directory that they create",
          "[cli][durable]") {
  // ferryd exits 3 on a missing --data-dir: every shell line that starts it must follow a mkdir -p of it.
  std::set<std::string> dirs;
  for (const std::string doc : {"README.md", "docs/operations.md"}) {
    std::ifstream in(std::string(FERRY_SOURCE_DIR) + "/" + doc);
    REQUIRE(in);
    std::set<std::string> made;
    int started = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("mkdir -p ", 0) == 0) made.insert(line.substr(9, line.find(' ', 9) - 9));
      if (line.rfind("ferryd --data-dir ", 0) != 0) continue;
      const std::string dir = line.substr(18, line.find(' ', 18) - 18);
      INFO(doc << ": " << line);
      CHECK(made.count(dir) == 1);
      dirs.insert(dir);
      ++started;
    }
    CHECK(started >= 1);
  }
  CHECK(dirs.size() == 1);  // the same path in both
  // The durable example the README points to exists.
  CHECK(std::filesystem::exists(std::string(FERRY_SOURCE_DIR) + "/examples/jobs.cpp"));
}

TEST_CASE("cli durable: ferryd takes its options from a TOML --config file", "[cli][durable]") {
  // The example of docs/operations.md, with a port and a directory of this test's own.
  test::temp_dir dir;
  const std::string endpoint = test::free_tcp_endpoint();
  {
    std::ofstream config(dir / "ferryd.toml");
    config << "# ferryd.toml\n"
           << "data-dir = \"" << dir.path().string() << "\"\n"
           << "bind = [\"" << endpoint << "\"]\n"
           << "fsync = \"always\"\n"
           << "max-message-bytes = 100\n"
           << "max-attempts = 3\n"
           << "lease-ms = 30000\n"
           << "min-free-mb = 1\n"
           << "log-level = \"info\"\n";
  }
  ferryd_child ferryd({"--config", dir / "ferryd.toml"}, endpoint);
  CHECK(contains(ferryd.log(), "listening on " + endpoint));
  CHECK(contains(ferryd.log(), "data dir " + dir.path().string()));

  const auto send = ferry_run({"send", "--forwarder", endpoint, "--queue", "jobs"},
                              "small\n" + std::string(101, 'x') + "\n");
  CHECK(send.code == 1);
  CHECK(contains(send.err, "refused: too_large: payload of 101 bytes is over the limit of 100 bytes"));
  CHECK(std::filesystem::exists(dir.path() / "queues" / "jobs"));
}

TEST_CASE("cli durable: ferryd's config file errors name the key, the line and what is accepted",
          "[cli][durable]") {
  test::temp_dir dir;
  const std::string path = dir / "ferryd.toml";
  const auto [body, expected] = GENERATE(table<std::string, std::string>({
      {"lease-msec = 100\n",
       "line 3: unknown key 'lease-msec' (did you mean 'lease-ms'?); the keys are the flag names without "
       "'--': data-dir, bind, feed, fsync, "},
      {"lease_ms = 100\n", "line 3: unknown key 'lease_ms' (did you mean 'lease-ms'?)"},
      {"[extra]\nlease-ms = 100\n",
       "line 3: section [extra] is not accepted: ferryd's config file has no sections; write every key at "
       "the top level as key = value"},
      {"lease-ms = 5\n", "line 3: lease-ms = 5: Value 5 not in range 100 to 86400000"},
      {"fsync = \"sometimes\"\n", "line 3: fsync = \"sometimes\": sometimes not in {always,interval}"},
  }));
  {
    std::ofstream config(path);
    config << "# ferryd.toml\n"
           << "data-dir = \"" << dir.path().string() << "\"\n"
           << body;
  }
  const auto r = test::run({test::built_program("apps/ferryd/ferryd"), "--config", path});
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(contains(r.err, "ferryd: --config " + path + " " + expected));
}

TEST_CASE("cli durable: ferryd --check-config prints the effective settings, flags winning, or the error",
          "[cli][durable]") {
  test::temp_dir dir;
  const std::string path = dir / "ferryd.toml";
  {
    std::ofstream config(path);
    config << "data-dir = \"" << dir.path().string() << "\"\n"
           << "lease-ms = 45000\n"
           << "message-ttl-ms = 60000\n"
           << "max-attempts = 3\n";
  }
  const std::string ferryd = test::built_program("apps/ferryd/ferryd");
  const auto good = test::run({ferryd, "--check-config", path, "--max-attempts", "7"});
  INFO("stdout: " << good.out << "\nstderr: " << good.err);
  REQUIRE(good.code == 0);
  const auto lines = lines_of(good.out);
  const auto has = [&](const std::string& line) {
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  };
  CHECK(has("data-dir=\"" + dir.path().string() + "\""));
  CHECK(has("lease-ms=45000"));
  CHECK(has("message-ttl-ms=60000"));
  CHECK(has("max-attempts=7"));    // the flag wins over the file
  CHECK(has("fsync=\"always\""));  // and the defaults are shown
  CHECK(has("# feed is not set"));
  CHECK(contains(good.err, "ferryd: " + path + " is valid"));
  // It did not start: nothing was written to the data directory.
  CHECK_FALSE(std::filesystem::exists(dir.path() / "queues"));
  CHECK_FALSE(std::filesystem::exists(dir.path() / "ferryd.lock"));

  // The printed settings are a config file that gives the same settings again.
  const std::string again = dir / "again.toml";
  {
    std::ofstream config(again);
    config << good.out;
  }
  const auto round = test::run({ferryd, "--check-config", again});
  INFO("again: " << round.err);
  CHECK(round.code == 0);
  CHECK(round.out.substr(round.out.find('\n')) == good.out.substr(good.out.find('\n')));

  {
    std::ofstream config(path, std::ios::app);
    config << "expired = \"keep\"\n";
  }
  const auto bad = test::run({ferryd, "--check-config=" + path});
  CHECK(bad.code == 2);
  CHECK(contains(bad.err, "line 5: expired = \"keep\": keep not in {dlq,drop}"));
  CHECK(bad.out.empty());
  const auto both = test::run({ferryd, "--check-config", path, "--config", path});
  CHECK(both.code == 2);
  CHECK(contains(both.err, "give --config or --check-config, not both"));
}

TEST_CASE("cli durable: ferryd --log-format json writes one JSON object per line, the message escaped",
          "[cli][durable]") {
  test::temp_dir dir;
  const std::filesystem::path data = dir.path() / "with\"quote";
  std::filesystem::create_directory(data);
  const std::string endpoint = test::free_tcp_endpoint();
  test::child_process ferryd({test::built_program("apps/ferryd/ferryd"), "--data-dir", data.string(),
                              "--bind", endpoint, "--log-format", "json"});
  REQUIRE(ferryd.wait_for_output(R"("msg":"ready"})", 20s));
  ferryd.kill(SIGTERM);
  REQUIRE(ferryd.wait(20s) == 0);
  const auto lines = lines_of(ferryd.err());
  INFO("stderr:\n" << ferryd.err());
  REQUIRE(lines.size() >= 3);
  for (const auto& line : lines) {
    CHECK(line.rfind(R"({"time":"20)", 0) == 0);
    CHECK(contains(line, R"(Z","level":"info","logger":"ferry","msg":")"));
    CHECK(line.back() == '}');
  }
  CHECK(contains(ferryd.err(), R"(data dir )" + dir.path().string() + R"(/with\"quote"})"));
  CHECK(contains(ferryd.err(), R"("msg":"listening on )" + endpoint + R"("})"));

  const auto bad = test::run(
      {test::built_program("apps/ferryd/ferryd"), "--data-dir", data.string(), "--log-format", "xml"});
  CHECK(bad.code == 2);
}
