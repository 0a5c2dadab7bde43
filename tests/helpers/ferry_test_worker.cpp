// ferry_test_worker: a ferry::consumer the fault tests start, stop and kill. It reports every step on stdout,
// one flushed line each, so a test can follow it while it runs and still read what it did after a SIGKILL:
//
//   ready                                                  subscribed; always the first line
//   begin    <id-hex> <key|-> <attempt> <payload> <t-ns>   handler entered (t: CLOCK_MONOTONIC, machine-wide)
//   handled  ...                                           handler returns: the message will be acknowledged
//   failed   ...                                           handler throws (--fail-on): a negative ack
//   rejected ...                                           handler throws reject_message (--reject-on)
//   exiting  ...                                           --exit-after reached inside the handler: _exit(3)
//   stopped                                                after SIGTERM/SIGINT and a graceful stop
//
// Payloads are shown up to 48 bytes, with anything but printable ASCII replaced by '?'. Handlers wait until
// "ready" is out, so a worker that exits after its first deliveries (--exit-after) has still said it.
//
// Flags: --forwarder EP --queue Q [--threads N] [--prefetch P] [--sleep-ms MS] [--fail-on TEXT]
//        [--reject-on TEXT] [--exit-after K] [--no-dedup] [--heartbeat-ms MS] [--topic T [--from-start]]
// With --topic, Q is the name of a durable subscription of topic T (created at its first message with
// --from-start, else at new messages).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "ferry/ferry.hpp"
#include "helper_args.hpp"

namespace {

std::mutex out_mutex;

std::int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string shown(std::string_view bytes) {
  std::string out(bytes.substr(0, 48));
  for (auto& c : out)
    if (c < '!' || c > '~') c = '?';
  return out.empty() ? "-" : out;
}

void report(const char* what, const ferry::message& m, std::int64_t t_ns) {
  const std::string id = m.id().to_hex();
  const std::string key = m.key().empty() ? "-" : shown(m.key());
  const std::string payload = shown(m.payload());
  std::lock_guard lock(out_mutex);
  std::printf("%s %s %s %u %s %lld\n", what, id.c_str(), key.c_str(), m.attempt(), payload.c_str(),
              static_cast<long long>(t_ns));
  std::fflush(stdout);
}

void say(const char* line) {
  std::lock_guard lock(out_mutex);
  std::printf("%s\n", line);
  std::fflush(stdout);
}

// "ready" comes before any handler's line: the consumer may deliver (and a handler reach --exit-after) before
// the main thread returns from wait_ready.
std::mutex ready_mutex;
std::condition_variable ready_cv;
bool ready_said = false;

void say_ready() {
  say("ready");
  std::lock_guard lock(ready_mutex);
  ready_said = true;
  ready_cv.notify_all();
}

void wait_until_ready_said() {
  std::unique_lock lock(ready_mutex);
  ready_cv.wait_for(lock, std::chrono::seconds(30), [] { return ready_said; });
}

}  // namespace

int main(int argc, char** argv) {
  const ferry::test_helpers::args a(argc, argv,
                                    {"--forwarder", "--queue", "--threads", "--prefetch", "--sleep-ms",
                                     "--fail-on", "--reject-on", "--exit-after", "--heartbeat-ms", "--topic"},
                                    {"--no-dedup", "--from-start"});
  const std::string forwarder = a.required("--forwarder");
  const std::string queue = a.required("--queue");
  ferry::consumer_options o;
  o.threads = static_cast<unsigned>(a.number("--threads", 1));
  o.prefetch = static_cast<std::uint32_t>(a.number("--prefetch", 0));
  o.heartbeat_interval = std::chrono::milliseconds(a.number("--heartbeat-ms", 1000));
  if (a.has("--no-dedup")) o.dedup = std::nullopt;
  const auto sleep = std::chrono::milliseconds(a.number("--sleep-ms", 0));
  const std::string fail_on = a.text("--fail-on");
  const std::string reject_on = a.text("--reject-on");
  const std::uint64_t exit_after = a.number("--exit-after", 0);

  // Blocked before any thread starts, so every thread inherits the mask and sigwait below gets the signal.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::atomic<std::uint64_t> calls{0};
  ferry::context ctx;
  auto handler = [&](ferry::message& m) {
    wait_until_ready_said();
    const std::uint64_t n = ++calls;
    report("begin", m, monotonic_ns());
    if (exit_after != 0 && n >= exit_after) {
      report("exiting", m, monotonic_ns());
      std::_Exit(3);  // a crash as far as ferryd can tell: no answer, no CANCEL
    }
    if (sleep.count() > 0) std::this_thread::sleep_for(sleep);  // simulated work
    const std::string_view payload = m.payload();
    if (!fail_on.empty() && payload.find(fail_on) != std::string_view::npos) {
      report("failed", m, monotonic_ns());
      throw std::runtime_error("payload matched --fail-on " + fail_on);
    }
    if (!reject_on.empty() && payload.find(reject_on) != std::string_view::npos) {
      report("rejected", m, monotonic_ns());
      throw ferry::reject_message("payload matched --reject-on " + reject_on);
    }
    report("handled", m, monotonic_ns());
  };
  const std::string topic = a.text("--topic");
  const ferry::start_position start =
      a.has("--from-start") ? ferry::start_position::first() : ferry::start_position::new_messages();
  ferry::consumer c = topic.empty() ? ferry::consumer(ctx, forwarder, queue, handler, o)
                                    : ferry::consumer(ctx, forwarder, {topic, queue, start}, handler, o);
  if (!c.wait_ready(std::chrono::seconds(20))) {
    say("not-ready");
    return 2;
  }
  say_ready();
  int sig = 0;
  sigwait(&stop_signals, &sig);
  c.stop();
  say("stopped");
  return 0;
}
