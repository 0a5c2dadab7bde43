// Durable jobs through ferryd: a producer whose every job is confirmed once it is on ferryd's disk, and a
// consumer of 2 threads that acknowledges each job it handled. Job 7 fails on its first attempt and asks to
// be retried in 300 ms (ferry::retry_message: a delayed retry, ferryd holds it back meanwhile); job 13 is
// rejected and goes to the dead-letter queue; the last job is scheduled for 500 ms after it is stored
// (set_delay: confirmed at once, delivered later). Exit code 0 only when every other job was handled
// exactly once, job 7 not before its delay, the last job not before its time, and job 13 is the one dead
// letter. Failures without a delay of their
// own wait ferryd's --backoff-ms schedule, if it has one (docs/protocol.md, Redelivery back-off).
//
// Needs a running ferryd; the queue is this run's own (jobs-<pid>), so runs do not mix:
//   mkdir -p /tmp/ferryd && ferryd --data-dir /tmp/ferryd &
//   ./jobs [ENDPOINT]          (default tcp://127.0.0.1:5570)
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "ferry/ferry.hpp"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  const std::string forwarder = argc > 1 ? argv[1] : "tcp://127.0.0.1:5570";
  const std::string queue = "jobs-" + std::to_string(::getpid());
  constexpr int jobs = 1000;
  ferry::context ctx;

  // Producing: send() queues a job; flush() waits until ferryd confirmed (or refused) every one.
  ferry::producer producer(ctx, forwarder, {}, {}, [](const ferry::refusal& r) {
    std::fprintf(stderr, "refused: %s: %s\n", r.code.c_str(), r.text.c_str());
  });
  const auto sending = std::chrono::steady_clock::now();
  for (int i = 0; i < jobs; ++i) {
    ferry::message job(queue, "job " + std::to_string(i));
    job.set_header("n", std::to_string(i));
    if (i == jobs - 1) job.set_delay(500ms);  // a reminder: ferryd holds it back
    if (producer.send(job) != ferry::send_status::ok) return 1;
  }
  if (!producer.flush(30s) || producer.stats().confirmed != jobs) {
    std::fprintf(stderr, "ferryd at %s did not confirm every job\n", forwarder.c_str());
    return 1;
  }

  // Consuming: a handler that returns acknowledges its job; one that throws has it delivered again.
  std::mutex mutex;
  std::condition_variable progress;
  std::map<int, int> handled;  // job -> times handled
  std::chrono::steady_clock::time_point job7_failed{}, job7_done{}, last_done{};
  ferry::consumer consumer(ctx, forwarder, queue,
                           [&](ferry::message& job) {
                             const int n = std::stoi(std::string(job.header("n")));
                             if (n == 7 && job.attempt() == 1) {
                               std::lock_guard lock(mutex);
                               job7_failed = std::chrono::steady_clock::now();
                               throw ferry::retry_message(300ms, "payment service busy; retry in 300 ms");
                             }
                             if (n == 13) throw ferry::reject_message("job 13 can never succeed");
                             std::lock_guard lock(mutex);
                             if (n == 7) job7_done = std::chrono::steady_clock::now();
                             if (n == jobs - 1) last_done = std::chrono::steady_clock::now();
                             ++handled[n];
                             progress.notify_all();
                           },
                           {.threads = 2});
  {
    std::unique_lock lock(mutex);
    progress.wait_for(lock, 30s, [&] { return handled.size() == jobs - 1; });
  }
  consumer.stop();

  bool ok = handled.size() == jobs - 1 && handled.count(13) == 0;
  for (const auto& [n, times] : handled) ok = ok && times == 1;
  const auto job7_waited = std::chrono::duration_cast<std::chrono::milliseconds>(job7_done - job7_failed);
  ok = ok && job7_waited >= 300ms;
  const auto last_waited = std::chrono::duration_cast<std::chrono::milliseconds>(last_done - sending);
  ok = ok && last_waited >= 500ms;
  // The dead-letter queue keeps the rejected job with why it got there (once ferryd has it on disk).
  ferry::admin admin(ctx, forwarder);
  ferry::dlq_listing dead = admin.dlq_list(queue);
  for (int tries = 0; dead.messages.empty() && tries < 100; ++tries) {
    std::this_thread::sleep_for(50ms);
    dead = admin.dlq_list(queue);
  }
  ok = ok && dead.messages.size() == 1 && dead.messages[0].payload == "job 13";
  const ferry::consumer_stats st = consumer.stats();
  std::printf(
      "%d jobs confirmed; %zu handled once, %llu failed and redelivered (job 7 after %lld ms), the "
      "scheduled one after %lld ms, %zu in %s",
      jobs, handled.size(), static_cast<unsigned long long>(st.failed),
      static_cast<long long>(job7_waited.count()), static_cast<long long>(last_waited.count()),
      dead.messages.size(), dead.queue.c_str());
  if (!dead.messages.empty())
    std::printf(" (%s)", dead.messages[0].headers.at("ferry-dead-letter-reason").c_str());
  std::printf("\n%s\n", ok ? "OK" : "FAILED");
  (void)admin.dlq_purge(queue);
  return ok ? 0 : 1;
}
