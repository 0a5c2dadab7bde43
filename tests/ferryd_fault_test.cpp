// Fault tests for ferryd: kill -9 under load, restarts, dead and stalled workers, poison messages, torn and
// damaged segment files, a full disk, malformed frames, start-up errors and SIGTERM.
//
// Each test runs the real ferryd and the helpers in tests/helpers (a worker and a producer that print one
// line per event) and checks what ferryd promises: every confirmed message is delivered, none is handled
// twice, attempts survive restarts, damage is reported. Every wait has a deadline; children are killed and
// temporary directories and mounts removed however a test ends.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <msgpack.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "ferry/envelope.hpp"
#include "ferry/message.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ferry::test::child_process;
using ms = std::chrono::milliseconds;

const std::string ferryd_program = ferry::test::built_program("apps/ferryd/ferryd");
const std::string worker_program = FERRY_TEST_WORKER;
const std::string producer_program = FERRY_TEST_PRODUCER;

std::string endpoint(int port) {
  return "tcp://127.0.0.1:" + std::to_string(port);
}

// Only lines that are complete: a child may be in the middle of printing the last one.
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

// The helpers print a line per message, and a child nobody reads blocks on a full pipe: every wait reads
// all the children of the test.
void pump(const std::vector<child_process*>& children) {
  for (auto* c : children) {
    if (c == nullptr) continue;
    (void)c->out();
    (void)c->err();
  }
}

bool wait_for(const std::function<bool()>& condition, ms timeout,
              const std::vector<child_process*>& children = {}) {
  return ferry::test::wait_until(
      [&] {
        pump(children);
        return condition();
      },
      timeout);
}

std::optional<int> wait_exit(child_process& child, ms timeout,
                             const std::vector<child_process*>& others = {}) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto code = child.wait(20ms)) return code;
    pump(others);
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

// ---- processes --------------------------------------------------------------------------------------------

std::unique_ptr<child_process> start_ferryd(const fs::path& data_dir, int port,
                                            const std::vector<std::string>& flags = {}) {
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
                                            const std::vector<std::string>& flags = {}) {
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
                                              const std::vector<std::string>& flags = {}) {
  std::vector<std::string> argv{producer_program, "--forwarder",        endpoint(port), "--queue", queue,
                                "--count",        std::to_string(count)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return std::make_unique<child_process>(argv);
}

// One line of the worker: "<kind> <id> <key> <attempt> <payload> <t-ns>".
struct event {
  std::string kind, id, key;
  unsigned attempt = 0;
  std::string payload;
  std::int64_t t_ns = 0;
};

std::vector<event> events_of(child_process& worker, const std::string& kind = {}) {
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

// What a producer saw: id -> payload of each confirmed message; id -> code and payload of each refused one.
struct produced {
  std::map<std::string, std::string> confirmed;
  std::map<std::string, std::string> refused_code;
  std::map<std::string, std::string> refused_payload;
};

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

// Runs a producer to its end and requires exit code 0 (every message confirmed).
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

// ---- a raw client: the protocol frame by frame ------------------------------------------------------------

class raw_client {
 public:
  explicit raw_client(const std::string& ep) : endpoint_(ep), socket_(ctx_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(ep);
  }

  void send(const std::vector<std::string>& frames) {
    std::vector<zmq::const_buffer> parts;
    for (const auto& f : frames) parts.push_back(zmq::buffer(f.data(), f.size()));
    REQUIRE(zmq::send_multipart(socket_, parts));
  }

  std::optional<std::vector<std::string>> receive(ms timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(socket_, std::back_inserter(parts))) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& p : parts) out.push_back(p.to_string());
    return out;
  }

  /// Sends `frames` and returns the next reply.
  std::optional<std::vector<std::string>> exchange(const std::vector<std::string>& frames, ms timeout = 5s) {
    send(frames);
    return receive(timeout);
  }

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }

 private:
  std::string endpoint_;
  zmq::context_t ctx_;
  zmq::socket_t socket_;
};

int port_of(const raw_client& c) {
  return std::stoi(c.endpoint().substr(c.endpoint().rfind(':') + 1));
}

std::string show_frames(const std::optional<std::vector<std::string>>& frames) {
  if (!frames) return "(no reply)";
  std::string out;
  for (const auto& f : *frames) {
    std::string shown = f.substr(0, 120);
    for (auto& c : shown)
      if (c < ' ' || c > '~') c = '.';
    out += "[" + shown + "] ";
  }
  return out;
}

// The envelope frame of `m` as a producer sends it.
std::string envelope_of(const ferry::message& m) {
  std::string out(ferry::envelope_size(m), '\0');
  ferry::encode_envelope(m, out.data());
  return out;
}

