#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>
#include <set>
#include <thread>

#include "ferry/message.hpp"
#include "ferry/message_id.hpp"

using ferry::message;
using ferry::message_id;

TEST_CASE("message_id is time-ordered within a thread and carries UUIDv7 version bits", "[message_id]") {
  message_id prev = message_id::generate();
  for (int i = 0; i < 100000; ++i) {
    const message_id next = message_id::generate();
    REQUIRE(prev < next);
    prev = next;
  }
  const auto& b = prev.bytes();
  CHECK((b[6] >> 4) == 7);
  CHECK((b[8] >> 6) == 2);
  const auto now_ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                     std::chrono::system_clock::now().time_since_epoch())
                                                     .count());
  CHECK(prev.unix_ms() <= now_ms + 1);
  CHECK(prev.unix_ms() + 5000 > now_ms);
}

TEST_CASE("message_id is unique across threads", "[message_id]") {
  constexpr int threads = 4, per_thread = 50000;
  std::vector<std::vector<message_id>> ids(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) ids[static_cast<std::size_t>(t)].push_back(message_id::generate());
    });
  for (auto& w : workers) w.join();
  std::set<message_id> all;
  for (const auto& v : ids) all.insert(v.begin(), v.end());
  CHECK(all.size() == static_cast<std::size_t>(threads * per_thread));
}

TEST_CASE("message_id differs between a parent and its forked child", "[message_id]") {
  (void)message_id::generate();  // the parent's generator is initialised before the fork
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const message_id id = message_id::generate();
    (void)!::write(fds[1], id.bytes().data(), 16);
    ::_exit(0);
  }
  const message_id mine = message_id::generate();
  std::array<std::uint8_t, 16> child_bytes{};
  REQUIRE(::read(fds[0], child_bytes.data(), 16) == 16);
  ::waitpid(pid, nullptr, 0);
  ::close(fds[0]);
  ::close(fds[1]);
  const message_id theirs(child_bytes);
  CHECK(mine != theirs);
  // Same millisecond and counter is likely; the random tag must differ.
  CHECK(std::vector<std::uint8_t>(mine.bytes().begin() + 11, mine.bytes().end()) !=
        std::vector<std::uint8_t>(theirs.bytes().begin() + 11, theirs.bytes().end()));
}

TEST_CASE("message_id hex round trip and rejects bad input", "[message_id]") {
  const message_id id = message_id::generate();
  const std::string hex = id.to_hex();
  CHECK(hex.size() == 32);
  CHECK(message_id::from_hex(hex) == id);
  CHECK_FALSE(message_id::from_hex("xyz"));
  CHECK_FALSE(message_id::from_hex(std::string(32, 'g')));
  CHECK_FALSE(message_id::from_bytes("short"));
  CHECK(message_id().is_nil());
  CHECK_FALSE(id.is_nil());
}

TEST_CASE("message constructor stamps id and time, and clone copies everything", "[message]") {
  message m("orders", "payload-bytes");
  m.set_key("order-7");
  m.set_header("trace", "abc");
  m.set_attempt(3);
  m.set_stream(42, 9);
  CHECK_FALSE(m.id().is_nil());
  CHECK(m.timestamp_us() > 0);
  const message c = m.clone();
  CHECK(c.id() == m.id());
  CHECK(c.topic() == "orders");
  CHECK(c.key() == "order-7");
  CHECK(c.header("trace") == "abc");
  CHECK(c.header("missing").empty());
  CHECK(c.attempt() == 3);
  CHECK(c.origin() == 42);
  CHECK(c.sequence() == 9);
  CHECK(c.payload() == "payload-bytes");
  CHECK(m.payload() == "payload-bytes");

  message empty;
  CHECK(empty.id().is_nil());
  empty.stamp();
  CHECK_FALSE(empty.id().is_nil());
  CHECK(empty.timestamp_us() > 0);
}
