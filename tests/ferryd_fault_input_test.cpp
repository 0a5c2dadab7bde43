// Fault tests for ferryd: malformed and unknown frames are answered with errors and ferryd keeps serving;
// start-up errors exit with their documented codes and say what to change.
//
// The real ferryd and the helpers in tests/helpers, driven through tests/support/ferryd_fault_support.hpp.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "support/ferryd_fault_support.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace ferry::test;

TEST_CASE("ferryd answers malformed and unknown frames with errors and keeps serving", "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--max-message-bytes", "1024"});
  raw_client c(endpoint(port));
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  ferry::message m("q", "x");
  const std::string env = envelope_of(m);

  // Each case: frames sent, the reply verb, and the code in the reply (frame 1 for ERROR, 2 for REFUSE).
  struct bad_input {
    std::string what;
    std::vector<std::string> frames;
    std::string verb, code;
  };
  const std::vector<bad_input> cases{
      {"unknown verb", {"EXPLODE", "q"}, "ERROR", "unknown_verb"},
      {"one empty frame", {""}, "ERROR", "unknown_verb"},
      {"SEND alone", {"SEND"}, "ERROR", "bad_frames"},
      {"SEND with an odd frame count", {"SEND", "q", env}, "ERROR", "bad_frames"},
      {"SEND with a bad envelope", {"SEND", "q", "\x96garbage", "x"}, "REFUSE", "malformed"},
      {"SEND with an empty envelope", {"SEND", "q", "", "x"}, "REFUSE", "malformed"},
      {"SEND to an invalid queue name", {"SEND", "../etc", env, "x"}, "REFUSE", "bad_queue"},
      {"SEND to a queue name with a slash", {"SEND", "a/b", env, "x"}, "REFUSE", "bad_queue"},
      {"SEND to a dead-letter queue", {"SEND", "q.dlq", env, "x"}, "REFUSE", "bad_queue"},
      {"SEND over --max-message-bytes", {"SEND", "q", env, std::string(1025, 'x')}, "REFUSE", "too_large"},
      {"ACK with a 7-byte token", {"ACK", "q", std::string(7, '\1')}, "ERROR", "bad_frames"},
      {"NACK without a token", {"NACK", "q"}, "ERROR", "bad_frames"},
      {"ACK from a connection that is not consuming",
       {"ACK", "q", std::string(8, '\1')},
       "ERROR",
       "not_consuming"},
      {"CONSUME without a queue", {"CONSUME"}, "ERROR", "bad_frames"},
      {"CONSUME with options that are not a map", {"CONSUME", "q", "not msgpack"}, "ERROR", "bad_frames"},
      {"HELLO with a broken map", {"HELLO", "\xc1"}, "ERROR", "bad_frames"},
      {"DLQ with an unknown operation", {"DLQ", "q", "explode"}, "ERROR", "bad_frames"},
  };
  for (const auto& bad : cases) {
    const auto reply = c.exchange(bad.frames);
    INFO(bad.what << ": reply " << show_frames(reply));
    REQUIRE(!reply.empty());
    CHECK(reply[0] == bad.verb);
    const std::size_t at = bad.verb == "ERROR" ? 1 : 2;
    REQUIRE(reply.size() > at);
    CHECK(reply[at] == bad.code);
    if (bad.code == "too_large") CHECK(reply[1] == std::string(m.id().view()));
  }

  // Bytes that are not ZMTP at all, on a plain TCP connection: libzmq drops the connection.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    std::string junk(4096, '\0');
    for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>((i * 7919) ^ (i >> 3));
    (void)!::write(fd, junk.data(), junk.size());
    ::close(fd);
  }

  REQUIRE(ferryd->running());
  CHECK(admin.stats().malformed_frames > 0);  // rejected_frames from a ferryd that predates the name
  // A normal round trip still works.
  auto worker = start_worker(port, "q", {"--no-dedup"});
  const produced sent = produce_all(port, "q", 20, {}, {ferryd.get(), worker.get()});
  const bool empty = wait_for([&] { return depth_of(admin, "q") == 0; }, 20s, {ferryd.get(), worker.get()});
  INFO("ferryd stderr:\n" << ferryd->err());
  CHECK(empty);
  check_each_handled_once(sent.confirmed, events_of(*worker, "handled"));
}