const msgpack::object* field(const msgpack::object& map, std::string_view name) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == name)
      return &kv.val;
  }
  return nullptr;
}

std::string text_of(const msgpack::object* o) {
  if (o == nullptr) return {};
  if (o->type == msgpack::type::STR) return {o->via.str.ptr, o->via.str.size};
  if (o->type == msgpack::type::BIN) return {o->via.bin.ptr, o->via.bin.size};
  return {};
}

using counters = std::map<std::string, std::uint64_t>;

// STATS, reduced to the counters of one queue (empty when ferryd does not know the queue) plus the global
// ones under "ferryd.<name>".
counters stats_of(raw_client& admin, const std::string& queue) {
  const auto reply = admin.exchange({"STATS"});
  INFO("STATS reply: " << show_frames(reply));
  REQUIRE(reply);
  REQUIRE(reply->size() == 2);
  REQUIRE((*reply)[0] == "STATS");
  const msgpack::object_handle oh = msgpack::unpack((*reply)[1].data(), (*reply)[1].size());
  const msgpack::object& root = oh.get();
  counters out;
  REQUIRE(root.type == msgpack::type::MAP);
  for (std::uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    if (kv.val.type == msgpack::type::POSITIVE_INTEGER) out["ferryd." + text_of(&kv.key)] = kv.val.via.u64;
  }
  if (const auto* q = field(root, "queues")) {
    if (const auto* mine = field(*q, queue)) {
      for (std::uint32_t i = 0; i < mine->via.map.size; ++i) {
        const auto& kv = mine->via.map.ptr[i];
        if (kv.val.type == msgpack::type::POSITIVE_INTEGER) out[text_of(&kv.key)] = kv.val.via.u64;
      }
    }
  }
  return out;
}

// Depth of a queue, or -1 while ferryd does not know it.
std::int64_t depth_of(raw_client& admin, const std::string& queue) {
  counters c = stats_of(admin, queue);
  const auto it = c.find("depth");
  return it == c.end() ? -1 : static_cast<std::int64_t>(it->second);
}

struct dead_letter {
  std::string id;
  std::map<std::string, std::string> headers;
  std::string payload;
};

std::vector<dead_letter> dlq_list(raw_client& admin, const std::string& queue) {
  const auto reply = admin.exchange({"DLQ", queue, "list"});
  INFO("DLQ reply: " << show_frames(reply));
  REQUIRE(reply);
  REQUIRE(reply->size() == 2);
  REQUIRE((*reply)[0] == "DLQ");
  const msgpack::object_handle oh = msgpack::unpack((*reply)[1].data(), (*reply)[1].size());
  std::vector<dead_letter> out;
  const auto* messages = field(oh.get(), "messages");
  REQUIRE(messages != nullptr);
  REQUIRE(messages->type == msgpack::type::ARRAY);
  for (std::uint32_t i = 0; i < messages->via.array.size; ++i) {
    const auto& m = messages->via.array.ptr[i];
    dead_letter d;
    d.id = text_of(field(m, "id"));  // bin 16 (docs/protocol.md, DLQ list): shown as hex like everywhere else
    if (const auto id = ferry::message_id::from_bytes(d.id)) d.id = id->to_hex();
    d.payload = text_of(field(m, "payload"));
    if (const auto* h = field(m, "headers"); h != nullptr && h->type == msgpack::type::MAP)
      for (std::uint32_t j = 0; j < h->via.map.size; ++j)
        d.headers[text_of(&h->via.map.ptr[j].key)] = text_of(&h->via.map.ptr[j].val);
    out.push_back(std::move(d));
  }
  return out;
}

// ---- checks -----------------------------------------------------------------------------------------------

// Runs a worker without consumer-side dedup (so a copy stored twice reaches its handler twice) until ferryd
// reports the queue empty; returns what it handled.
std::vector<event> drain(int port, const std::string& queue, std::vector<child_process*> others,
                         ms timeout = 30s) {
  auto worker = start_worker(port, queue, {"--no-dedup", "--threads", "2", "--prefetch", "64"});
  raw_client admin(endpoint(port));
  others.push_back(worker.get());
  const bool empty = wait_for([&] { return depth_of(admin, queue) == 0; }, timeout, others);
  counters c = stats_of(admin, queue);
  INFO("queue " << queue << " still holds " << c["depth"] << " message(s), " << c["in_flight"]
                << " in flight, after " << events_of(*worker, "handled").size() << " handled");
  CHECK(empty);
  return events_of(*worker, "handled");
}

