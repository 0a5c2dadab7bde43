#include "support/ferryd_fault_support.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ferry/admin.hpp"
#include "ferry/message_id.hpp"

namespace ferry::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

const std::string ferryd_program = built_program("apps/ferryd/ferryd");
const std::string worker_program = FERRY_TEST_WORKER;
const std::string producer_program = FERRY_TEST_PRODUCER;

std::string endpoint(int port) {
  return "tcp://127.0.0.1:" + std::to_string(port);
}

std::vector<std::string> complete_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', start)) {
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void pump(const std::vector<child_process*>& children) {
  for (auto* c : children) {
    if (c == nullptr) continue;
    (void)c->out();
    (void)c->err();
  }
}

bool wait_for(const std::function<bool()>& condition, ms timeout,
              const std::vector<child_process*>& children) {
  return ferry::test::wait_until(
      [&] {
        pump(children);
        return condition();
      },
      timeout);
}

std::optional<int> wait_exit(child_process& child, ms timeout, const std::vector<child_process*>& others) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto code = child.wait(20ms)) return code;
    pump(others);
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

int port_of(const std::string& endpoint) {
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

// ---- processes ----------------------------------------------------------------------------------------

std::unique_ptr<child_process> start_ferryd(const fs::path& data_dir, int port,
                                            const std::vector<std::string>& flags) {
  std::vector<std::string> argv{ferryd_program, "--data-dir", data_dir.string(), "--bind", endpoint(port)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto p = std::make_unique<child_process>(argv);
  const bool ready = p->wait_for_output("[ferry] ready", 20s);
  INFO("ferryd stderr:\n" << p->err());
  REQUIRE(ready);
  REQUIRE(contains(p->err(), "listening on " + endpoint(port)));
  return p;
}

bool has_line(child_process& c, const std::string& wanted) {
  for (const auto& line : complete_lines(c.out()))
    if (line == wanted) return true;
  return false;
}

std::unique_ptr<child_process> start_worker(int port, const std::string& queue,
                                            const std::vector<std::string>& flags) {
  std::vector<std::string> argv{worker_program, "--forwarder", endpoint(port), "--queue", queue};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto w = std::make_unique<child_process>(argv);
  const bool ready =
      wait_for([&] { return has_line(*w, "ready") || !w->running(); }, 20s) && has_line(*w, "ready");
  INFO("worker stdout:\n" << w->out() << "\nworker stderr:\n" << w->err());
  REQUIRE(ready);
  return w;
}

std::unique_ptr<child_process> start_producer(int port, const std::string& queue, std::uint64_t count,
                                              const std::vector<std::string>& flags) {
  std::vector<std::string> argv{producer_program, "--forwarder",        endpoint(port), "--queue", queue,
                                "--count",        std::to_string(count)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return std::make_unique<child_process>(argv);
}

std::vector<event> events_of(child_process& worker, const std::string& kind) {
  std::vector<event> out;
  for (const auto& line : complete_lines(worker.out())) {
    const auto w = words(line);
    if (w.size() != 6 || (!kind.empty() && w[0] != kind)) continue;
    out.push_back({w[0], w[1], w[2], static_cast<unsigned>(std::stoul(w[3])), w[4], std::stoll(w[5])});
  }
  return out;
}

std::size_t count_events(const std::vector<child_process*>& workers, const std::string& kind) {
  std::size_t n = 0;
  for (auto* w : workers) n += events_of(*w, kind).size();
  return n;
}

void kill_while_handling(std::unique_ptr<child_process>& ferryd, const fs::path& data_dir, int port,
                         const std::vector<std::string>& flags, child_process& worker,
                         child_process& producer, std::size_t rounds, std::size_t every) {
  for (std::size_t round = 1; round <= rounds; ++round) {
    INFO("kill " << round);
    REQUIRE(wait_for([&] { return events_of(worker, "handled").size() >= round * every; }, 30s,
                     {ferryd.get(), &worker, &producer}));
    ferryd->kill(SIGKILL);
    REQUIRE(wait_exit(*ferryd, 10s, {&worker, &producer}).value_or(-1) == 128 + SIGKILL);
    ferryd = start_ferryd(data_dir, port, flags);
  }
}

produced finished(child_process& producer, std::size_t total, const std::vector<child_process*>& others) {
  const auto code = wait_exit(producer, 60s, others);
  INFO("producer stderr:\n" << producer.err());
  REQUIRE(code.value_or(-1) == 0);
  produced sent = outcome_of(producer);
  REQUIRE(sent.confirmed.size() == total);
  return sent;
}

produced outcome_of(child_process& producer) {
  produced p;
  for (const auto& line : complete_lines(producer.out())) {
    const auto w = words(line);
    if (w.size() == 3 && w[0] == "confirmed") p.confirmed[w[1]] = w[2];
    if (w.size() == 4 && w[0] == "refused") {
      p.refused_code[w[1]] = w[2];
      p.refused_payload[w[1]] = w[3];
    }
  }
  return p;
}

std::size_t confirmed_count(child_process& producer) {
  std::size_t n = 0;
  for (const auto& line : complete_lines(producer.out())) n += line.rfind("confirmed ", 0) == 0;
  return n;
}

produced produce_all(int port, const std::string& queue, std::uint64_t count,
                     const std::vector<std::string>& flags, const std::vector<child_process*>& others) {
  auto producer = start_producer(port, queue, count, flags);
  const auto code = wait_exit(*producer, 60s, others);
  INFO("producer stdout (tail):\n"
       << producer->out().substr(producer->out().size() > 2000 ? producer->out().size() - 2000 : 0)
       << "\nproducer stderr:\n"
       << producer->err());
  REQUIRE(code.value_or(-1) == 0);
  return outcome_of(*producer);
}

// ---- checks -------------------------------------------------------------------------------------------

std::vector<event> drain(int port, const std::string& queue, std::vector<child_process*> others, ms timeout) {
  auto worker = start_worker(port, queue, {"--no-dedup", "--threads", "2", "--prefetch", "64"});
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint(port));
  others.push_back(worker.get());
  const bool empty = wait_for([&] { return depth_of(admin, queue) == 0; }, timeout, others);
  const ferry::queue_stats q = queue_stats_of(admin, queue);
  INFO("queue " << queue << " still holds " << q.depth << " message(s), " << q.in_flight
                << " in flight, after " << events_of(*worker, "handled").size() << " handled");
  CHECK(empty);
  return events_of(*worker, "handled");
}

void check_each_handled_once(const std::map<std::string, std::string>& expected,
                             const std::vector<event>& handled, bool extra_allowed) {
  std::map<std::string, int> times;
  for (const auto& e : handled) ++times[e.id];
  std::vector<std::string> lost, twice, unexpected;
  for (const auto& [id, payload] : expected)
    if (times.count(id) == 0) lost.push_back(id + " (payload " + payload + ")");
  for (const auto& [id, n] : times) {
    if (n > 1) twice.push_back(id + " x" + std::to_string(n));
    if (!extra_allowed && expected.count(id) == 0) unexpected.push_back(id);
  }
  auto first = [](const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size() && i < 10; ++i) s += v[i] + " ";
    return s;
  };
  INFO(expected.size() << " expected, " << handled.size() << " handled; lost " << lost.size() << ": "
                       << first(lost) << "; handled twice " << twice.size() << ": " << first(twice)
                       << "; not expected " << unexpected.size() << ": " << first(unexpected));
  CHECK(lost.empty());
  CHECK(twice.empty());
  CHECK(unexpected.empty());
}

// ---- files --------------------------------------------------------------------------------------------

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::vector<record_span> records_of(const std::string& bytes) {
  std::vector<record_span> out;
  std::uint64_t pos = 0;
  while (pos + 16 <= bytes.size() && bytes.compare(pos, 4, "FRY1") == 0) {
    std::uint64_t body = 0;
    for (int i = 0; i < 4; ++i)
      body |= std::uint64_t{static_cast<unsigned char>(bytes[pos + 4 + i])} << (8 * i);
    if (pos + 16 + body > bytes.size()) break;
    out.push_back({pos, 16 + body});
    pos += 16 + body;
  }
  return out;
}

std::string record_id(const std::string& bytes, const record_span& r) {
  const auto id = ferry::message_id::from_bytes(std::string_view(bytes).substr(r.offset + 16 + 24, 16));
  REQUIRE(id);
  return id->to_hex();
}

fs::path last_segment(const fs::path& queue_dir) {
  fs::path last;
  for (const auto& e : fs::directory_iterator(queue_dir))
    if (e.path().extension() == ".seg" && (last.empty() || e.path().filename() > last.filename()))
      last = e.path();
  REQUIRE(!last.empty());
  return last;
}

// A tmpfs mounted for one test, unmounted (lazily if still busy) however the test ends.
tmpfs_mount::tmpfs_mount(const fs::path& dir, const std::string& options, unsigned long flags) : dir_(dir) {
  fs::create_directories(dir_);
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", flags, options.c_str()) == 0) {
    mounted_ = true;
  } else {
    error_ = "mount -t tmpfs -o " + options + " tmpfs " + dir_.string() + " failed: " + std::strerror(errno) +
             " (the fault tests need root, or CAP_SYS_ADMIN)";
  }
}

tmpfs_mount::~tmpfs_mount() {
  if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
}

std::uint64_t free_bytes(const fs::path& dir) {
  struct statvfs st {};
  REQUIRE(::statvfs(dir.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace ferry::test
