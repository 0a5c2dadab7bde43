// ferry_test_producer: a ferry::producer the fault tests run against a ferryd they kill and restart. It
// reports every outcome on stdout, one flushed line each, so nothing it saw is lost if it is killed:
//
//   confirmed <id-hex> <payload>        ferryd has the message on disk
//   refused   <id-hex> <code> <payload> ferryd did not store it
//   done sent=N confirmed=N refused=N   after flush; exit 0 when all were confirmed, 1 when some were
//                                       refused, 2 when some were still unconfirmed at --flush-timeout-ms
//
// Message i (from --start) has payload "<prefix><i>", padded with '#' to --payload-bytes, and key
// "k<i % key-mod>" with --key-mod, or the (i % n)-th of a comma-separated --keys list.
//
// Flags: --forwarder EP --queue Q --count N [--start S] [--prefix TEXT] [--key-mod K | --keys a,b,c]
//        [--rate MSGS_PER_S] [--payload-bytes B] [--confirm-timeout-ms MS] [--heartbeat-ms MS]
//        [--flush-timeout-ms MS] [--max-in-flight N]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ferry/ferry.hpp"
#include "helper_args.hpp"

namespace {

std::mutex out_mutex;

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string part; std::getline(in, part, sep);)
    if (!part.empty()) out.push_back(part);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const ferry::test_helpers::args a(
      argc, argv,
      {"--forwarder", "--queue", "--count", "--start", "--prefix", "--key-mod", "--keys", "--rate",
       "--payload-bytes", "--confirm-timeout-ms", "--heartbeat-ms", "--flush-timeout-ms", "--max-in-flight"},
      {"--topic"});
  const bool to_topic = a.has("--topic");  // --queue names a durable topic: publish instead of send
  const std::string forwarder = a.required("--forwarder");
  ferry::producer_options o;
  o.confirm_timeout = std::chrono::milliseconds(a.number("--confirm-timeout-ms", 2000));
  o.heartbeat_interval = std::chrono::milliseconds(a.number("--heartbeat-ms", 200));
  o.max_in_flight = a.number("--max-in-flight", 10'000);
  // As long as it takes (the library's default is 30 s): the fault tests' own deadlines bound a run, and a
  // full window while ferryd restarts must not end it.
  o.send_timeout = std::chrono::milliseconds(-1);
  const std::string queue = a.required("--queue");
  const std::uint64_t count = a.number("--count", 0);
  const std::uint64_t start = a.number("--start", 0);
  const std::string prefix = a.text("--prefix");
  const std::uint64_t key_mod = a.number("--key-mod", 0);
  const std::vector<std::string> keys = split(a.text("--keys"), ',');
  const std::uint64_t rate = a.number("--rate", 0);
  const std::uint64_t payload_bytes = a.number("--payload-bytes", 0);
  const auto flush_timeout = std::chrono::milliseconds(a.number("--flush-timeout-ms", 60'000));

  std::unordered_map<ferry::message_id, std::string> payloads;  // guarded by out_mutex
  std::atomic<std::uint64_t> confirmed{0}, refused{0};
  auto payload_of = [&](const ferry::message_id& id) {
    const auto it = payloads.find(id);
    return it == payloads.end() ? std::string("?") : it->second;
  };

  ferry::context ctx;
  ferry::producer p(
      ctx, forwarder, o,
      [&](const ferry::message_id& id) {
        std::lock_guard lock(out_mutex);
        std::printf("confirmed %s %s\n", id.to_hex().c_str(), payload_of(id).c_str());
        std::fflush(stdout);
        ++confirmed;
      },
      [&](const ferry::refusal& r) {
        std::lock_guard lock(out_mutex);
        std::printf("refused %s %s %s\n", r.id.to_hex().c_str(), r.code.c_str(), payload_of(r.id).c_str());
        std::fflush(stdout);
        ++refused;
      });

  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = start; i < start + count; ++i) {
    if (rate > 0)  // pacing, so a test can act while the load is still running
      std::this_thread::sleep_until(t0 + std::chrono::microseconds((i - start) * 1'000'000 / rate));
    std::string payload = prefix + std::to_string(i);
    if (payload.size() < payload_bytes) payload.append(payload_bytes - payload.size(), '#');
    ferry::message m(queue, payload);
    if (key_mod > 0) m.set_key("k" + std::to_string(i % key_mod));
    if (!keys.empty()) m.set_key(keys[i % keys.size()]);
    {
      // Known before send(): the confirmation may arrive before send() returns.
      std::lock_guard lock(out_mutex);
      payloads.emplace(m.id(), payload.substr(0, payload.find('#')));
    }
    const ferry::send_status st = to_topic ? p.publish(m) : p.send(m);
    if (st != ferry::send_status::ok) {
      std::lock_guard lock(out_mutex);
      std::printf("send-failed %llu %s\n", static_cast<unsigned long long>(i),
                  std::string(to_string(st)).c_str());
      std::fflush(stdout);
      return 2;
    }
  }
  const bool settled = p.flush(flush_timeout);
  {
    std::lock_guard lock(out_mutex);
    std::printf("done sent=%llu confirmed=%llu refused=%llu\n", static_cast<unsigned long long>(count),
                static_cast<unsigned long long>(confirmed.load()),
                static_cast<unsigned long long>(refused.load()));
    std::fflush(stdout);
  }
  if (!settled) return 2;
  return refused.load() == 0 ? 0 : 1;
}