// Every id of `expected` handled exactly once, and (unless `extra_allowed`) nothing else handled.
void check_each_handled_once(const std::map<std::string, std::string>& expected,
                             const std::vector<event>& handled, bool extra_allowed = false) {
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

// ---- files ------------------------------------------------------------------------------------------------

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A record of a segment file (docs/storage.md): "FRY1", body length u32 LE, checksum u64, then the body.
struct record_span {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

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

// The message id a record holds (body offset 24, docs/storage.md).
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
class tmpfs_mount {
 public:
  tmpfs_mount(const fs::path& dir, const std::string& options, unsigned long flags = 0) : dir_(dir) {
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", flags, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = "mount -t tmpfs -o " + options + " tmpfs " + dir_.string() +
               " failed: " + std::strerror(errno) + " (the fault tests need root, or CAP_SYS_ADMIN)";
    }
  }
  ~tmpfs_mount() {
    if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
  [[nodiscard]] bool mounted() const noexcept { return mounted_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 private:
  fs::path dir_;
  bool mounted_ = false;
  std::string error_;
};

std::uint64_t free_bytes(const fs::path& dir) {
  struct statvfs st {};
  REQUIRE(::statvfs(dir.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace

// ---- crashes of ferryd ------------------------------------------------------------------------------------

TEST_CASE("ferryd killed with SIGKILL under load loses no confirmed message and stores each resend once",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--segment-mb", "1"};
  const int total = 3000;
  auto ferryd = start_ferryd(dir.path(), port, flags);
  auto producer = start_producer(port, "load", total, {"--rate", "1500", "--payload-bytes", "500"});
  REQUIRE(wait_for([&] { return confirmed_count(*producer) >= 500; }, 20s, {producer.get(), ferryd.get()}));

  ferryd->kill(SIGKILL);
  REQUIRE(wait_exit(*ferryd, 10s, {producer.get()}).value_or(-1) == 128 + SIGKILL);
  const std::size_t confirmed_before_kill = confirmed_count(*producer);
  ferryd = start_ferryd(dir.path(), port, flags);

  // The producer resends what was unconfirmed, with the same ids, and finishes.
  const auto code = wait_exit(*producer, 60s, {ferryd.get()});
  INFO("producer stderr:\n" << producer->err() << "\nferryd stderr:\n" << ferryd->err());
  REQUIRE(code.value_or(-1) == 0);
  const produced sent = outcome_of(*producer);
  REQUIRE(sent.confirmed.size() == total);
  CHECK(confirmed_before_kill < static_cast<std::size_t>(total));  // the kill came during the load

  check_each_handled_once(sent.confirmed, drain(port, "load", {ferryd.get()}));
}

TEST_CASE("a worker consuming through three SIGKILL restarts of ferryd runs its handler once per message",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--segment-mb",           "1",   "--heartbeat-ms", "100",
                                       "--heartbeat-timeout-ms", "1000"};
  const int total = 3000;
  auto ferryd = start_ferryd(dir.path(), port, flags);
  // Consumer-side dedup on (the default): acks lost with a killed ferryd bring redeliveries it must absorb.
  auto worker = start_worker(port, "busy", {"--threads", "2", "--sleep-ms", "1", "--heartbeat-ms", "100"});
  auto producer = start_producer(port, "busy", total, {"--rate", "1000", "--payload-bytes", "300"});
  for (std::size_t round = 1; round <= 3; ++round) {
    INFO("kill " << round);
    REQUIRE(wait_for([&] { return events_of(*worker, "handled").size() >= round * 600; }, 30s,
                     {ferryd.get(), worker.get(), producer.get()}));
    ferryd->kill(SIGKILL);
    REQUIRE(wait_exit(*ferryd, 10s, {worker.get(), producer.get()}).value_or(-1) == 128 + SIGKILL);
    ferryd = start_ferryd(dir.path(), port, flags);
  }
  const auto code = wait_exit(*producer, 60s, {ferryd.get(), worker.get()});
  INFO("producer stderr:\n" << producer->err());
  REQUIRE(code.value_or(-1) == 0);
  const produced sent = outcome_of(*producer);
  REQUIRE(sent.confirmed.size() == total);

  raw_client admin(endpoint(port));
  const bool empty =
      wait_for([&] { return depth_of(admin, "busy") == 0; }, 30s, {ferryd.get(), worker.get()});
  INFO("ferryd stderr:\n" << ferryd->err() << "\nworker stderr:\n" << worker->err());
  CHECK(empty);
  check_each_handled_once(sent.confirmed, events_of(*worker, "handled"));
}

TEST_CASE(
    "a resend of a confirmed message after a SIGKILL restart of ferryd is confirmed and not stored again",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port);
  ferry::message m("once", "the only copy");
  const std::vector<std::string> send{"SEND", "once", envelope_of(m), "the only copy"};
  {
    raw_client producer(endpoint(port));
    const auto reply = producer.exchange(send);
    INFO("reply: " << show_frames(reply));
    REQUIRE(reply);
    REQUIRE((*reply)[0] == "CONFIRM");
    CHECK((*reply)[1] == std::string(m.id().view()));
  }
  ferryd->kill(SIGKILL);
  REQUIRE(ferryd->wait(10s).value_or(-1) == 128 + SIGKILL);
  ferryd = start_ferryd(dir.path(), port);

  raw_client producer(endpoint(port));
  const auto reply = producer.exchange(send);
  INFO("reply: " << show_frames(reply) << "\nferryd stderr:\n" << ferryd->err());
  REQUIRE(reply);
  REQUIRE((*reply)[0] == "CONFIRM");
  CHECK((*reply)[1] == std::string(m.id().view()));
  counters c = stats_of(producer, "once");
  CHECK(c["depth"] == 1);
  CHECK(c["deduplicated"] == 1);

  const auto handled = drain(port, "once", {ferryd.get()});
  REQUIRE(handled.size() == 1);
  CHECK(handled[0].id == m.id().to_hex());
}

TEST_CASE("ferryd stopped with SIGTERM under load exits 0 and keeps every message it confirmed",
          "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--segment-mb", "1"};
  const int total = 3000;
  auto ferryd = start_ferryd(dir.path(), port, flags);
  auto producer = start_producer(port, "term", total, {"--rate", "1500", "--payload-bytes", "500"});
  REQUIRE(wait_for([&] { return confirmed_count(*producer) >= 500; }, 20s, {producer.get(), ferryd.get()}));

  ferryd->kill(SIGTERM);
  const auto code = wait_exit(*ferryd, 15s, {producer.get()});
  {
    INFO("ferryd stderr:\n" << ferryd->err());
    CHECK(code.value_or(-1) == 0);
    CHECK(contains(ferryd->err(), "received SIGTERM, shutting down"));
    CHECK(contains(ferryd->err(), "ferryd stopped"));
  }
  if (!code) ferryd->kill(SIGKILL);
  (void)wait_exit(*ferryd, 10s, {producer.get()});
  const produced at_stop = outcome_of(*producer);
  CHECK(at_stop.confirmed.size() < static_cast<std::size_t>(total));  // SIGTERM came during the load

  ferryd = start_ferryd(dir.path(), port, flags);
  const auto producer_code = wait_exit(*producer, 60s, {ferryd.get()});
  INFO("producer stderr:\n" << producer->err());
  REQUIRE(producer_code.value_or(-1) == 0);
  const produced sent = outcome_of(*producer);
  REQUIRE(sent.confirmed.size() == total);
  check_each_handled_once(sent.confirmed, drain(port, "term", {ferryd.get()}));
}

// ---- dead and stalled workers -----------------------------------------------------------------------------

TEST_CASE("a message whose worker dies mid-handling is redelivered to another worker as attempt 2",
          "[ferryd][fault]") {
  const bool killed = GENERATE(true, false);  // SIGKILL from outside, or _exit inside the handler
  INFO((killed ? "worker killed with SIGKILL" : "worker calls _exit in its handler"));
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "600"});
  std::vector<std::string> doomed_flags{"--prefetch", "1", "--heartbeat-ms", "100"};
  if (killed) {
    doomed_flags.insert(doomed_flags.end(), {"--sleep-ms", "60000"});
  } else {
    doomed_flags.insert(doomed_flags.end(), {"--exit-after", "1"});
  }
  auto doomed = start_worker(port, "jobs", doomed_flags);
  const produced sent = produce_all(port, "jobs", 10, {}, {ferryd.get(), doomed.get()});

  REQUIRE(wait_for([&] { return !events_of(*doomed, "begin").empty(); }, 10s, {ferryd.get(), doomed.get()}));
  const std::string victim = events_of(*doomed, "begin").front().id;
  if (killed) doomed->kill(SIGKILL);
  REQUIRE(wait_exit(*doomed, 10s, {ferryd.get()}).value_or(-1) == (killed ? 128 + SIGKILL : 3));

  auto rescuer = start_worker(port, "jobs", {"--heartbeat-ms", "100"});
  raw_client admin(endpoint(port));
  const bool done =
      wait_for([&] { return depth_of(admin, "jobs") == 0; }, 20s, {ferryd.get(), rescuer.get()});
  INFO("ferryd stderr:\n" << ferryd->err() << "\nrescuer stdout:\n" << rescuer->out());
  REQUIRE(done);
  const auto handled = events_of(*rescuer, "handled");
  check_each_handled_once(sent.confirmed, handled);
  const auto it =
      std::find_if(handled.begin(), handled.end(), [&](const event& e) { return e.id == victim; });
  REQUIRE(it != handled.end());
  CHECK(it->attempt == 2);
  CHECK(contains(ferryd->err(), "silent for over 600 ms"));
  CHECK(stats_of(admin, "jobs")["redelivered"] == 1);
}

namespace {

// After a stalled worker's late answer for a message now redelivered elsewhere: the message must still be
// in flight with the second worker (nothing settled by the late answer), and be settled by the second
// worker's ack alone; later messages flow to both workers, the second one handles none twice, none is lost.
void check_second_delivery_counts(raw_client& admin, const std::string& queue, const std::string& id,
                                  child_process& ferryd, child_process& first, child_process& second) {
  INFO("ferryd stderr:\n"
       << ferryd.err() << "\nfirst worker:\n"
       << first.out() << "\nsecond worker:\n"
       << second.out());
  CHECK(events_of(second, "handled").empty());  // still busy with it, so the checks below mean something
  counters c = stats_of(admin, queue);
  CHECK(c["depth"] == 1);
  CHECK(c["in_flight"] == 1);
  CHECK(c["acked"] == 0);

  REQUIRE(wait_for([&] { return depth_of(admin, queue) == 0; }, 10s, {&ferryd, &first, &second}));
  REQUIRE(events_of(second, "handled").size() == 1);
  CHECK(events_of(second, "handled").front().id == id);
  c = stats_of(admin, queue);
  CHECK(c["acked"] == 1);
  CHECK(c["delivered"] == 2);  // no third delivery

  const produced more = produce_all(port_of(admin), queue, 10, {"--start", "1"}, {&ferryd, &first, &second});
  REQUIRE(wait_for([&] { return depth_of(admin, queue) == 0; }, 20s, {&ferryd, &first, &second}));
  std::map<std::string, int> second_times;
  std::set<std::string> seen;
  for (const auto& e : events_of(second, "handled")) {
    ++second_times[e.id];
    seen.insert(e.id);
  }
  for (const auto& e : events_of(first, "handled")) seen.insert(e.id);
  for (const auto& [sid, n] : second_times) {
    INFO("second worker handled " << sid << " " << n << " times");
    CHECK(n == 1);
  }
  for (const auto& [cid, payload] : more.confirmed) {
    INFO("message " << cid << " (payload " << payload << ") was never handled");
    CHECK(seen.count(cid) == 1);
  }
  c = stats_of(admin, queue);
  CHECK(c["acked"] == 11);
  CHECK(c["depth"] == 0);
}

}  // namespace

TEST_CASE(
    "a worker stalled with SIGSTOP past its lease loses the message to another worker and its late ack is "
    "stale",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  // A lease far shorter than the heartbeat timeout: the stalled worker stays subscribed, its lease runs out.
  auto ferryd = start_ferryd(
      dir.path(), port, {"--lease-ms", "1000", "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "10000"});
  raw_client admin(endpoint(port));
  auto first = start_worker(port, "slow", {"--prefetch", "1", "--sleep-ms", "150", "--heartbeat-ms", "100"});
  const produced one = produce_all(port, "slow", 1, {}, {ferryd.get(), first.get()});
  const std::string id = one.confirmed.begin()->first;

  REQUIRE(wait_for([&] { return !events_of(*first, "begin").empty(); }, 10s, {ferryd.get(), first.get()}));
  first->kill(SIGSTOP);
  REQUIRE(wait_for([&] { return stats_of(admin, "slow")["expired"] >= 1; }, 10s, {ferryd.get()}));

  // The second worker takes its time, within its own lease, so the first one's late ack arrives meanwhile.
  auto second = start_worker(port, "slow", {"--prefetch", "1", "--sleep-ms", "600", "--heartbeat-ms", "100"});
  REQUIRE(wait_for([&] { return !events_of(*second, "begin").empty(); }, 10s, {ferryd.get(), second.get()}));
  CHECK(events_of(*second, "begin").front().id == id);
  CHECK(events_of(*second, "begin").front().attempt == 2);

  first->kill(SIGCONT);
  REQUIRE(wait_for([&] { return !events_of(*first, "handled").empty(); }, 10s,
                   {ferryd.get(), first.get(), second.get()}));
  REQUIRE(wait_for([&] { return stats_of(admin, "slow")["stale_acks"] >= 1; }, 10s,
                   {ferryd.get(), first.get(), second.get()}));
  check_second_delivery_counts(admin, "slow", id, *ferryd, *first, *second);
  CHECK(stats_of(admin, "slow")["stale_acks"] == 1);
}

TEST_CASE(
    "a worker stalled with SIGSTOP past the heartbeat timeout loses its message and its late ack settles "
    "nothing",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "600"});
  raw_client admin(endpoint(port));
  auto first =
      start_worker(port, "stalled", {"--prefetch", "1", "--sleep-ms", "200", "--heartbeat-ms", "100"});
  const produced one = produce_all(port, "stalled", 1, {}, {ferryd.get(), first.get()});
  const std::string id = one.confirmed.begin()->first;

  REQUIRE(wait_for([&] { return !events_of(*first, "begin").empty(); }, 10s, {ferryd.get(), first.get()}));
  first->kill(SIGSTOP);
  REQUIRE(wait_for([&] { return contains(ferryd->err(), "silent for over 600 ms"); }, 10s, {ferryd.get()}));

  auto second =
      start_worker(port, "stalled", {"--prefetch", "1", "--sleep-ms", "800", "--heartbeat-ms", "100"});
  REQUIRE(wait_for([&] { return !events_of(*second, "begin").empty(); }, 10s, {ferryd.get(), second.get()}));
  CHECK(events_of(*second, "begin").front().id == id);
  CHECK(events_of(*second, "begin").front().attempt == 2);

  // Its ack is answered "not consuming", and it subscribes again: a third CONSUME in ferryd's log.
  first->kill(SIGCONT);
  auto consumes = [&] {
    std::size_t n = 0;
    for (std::size_t at = ferryd->err().find("on queue stalled (prefetch"); at != std::string::npos;
         at = ferryd->err().find("on queue stalled (prefetch", at + 1))
      ++n;
    return n;
  };
  REQUIRE(wait_for([&] { return !events_of(*first, "handled").empty() && consumes() >= 3; }, 10s,
                   {ferryd.get(), first.get(), second.get()}));
  check_second_delivery_counts(admin, "stalled", id, *ferryd, *first, *second);
}

// ---- poison messages --------------------------------------------------------------------------------------

namespace {

// A message that always fails: a first worker makes attempt 1 (fails) and dies inside attempt 2, ferryd is
// stopped with `stop_signal` and restarted, a second worker makes the remaining attempts. Exactly
// max_attempts deliveries in all, then the message is in <queue>.dlq with the last error.
void poison_across_restart(int stop_signal) {
  constexpr unsigned max_attempts = 5;
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  const std::vector<std::string> flags{"--max-attempts",         std::to_string(max_attempts),
                                       "--heartbeat-ms",         "100",
                                       "--heartbeat-timeout-ms", "600"};
  auto ferryd = start_ferryd(dir.path(), port, flags);
  const produced sent = produce_all(port, "orders", 1, {"--prefix", "poison-"}, {ferryd.get()});
  const std::string id = sent.confirmed.begin()->first;

  auto first =
      start_worker(port, "orders",
                   {"--fail-on", "poison", "--exit-after", "2", "--prefetch", "1", "--heartbeat-ms", "100"});
  REQUIRE(wait_exit(*first, 15s, {ferryd.get()}).value_or(-1) == 3);

  ferryd->kill(stop_signal);
  const auto code = wait_exit(*ferryd, 15s);
  {
    INFO("ferryd stderr:\n" << ferryd->err());
    if (stop_signal == SIGTERM) {
      CHECK(code.value_or(-1) == 0);
    } else {
      CHECK(code.value_or(-1) == 128 + SIGKILL);
    }
  }
  if (!code) ferryd->kill(SIGKILL);
  (void)ferryd->wait(10s);
  ferryd = start_ferryd(dir.path(), port, flags);

  auto second =
      start_worker(port, "orders", {"--fail-on", "poison", "--prefetch", "1", "--heartbeat-ms", "100"});
  raw_client admin(endpoint(port));
  const bool dead_lettered =
      wait_for([&] { return !dlq_list(admin, "orders").empty(); }, 20s, {ferryd.get(), second.get()});
  INFO("first worker:\n"
       << first->out() << "\nsecond worker:\n"
       << second->out() << "\nferryd stderr:\n"
       << ferryd->err());
  REQUIRE(dead_lettered);

  // The attempts the handlers saw: 1..max_attempts, each once, across both ferryd runs.
  std::vector<unsigned> attempts;
  for (auto* w : {first.get(), second.get()})
    for (const auto& e : events_of(*w, "begin")) {
      CHECK(e.id == id);
      attempts.push_back(e.attempt);
    }
  std::sort(attempts.begin(), attempts.end());
  std::vector<unsigned> expected(max_attempts);
  for (unsigned i = 0; i < max_attempts; ++i) expected[i] = i + 1;
  CHECK(attempts == expected);

  auto letters = dlq_list(admin, "orders");
  REQUIRE(letters.size() == 1);
  CHECK(letters[0].id == id);
  CHECK(letters[0].payload == "poison-0");
  CHECK(letters[0].headers.count("ferry-attempts") == 1);
  CHECK(letters[0].headers.count("ferry-dead-letter-reason") == 1);
  CHECK(letters[0].headers["ferry-attempts"] == std::to_string(max_attempts));
  CHECK(contains(letters[0].headers["ferry-dead-letter-reason"], "payload matched --fail-on poison"));
  counters c = stats_of(admin, "orders");
  CHECK(c["depth"] == 0);
  CHECK(c["dead_lettered"] == 1);
  CHECK(c["delivered"] == max_attempts - 2);  // this run made only the remaining attempts
  CHECK(stats_of(admin, "orders.dlq")["depth"] == 1);
}

}  // namespace

TEST_CASE(
    "a poison message gets exactly --max-attempts deliveries across a SIGKILL restart and then goes to the "
    "DLQ",
    "[ferryd][fault]") {
  poison_across_restart(SIGKILL);
}

TEST_CASE(
    "a poison message gets exactly --max-attempts deliveries across a SIGTERM restart and then goes to the "
    "DLQ",
    "[ferryd][fault]") {
  poison_across_restart(SIGTERM);
}

TEST_CASE(
    "a message its handler rejects goes to the DLQ after one attempt and stays there across a SIGKILL "
    "restart",
    "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--max-attempts", "5"});
  const produced good = produce_all(port, "mixed", 10, {}, {ferryd.get()});
  const produced bad = produce_all(port, "mixed", 1, {"--prefix", "refuse-me-"}, {ferryd.get()});
  const std::string id = bad.confirmed.begin()->first;
  auto worker = start_worker(port, "mixed", {"--reject-on", "refuse-me"});
  raw_client admin(endpoint(port));
  REQUIRE(wait_for([&] { return depth_of(admin, "mixed") == 0; }, 20s, {ferryd.get(), worker.get()}));
  check_each_handled_once(good.confirmed, events_of(*worker, "handled"));
  CHECK(events_of(*worker, "rejected").size() == 1);

  ferryd->kill(SIGKILL);
  REQUIRE(ferryd->wait(10s).value_or(-1) == 128 + SIGKILL);
  ferryd = start_ferryd(dir.path(), port);
  raw_client after(endpoint(port));
  auto letters = dlq_list(after, "mixed");
  INFO("ferryd stderr:\n" << ferryd->err());
  REQUIRE(letters.size() == 1);
  CHECK(letters[0].id == id);
  CHECK(letters[0].payload == "refuse-me-0");
  CHECK(letters[0].headers["ferry-attempts"] == "1");
  CHECK(contains(letters[0].headers["ferry-dead-letter-reason"], "payload matched --reject-on refuse-me"));
  CHECK(depth_of(after, "mixed") == 0);  // nothing comes back to the source queue after the restart
}

