// Sends one message through an inproc push -> pull pair using only the installed headers and library.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>

#include "ferry/ferry.hpp"

int main() {
  ferry::context ctx;
  std::mutex mutex;
  std::condition_variable arrived;
  std::string payload;
  ferry::worker_pool pool(ctx, {.bind = {"inproc://package-test"}}, [&](ferry::message& msg) {
    std::lock_guard lock(mutex);
    payload = msg.payload();
    arrived.notify_one();
  });
  ferry::pusher out(ctx, {.connect = {"inproc://package-test"}});
  ferry::message msg("package", "hello from an installed ferry");
  if (out.send(msg) != ferry::send_status::ok) return 1;

  std::unique_lock lock(mutex);
  arrived.wait_for(lock, std::chrono::seconds(10), [&] { return !payload.empty(); });
  std::printf("received: %s\n", payload.c_str());
  return payload == "hello from an installed ferry" ? 0 : 1;
}