TEST_CASE("ferryd start-up errors exit with their documented codes and say what to change",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  const fs::path data = dir.path() / "data";
  fs::create_directories(data);
  const int port = ferry::test::free_port();
  auto expect = [&](const std::string& what, std::vector<std::string> argv, int code,
                    const std::string& phrase) {
    const auto r = ferry::test::run(std::move(argv), "", 20s);
    INFO(what << ": exit " << r.code << "\nstderr:\n" << r.err << "\nstdout:\n" << r.out);
    CHECK(r.code == code);
    CHECK(contains(r.err, phrase));
  };
  auto ferryd_args = [&](const fs::path& d, std::vector<std::string> more = {}) {
    std::vector<std::string> argv{ferryd_program, "--data-dir", d.string(), "--bind", endpoint(port)};
    argv.insert(argv.end(), more.begin(), more.end());
    return argv;
  };

  expect("missing data dir", ferryd_args(dir.path() / "missing"), 3, "does not exist");
  write_file(dir.path() / "a-file", "not a directory");
  expect("data dir is a file", ferryd_args(dir.path() / "a-file"), 3, "is not a directory");

  // Unwritable: root may write anywhere, so run ferryd as nobody against a root-owned 0755 directory...
  const fs::path locked = dir.path() / "root-only";
  fs::create_directories(locked);
  fs::permissions(locked, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
  std::vector<std::string> as_nobody{"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  const auto plain = ferryd_args(locked);
  as_nobody.insert(as_nobody.end(), plain.begin(), plain.end());
  expect("unwritable data dir (as nobody)", as_nobody, 3, "is not writable");
  // ...and as root against a read-only mount.
  {
    const fs::path ro = dir.path() / "read-only";
    tmpfs_mount mount(ro, "size=1m", MS_RDONLY);
    INFO("tmpfs: " << (mount.mounted() ? "mounted" : mount.error()));
    REQUIRE(mount.mounted());
    expect("read-only data dir", ferryd_args(ro), 3, "is not writable");
  }

  // The endpoint is taken by another listener.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 1) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    const int taken = ntohs(addr.sin_port);
    expect("endpoint in use", {ferryd_program, "--data-dir", data.string(), "--bind", endpoint(taken)}, 4,
           "cannot bind " + endpoint(taken));
    ::close(fd);
  }

  // A second ferryd on a data directory in use.
  {
    auto first = start_ferryd(data, port);
    expect("data dir in use",
           {ferryd_program, "--data-dir", data.string(), "--bind", endpoint(ferry::test::free_port())}, 5,
           "another ferryd (pid " + std::to_string(first->pid()) + ") is using data directory");
  }

  expect("unknown flag", ferryd_args(data, {"--bogus"}), 2, "--bogus");
  expect("bad number", ferryd_args(data, {"--lease-ms", "soon"}), 2, "--lease-ms");
  expect("number out of range", ferryd_args(data, {"--lease-ms", "5"}), 2, "--lease-ms");
  expect("bad choice", ferryd_args(data, {"--fsync", "sometimes"}), 2, "--fsync");
  expect("a back-off step of 0 ms", ferryd_args(data, {"--backoff-ms", "1000,0"}), 2, "--backoff-ms");
  expect("a back-off step that is not a number", ferryd_args(data, {"--backoff-ms", "1s,5s"}), 2,
         "--backoff-ms");
  std::string many = "1";
  for (int i = 0; i < 100; ++i) many += ",1";
  expect("more than 100 back-off steps", ferryd_args(data, {"--backoff-ms", many}), 2, "at most 100");
  expect("heartbeat timeout not above the interval",
         ferryd_args(data, {"--heartbeat-ms", "1000", "--heartbeat-timeout-ms", "500"}), 2, "must be larger");
  expect("no data dir", {ferryd_program, "--bind", endpoint(port)}, 2, "--data-dir");
}

namespace {

// Every file and directory under `dir`, with the size of each file (the lock file's pid aside).
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string line = fs::relative(e.path(), dir).string();
    if (e.is_regular_file() && e.path().filename() != "ferryd.lock")
      line += " " + std::to_string(e.file_size());
    out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string msgpack_map(const std::string& key, std::int64_t value) {
  // fixmap of 1, fixstr key, then the value as the smallest int (negative values as int 8).
  std::string out{static_cast<char>(0x81), static_cast<char>(0xa0 | key.size())};
  out += key;
  if (value >= 0 && value < 128) {
    out += static_cast<char>(value);
  } else {
    out += static_cast<char>(0xd0);
    out += static_cast<char>(static_cast<std::int8_t>(value));
  }
  return out;
}

}  // namespace

TEST_CASE(
    "every verb with every malformed frame changes nothing: a clean stop exits 0, the data dir as it was",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port);
  const std::vector<std::string> before = listing(dir.path());
  raw_client c(endpoint(port));
  ferry::message m("q", "x");
  const std::string env = envelope_of(m);
  std::string v2_block = std::string("\x92\x02\x01", 3) + env + std::string("\xc4\x01x", 3);
  std::vector<std::vector<std::string>> requests{
      {"HELLO", "\xc1"},
      {"HELLO", msgpack_map("version", 0)},
      {"HELLO", msgpack_map("version", -1)},
      {"SEND"},
      {"SEND", "bad6n", env},
      {"SEND", "bad6trail", env + "x", "x"},
      {"SEND", "bad6tok", "\x96garbage", "x"},
      {"SEND", "bad6empty", "", "x"},
      {"SEND", "bad/name", env, "x"},
      {"SEND", "bad.dlq", env, "x"},
      {"SEND", "bad6big", env, std::string(17u << 20, 'x')},
      {"SEND", "bad6block", v2_block.substr(0, v2_block.size() - 1)},
      {"SEND", "bad6count", std::string("\x92\x02\x05", 3) + v2_block.substr(3)},
      {"SEND", "bad6header", std::string("\x93\x02\x01", 3) + v2_block.substr(3)},
      {"CONSUME"},
      {"CONSUME", "bad/name"},
      {"CONSUME", "bad6opts", "not msgpack"},
      {"CANCEL"},
      {"CANCEL", "bad/name"},
      {"CANCEL", "never6seen"},
      {"ACK"},
      {"ACK", "bad6ack", std::string(7, '\1')},
      {"ACK", "bad6ack", std::string(8, '\1')},
      {"NACK", "bad6nack"},
      {"NACK", "bad6nack", std::string(3, '\1'), "why"},
      {"REJECT", "bad6rej", std::string(8, '\1'), "why"},
      {"PING", "never6seen"},
      {"STATS", "extra", "frames"},
      {"DLQ"},
      {"DLQ", "bad6dlq"},
      {"DLQ", "bad6dlq", "explode"},
      {"DLQ", "bad6dlq", "list", "not msgpack"},
      {"DLQ", "bad/name", "list"},
      {"DLQ", "bad6dlq.dlq", "purge"},
      {"DLQ", "never6seen", "purge"},
      {"DLQ", "never6seen", "replay"},
      {"EXPLODE", "q"},
      {""},
  };
  for (const auto& r : requests) {
    const auto reply = c.exchange(r, 2s);
    INFO("request " << show_frames(r) << " -> " << show_frames(reply));
    REQUIRE(ferryd->running());
  }
  // A consumer that subscribes and leaves adds no queue on disk either.
  (void)c.exchange({"CONSUME", "only6consumed"});
  (void)c.exchange({"CANCEL", "only6consumed"});

  ferryd->kill(SIGTERM);
  const auto code = wait_exit(*ferryd, 20s, {});
  INFO("ferryd stderr:\n" << ferryd->err());
  CHECK(code.value_or(-1) == 0);
  CHECK_FALSE(contains(ferryd->err(), "cannot write and sync its journal"));
  CHECK(listing(dir.path()) == before);
}