// ---- damaged files ----------------------------------------------------------------------------------------

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

    auto ferryd = start_ferryd(copy, port);
    if (cut < last.size) {
      INFO("ferryd stderr:\n" << ferryd->err());
      CHECK(contains(ferryd->err(), segment.filename().string() + ": torn tail of " +
                                        std::to_string(last.size - cut) + " bytes at offset " +
                                        std::to_string(last.offset) + " truncated"));
    }
    CHECK(fs::file_size(segment) == last.offset);

    auto worker = start_worker(port, "torn", {"--no-dedup"});
    raw_client admin(endpoint(port));
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
  raw_client admin(endpoint(port));
  CHECK(depth_of(admin, "damaged") == 39);
  // Messages stored after the repair, behind the damaged region in the same segment, are delivered too.
  const produced after = produce_all(port, "damaged", 5, {"--start", "1000"}, {ferryd.get()});
  kept.insert(after.confirmed.begin(), after.confirmed.end());
  const auto handled = drain(port, "damaged", {ferryd.get()}, 10s);
  INFO("ferryd stderr:\n" << ferryd->err());
  check_each_handled_once(kept, handled);
}

// ---- a full disk ------------------------------------------------------------------------------------------

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
        if (!reply || (*reply)[0] != "CONFIRM") return false;
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

