#pragma once
// What the ferryd fault tests (tests/ferryd_fault_*_test.cpp) share: the processes they run (the real
// ferryd and the helpers in tests/helpers, a worker and a producer that print one line per event), the
// checks on what those printed, the segment-file helpers and a tmpfs mount.
//
// Every wait has a deadline and reads every child of the test (a child nobody reads blocks on a full
// pipe); children are killed, temporary directories and mounts removed however a test ends.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/ferryd_client.hpp"
#include "support/test_support.hpp"

namespace ferry::test {

extern const std::string ferryd_program;
extern const std::string worker_program;    // tests/helpers/ferry_test_worker.cpp
extern const std::string producer_program;  // tests/helpers/ferry_test_producer.cpp

/// "tcp://127.0.0.1:<port>".
std::string endpoint(int port);
/// The port of a "tcp://host:port" endpoint.
int port_of(const std::string& endpoint);

/// Only lines that are complete: a child may be in the middle of printing the last one.
std::vector<std::string> complete_lines(const std::string& text);
std::vector<std::string> words(const std::string& line);
bool contains(const std::string& text, const std::string& part);

/// Reads what `children` printed so far, so that none blocks on a full pipe.
void pump(const std::vector<child_process*>& children);
/// test::wait_until, reading `children` meanwhile.
bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
              const std::vector<child_process*>& children = {});
/// child.wait(), reading `others` meanwhile.
std::optional<int> wait_exit(child_process& child, std::chrono::milliseconds timeout,
                             const std::vector<child_process*>& others = {});

// ---- processes ----------------------------------------------------------------------------------------

/// ferryd on `data_dir`, listening on `port`; requires it ready within 20 s.
std::unique_ptr<child_process> start_ferryd(const std::filesystem::path& data_dir, int port,
                                            const std::vector<std::string>& flags = {});
/// A worker consuming `queue`; requires its "ready" line within 20 s.
std::unique_ptr<child_process> start_worker(int port, const std::string& queue,
                                            const std::vector<std::string>& flags = {});
/// A producer sending `count` messages to `queue`; it exits 0 once every one is confirmed.
std::unique_ptr<child_process> start_producer(int port, const std::string& queue, std::uint64_t count,
                                              const std::vector<std::string>& flags = {});

bool has_line(child_process& c, const std::string& wanted);

/// One line of the worker: "<kind> <id> <key> <attempt> <payload> <t-ns>".
struct event {
  std::string kind, id, key;
  unsigned attempt = 0;
  std::string payload;
  std::int64_t t_ns = 0;
};

/// The worker's events so far, of `kind` ("begin", "handled", "rejected", ...) or all.
std::vector<event> events_of(child_process& worker, const std::string& kind = {});
std::size_t count_events(const std::vector<child_process*>& workers, const std::string& kind);

/// What a producer saw: id -> payload of each confirmed message; id -> code and payload of each refused one.
struct produced {
  std::map<std::string, std::string> confirmed;
  std::map<std::string, std::string> refused_code;
  std::map<std::string, std::string> refused_payload;
};

/// Kills `ferryd` with SIGKILL `rounds` times, each once `worker` has reported `every` more handled
/// messages, and starts it again on `data_dir` with `flags` (the new process replaces `ferryd`).
void kill_while_handling(std::unique_ptr<child_process>& ferryd, const std::filesystem::path& data_dir,
                         int port, const std::vector<std::string>& flags, child_process& worker,
                         child_process& producer, std::size_t rounds, std::size_t every);
/// Waits for `producer` to exit 0 and returns what it reported; requires `total` confirmed.
produced finished(child_process& producer, std::size_t total, const std::vector<child_process*>& others);
produced outcome_of(child_process& producer);
std::size_t confirmed_count(child_process& producer);
/// Runs a producer to its end and requires exit code 0 (every message confirmed).
produced produce_all(int port, const std::string& queue, std::uint64_t count,
                     const std::vector<std::string>& flags, const std::vector<child_process*>& others);

// ---- checks -------------------------------------------------------------------------------------------

/// Runs a worker without consumer-side dedup (so a copy stored twice reaches its handler twice) until
/// ferryd reports the queue empty; returns what it handled.
std::vector<event> drain(int port, const std::string& queue, std::vector<child_process*> others,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Every id of `expected` handled exactly once, and (unless `extra_allowed`) nothing else handled.
void check_each_handled_once(const std::map<std::string, std::string>& expected,
                             const std::vector<event>& handled, bool extra_allowed = false);

// ---- files --------------------------------------------------------------------------------------------

std::string read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::string& bytes);

/// A record of a segment file (docs/storage.md): "FRY1", body length u32 LE, checksum u64, then the body.
struct record_span {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

std::vector<record_span> records_of(const std::string& bytes);
/// The message id a record holds (body offset 24, docs/storage.md), in hex.
std::string record_id(const std::string& bytes, const record_span& r);
/// The last .seg file of a queue's directory.
std::filesystem::path last_segment(const std::filesystem::path& queue_dir);

/// A tmpfs mounted for one test, unmounted (lazily if still busy) however the test ends.
class tmpfs_mount {
 public:
  tmpfs_mount(const std::filesystem::path& dir, const std::string& options, unsigned long flags = 0);
  ~tmpfs_mount();
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
  [[nodiscard]] bool mounted() const noexcept { return mounted_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::string error_;
};

std::uint64_t free_bytes(const std::filesystem::path& dir);

}  // namespace ferry::test