TEST_CASE(
    "a queue or topic whose files cannot be opened fails its requests with io_error, ferryd keeps serving",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  // Directories replaced by plain files: unusable whatever the user's permissions (root included).
  fs::create_directories(dir.path() / "queues");
  fs::create_directories(dir.path() / "topics");
  for (const auto& file : {dir.path() / "queues" / "blocked", dir.path() / "topics" / "blocked-topic"})
    std::ofstream(file) << "not a directory";
  auto ferryd = start_ferryd(dir.path(), port);
  raw_client c(endpoint(port));
  ferry::message m("blocked", "x");
  const std::string env = envelope_of(m);
  const std::string sub_options = "\x81\xa4name\xa1s";  // {"name": "s"}
  const std::vector<std::vector<std::string>> requests{
      {"SEND", "blocked", env, "x"},
      {"PUBLISH", "blocked-topic", env, "x"},
      {"SUBSCRIBE", "blocked-topic", sub_options},
      {"CONSUME", "blocked"},
  };
  for (int round = 0; round < 2; ++round) {  // the second time it is tried from disk again, not half-open
    for (const auto& frames : requests) {
      const auto reply = c.exchange(frames);
      INFO(frames[0] << " (round " << round << "): reply " << show_frames(reply));
      REQUIRE(reply.size() >= 3);
      CHECK(reply[0] == "ERROR");
      CHECK(reply[1] == "io_error");
      REQUIRE(ferryd->running());
    }
  }
  INFO("ferryd stderr:\n" << ferryd->err());
  CHECK(ferryd->err().find("failed") != std::string::npos);
  // Everything else still works: a queue and a topic next to the broken ones.
  auto worker = start_worker(port, "q", {"--no-dedup"});
  const produced sent = produce_all(port, "q", 20, {}, {ferryd.get(), worker.get()});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  const bool empty = wait_for([&] { return depth_of(admin, "q") == 0; }, 20s, {ferryd.get(), worker.get()});
  CHECK(empty);
  check_each_handled_once(sent.confirmed, events_of(*worker, "handled"));
  const auto published = c.exchange({"PUBLISH", "fine-topic", env, "x"});
  INFO("PUBLISH to a usable topic: " << show_frames(published));
  REQUIRE(!published.empty());
  CHECK(published[0] == "CONFIRM");
  CHECK(ferryd->running());
}