// ---- ordering ---------------------------------------------------------------------------------------------

TEST_CASE("per-key order holds across three workers when one of them is killed mid-run", "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--heartbeat-ms", "100", "--heartbeat-timeout-ms", "600"});
  const std::vector<std::string> worker_flags{"--threads",  "2", "--prefetch",     "4",
                                              "--sleep-ms", "2", "--heartbeat-ms", "100"};
  std::vector<std::unique_ptr<child_process>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(start_worker(port, "keyed", worker_flags));
  std::vector<child_process*> all{ferryd.get()};
  for (auto& w : workers) all.push_back(w.get());

  const int total = 2000;
  auto producer = start_producer(port, "keyed", total, {"--key-mod", "10"});
  all.push_back(producer.get());
  std::vector<child_process*> worker_ptrs{workers[0].get(), workers[1].get(), workers[2].get()};
  REQUIRE(wait_for(
      [&] {
        return count_events(worker_ptrs, "handled") >= 500 && !events_of(*workers[1], "handled").empty();
      },
      30s, all));
  workers[1]->kill(SIGKILL);
  REQUIRE(wait_exit(*producer, 60s, all).value_or(-1) == 0);

  raw_client admin(endpoint(port));
  const bool empty = wait_for([&] { return depth_of(admin, "keyed") == 0; }, 60s, all);
  INFO("ferryd stderr:\n" << ferryd->err());
  REQUIRE(empty);

  // First handling of each message: its earliest "begin" on any worker (a redelivered one may begin twice).
  struct first_seen {
    std::int64_t t_ns;
    std::string key;
    long payload;
  };
  std::map<std::string, first_seen> first;
  std::set<long> handled_payloads;
  for (auto* w : worker_ptrs) {
    for (const auto& e : events_of(*w)) {
      if (e.kind == "handled") handled_payloads.insert(std::stol(e.payload));
      if (e.kind != "begin") continue;
      auto [it, fresh] = first.try_emplace(e.id, first_seen{e.t_ns, e.key, std::stol(e.payload)});
      if (!fresh && e.t_ns < it->second.t_ns) it->second.t_ns = e.t_ns;
    }
  }
  std::map<std::string, std::vector<first_seen>> by_key;
  for (const auto& [id, f] : first) by_key[f.key].push_back(f);
  CHECK(by_key.size() == 10);
  for (auto& [key, seq] : by_key) {
    std::sort(seq.begin(), seq.end(),
              [](const first_seen& a, const first_seen& b) { return a.t_ns < b.t_ns; });
    for (std::size_t i = 1; i < seq.size(); ++i) {
      INFO("key " << key << ": payload " << seq[i].payload << " first handled after payload "
                  << seq[i - 1].payload);
      REQUIRE(seq[i].payload > seq[i - 1].payload);
    }
  }
  CHECK(handled_payloads.size() == static_cast<std::size_t>(total));
  CHECK(contains(ferryd->err(), "silent for over 600 ms"));
}

// ---- bad input --------------------------------------------------------------------------------------------

TEST_CASE("ferryd answers malformed and unknown frames with errors and keeps serving", "[ferryd][fault]") {
  ferry::test::temp_dir dir("ferryd-fault");
  const int port = ferry::test::free_port();
  auto ferryd = start_ferryd(dir.path(), port, {"--max-message-bytes", "1024"});
  raw_client c(endpoint(port));
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
    REQUIRE(reply);
    REQUIRE(!reply->empty());
    CHECK((*reply)[0] == bad.verb);
    const std::size_t at = bad.verb == "ERROR" ? 1 : 2;
    REQUIRE(reply->size() > at);
    CHECK((*reply)[at] == bad.code);
    if (bad.code == "too_large") CHECK((*reply)[1] == std::string(m.id().view()));
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
  CHECK(stats_of(c, "q")["ferryd.rejected_frames"] > 0);
  // A normal round trip still works.
  auto worker = start_worker(port, "q", {"--no-dedup"});
  const produced sent = produce_all(port, "q", 20, {}, {ferryd.get(), worker.get()});
  const bool empty = wait_for([&] { return depth_of(c, "q") == 0; }, 20s, {ferryd.get(), worker.get()});
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
  expect("heartbeat timeout not above the interval",
         ferryd_args(data, {"--heartbeat-ms", "1000", "--heartbeat-timeout-ms", "500"}), 2, "must be larger");
  expect("no data dir", {ferryd_program, "--bind", endpoint(port)}, 2, "--data-dir");
}
