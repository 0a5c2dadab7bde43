// bench_lat: one-way latency by ping-pong over two push/pull pairs, in the spirit of libzmq's
// local_lat/remote_lat. One-way latency is half the round trip, reported in microseconds at p50, p99 and
// p99.9 after a warm-up.
//
//   --impl ferry  pusher -> worker_pool each way, wire v2 (one frame per message, two from 32 KiB payloads:
//                 the split form); the echo's handler sends the pong and the pinger's handler sends the
//                 next ping, so no extra thread hand-off is measured that a raw program skips
//   --impl raw1   raw PUSH -> PULL each way, one payload frame, blocking recv on the calling thread
//   --impl raw3   the same raw loop moving three frames (topic, envelope, payload: wire v1's shape, what
//                 ferry sent before v2), kept so the ratios stay comparable with earlier runs
//
// The echo binds both endpoints and prints a "ready" line; the pinger connects to both. A ping with an empty
// payload ends the run: the echo answers it and exits.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>

#include "common.hpp"
#include "ferry/ferry.hpp"

namespace {

using bench::clock;

struct options {
  std::string role = "both";
  std::string impl = "ferry";
  std::string transport = "tcp";
  std::size_t size = 256;
  std::uint64_t count = 20'000;
  std::uint64_t warmup = 2'000;
  std::string endpoint;
  std::string reply_endpoint;
  int timeout_s = 120;

  [[nodiscard]] std::chrono::milliseconds timeout() const { return std::chrono::seconds(timeout_s); }
};

// How long the pinger waits for the echo to acknowledge the end of the run; results are in by then.
constexpr std::chrono::milliseconds goodbye_timeout{2000};

using ready_fn = std::function<void(const std::string& endpoint, const std::string& reply_endpoint)>;

// --- echo -------------------------------------------------------------------------------------------

// Returns the number of pings echoed (the goodbye not included).
std::uint64_t echo_ferry(ferry::context& ctx, const options& o, const ready_fn& ready) {
  ferry::pusher pong(ctx, {{o.reply_endpoint}, {}});
  std::mutex mutex;
  std::condition_variable cv;
  bool finished = false;
  bool failed = false;
  std::uint64_t echoed = 0;
  // The pusher is used only by the pool's thread from here on (its start orders the hand-over).
  ferry::worker_pool pool(ctx, {{o.endpoint}, {}}, [&](ferry::message& msg) {
    const bool goodbye = msg.payload().empty();
    const bool sent = pong.send(msg) == ferry::send_status::ok;
    if (!goodbye && sent) {
      ++echoed;
      return;
    }
    std::lock_guard lock(mutex);
    finished = true;
    failed = !sent;
    cv.notify_all();
  });
  ready(pool.bound().at(0), pong.bound().at(0));
  {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, o.timeout(), [&] { return finished; }))
      throw std::runtime_error("echo: the pinger did not finish within the timeout");
  }
  pool.stop();
  if (failed) throw std::runtime_error("echo: sending a pong failed");
  return echoed;
}

std::uint64_t echo_raw(ferry::context& ctx, const options& o, const ready_fn& ready) {
  zmq::socket_t pings(ctx.zmq(), zmq::socket_type::pull);
  zmq::socket_t pongs(ctx.zmq(), zmq::socket_type::push);
  pings.set(zmq::sockopt::rcvtimeo, static_cast<int>(o.timeout().count()));
  pongs.set(zmq::sockopt::linger, 1000);
  const std::string ep = ferry::bind(pings, o.endpoint);
  const std::string reply = ferry::bind(pongs, o.reply_endpoint);
  ready(ep, reply);
  const bool three = o.impl == "raw3";
  zmq::message_t topic, envelope, payload;
  for (std::uint64_t echoed = 0;; ++echoed) {
    if (three) {
      if (!pings.recv(topic)) throw std::runtime_error("echo: no ping within the timeout");
      (void)pings.recv(envelope);
    }
    if (!pings.recv(payload)) throw std::runtime_error("echo: no ping within the timeout");
    const bool goodbye = payload.size() == 0;
    if (three) {
      (void)pongs.send(topic, zmq::send_flags::sndmore);
      (void)pongs.send(envelope, zmq::send_flags::sndmore);
    }
    (void)pongs.send(payload, zmq::send_flags::none);
    if (goodbye) return echoed;
  }
}

bench::json_line run_echo(ferry::context& ctx, const options& o, const ready_fn& ready) {
  std::string bound[2];
  const ready_fn remember = [&](const std::string& ep, const std::string& reply) {
    bound[0] = ep;
    bound[1] = reply;
    ready(ep, reply);
  };
  const std::uint64_t echoed = o.impl == "ferry" ? echo_ferry(ctx, o, remember) : echo_raw(ctx, o, remember);
  for (const auto& ep : bound) bench::remove_ipc_file(ep);
  bench::json_line j;
  j.add("bench", "lat").add("role", "echo").add("impl", o.impl).add("ok", true).add("echoed", echoed);
  return j;
}

// --- pinger -----------------------------------------------------------------------------------------

// Round trips in nanoseconds, warm-up excluded.
std::vector<double> ping_ferry(ferry::context& ctx, const options& o) {
  const std::string payload(o.size, 'x');
  const std::uint64_t total = o.warmup + o.count;
  std::vector<double> rtts;
  rtts.reserve(o.count);
  ferry::pusher ping(ctx, {{}, {o.endpoint}});
  // The first ping leaves from this thread, every later one from the pool's handler: the mutex orders
  // the pusher's hand-over between them (uncontended after the first ping).
  std::mutex mutex;
  std::condition_variable cv;
  bool finished = false;
  bool failed = false;
  std::uint64_t pongs = 0;
  clock::time_point sent_at;
  auto send_ping = [&](std::string_view bytes) {
    sent_at = clock::now();
    ferry::message msg{std::string(bench::topic), bytes};
    return ping.send(msg) == ferry::send_status::ok;
  };
  auto finish = [&](bool ok) {
    finished = true;
    failed = !ok;
    cv.notify_all();
  };
  ferry::worker_pool pool(ctx, {{}, {o.reply_endpoint}}, [&](ferry::message& msg) {
    const auto now = clock::now();
    std::lock_guard lock(mutex);
    if (msg.payload().empty()) return finish(true);  // the echo acknowledged the goodbye
    if (++pongs > o.warmup) rtts.push_back(static_cast<double>((now - sent_at).count()));
    if (!send_ping(pongs < total ? std::string_view(payload) : std::string_view())) finish(false);
  });
  {
    std::unique_lock lock(mutex);
    if (!send_ping(payload)) throw std::runtime_error("pinger: the first ping could not be sent");
    if (!cv.wait_for(lock, o.timeout() + goodbye_timeout, [&] { return finished; }) && pongs < total)
      throw std::runtime_error("pinger: no pong within the timeout");
  }
  pool.stop();
  if (failed) throw std::runtime_error("pinger: sending a ping failed");
  return rtts;
}

std::vector<double> ping_raw(ferry::context& ctx, const options& o) {
  zmq::socket_t pings(ctx.zmq(), zmq::socket_type::push);
  zmq::socket_t pongs(ctx.zmq(), zmq::socket_type::pull);
  pings.set(zmq::sockopt::linger, 1000);
  pongs.set(zmq::sockopt::rcvtimeo, static_cast<int>(o.timeout().count()));
  ferry::connect(pings, o.endpoint);
  ferry::connect(pongs, o.reply_endpoint);
  const bool three = o.impl == "raw3";
  const bench::ferry_frames frames = bench::sample_frames(o.size, false);
  zmq::message_t topic_in, envelope_in, payload_in;
  std::vector<double> rtts;
  rtts.reserve(o.count);
  // One round trip; an empty payload is the goodbye.
  auto round_trip = [&](std::string_view payload) {
    if (three) {
      zmq::message_t topic(frames.topic.data(), frames.topic.size());
      zmq::message_t envelope(frames.envelope.data(), frames.envelope.size());
      (void)pings.send(topic, zmq::send_flags::sndmore);
      (void)pings.send(envelope, zmq::send_flags::sndmore);
    }
    zmq::message_t out(payload.data(), payload.size());
    (void)pings.send(out, zmq::send_flags::none);
    if (three) {
      if (!pongs.recv(topic_in)) return false;
      (void)pongs.recv(envelope_in);
    }
    return pongs.recv(payload_in).has_value();
  };
  const std::uint64_t total = o.warmup + o.count;
  for (std::uint64_t i = 0; i < total; ++i) {
    const auto start = clock::now();
    if (!round_trip(frames.payload)) throw std::runtime_error("pinger: no pong within the timeout");
    const auto end = clock::now();
    if (i >= o.warmup) rtts.push_back(static_cast<double>((end - start).count()));
  }
  pongs.set(zmq::sockopt::rcvtimeo, static_cast<int>(goodbye_timeout.count()));
  (void)round_trip({});  // results are in; a lost goodbye only makes the echo wait for its timeout
  return rtts;
}

// ZeroMQ frames per message: raw fixed by the program, ferry's wire v2 one (two in the split form).
int frames_per_msg(const options& o) {
  if (o.impl == "raw1") return 1;
  if (o.impl == "raw3") return 3;
  return o.size >= ferry::wire_options{}.split_payload ? 2 : 1;
}

bench::json_line run_ping(ferry::context& ctx, const options& o) {
  std::vector<double> rtts = o.impl == "ferry" ? ping_ferry(ctx, o) : ping_raw(ctx, o);
  if (rtts.size() != o.count) throw std::runtime_error("pinger: missing round trips");
  std::sort(rtts.begin(), rtts.end());
  // One-way latency: half the round trip, in microseconds.
  auto one_way_us = [&](double p) { return bench::percentile(rtts, p) / 2e3; };
  const double mean = std::accumulate(rtts.begin(), rtts.end(), 0.0) / static_cast<double>(rtts.size()) / 2e3;
  bench::json_line j;
  j.add("bench", "lat")
      .add("role", "ping")
      .add("pattern", "pushpull")
      .add("impl", o.impl)
      .add("transport", o.transport)
      .add("size", static_cast<std::uint64_t>(o.size))
      .add("frames_per_msg", frames_per_msg(o))
      .add("ok", true)
      .add("round_trips", o.count)
      .add("warmup", o.warmup)
      .add("p50_us", one_way_us(0.5))
      .add("p99_us", one_way_us(0.99))
      .add("p999_us", one_way_us(0.999))
      .add("min_us", rtts.front() / 2e3)
      .add("max_us", rtts.back() / 2e3)
      .add("mean_us", mean)
      .add("zmq_version", bench::zmq_version_string());
  return j;
}

void print_ready(const std::string& endpoint, const std::string& reply) {
  bench::json_line().add("ready", true).add("endpoint", endpoint).add("reply_endpoint", reply).print();
}

int run(const options& o) {
  ferry::context ctx(1);
  if (o.role == "echo") {
    run_echo(ctx, o, print_ready).print();
    return 0;
  }
  if (o.role == "ping") {
    run_ping(ctx, o).print();
    return 0;
  }
  // both: the echo runs on a thread of this process (the only way for inproc).
  std::promise<std::pair<std::string, std::string>> ready;
  std::exception_ptr failure;
  std::thread echo([&] {
    bool announced = false;
    try {
      (void)run_echo(ctx, o, [&](const std::string& ep, const std::string& reply) {
        announced = true;
        ready.set_value({ep, reply});
      });
    } catch (...) {
      if (!announced) ready.set_exception(std::current_exception());
      failure = std::current_exception();
    }
  });
  std::optional<bench::json_line> result;
  try {
    const auto [ep, reply] = ready.get_future().get();
    options ping_options = o;
    ping_options.endpoint = ep;
    ping_options.reply_endpoint = reply;
    result = run_ping(ctx, ping_options);
  } catch (...) {
    echo.detach();  // it would wait out its timeout
    throw;
  }
  echo.join();
  if (failure) std::rethrow_exception(failure);
  result->print();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferry latency benchmark: ping-pong over two push/pull pairs, ferry or raw ZeroMQ"};
  options o;
  app.add_option("--role", o.role, "echo, ping, or both (threads of one process; required for inproc)")
      ->check(CLI::IsMember({"echo", "ping", "both"}));
  app.add_option("--impl", o.impl,
                 "ferry, raw1 (raw, one payload frame per message) or raw3 (raw, 3 frames: wire v1's shape)")
      ->check(CLI::IsMember({"ferry", "raw1", "raw3"}));
  app.add_option("--transport", o.transport, "tcp, ipc or inproc (sets the default endpoints)")
      ->check(CLI::IsMember({"tcp", "ipc", "inproc"}));
  app.add_option("--size", o.size, "payload bytes per message (at least 1)")->check(CLI::PositiveNumber);
  app.add_option("--count", o.count, "measured round trips")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "round trips before measuring");
  app.add_option("--endpoint", o.endpoint, "where the echo receives pings");
  app.add_option("--reply-endpoint", o.reply_endpoint,
                 "where the echo sends pongs (default: next to --endpoint)");
  app.add_option("--timeout", o.timeout_s, "seconds to wait for the peer");
  CLI11_PARSE(app, argc, argv);

  try {
    if (o.endpoint.empty()) {
      o.endpoint = bench::default_endpoint(o.transport, "ping");
      if (o.reply_endpoint.empty()) o.reply_endpoint = bench::default_endpoint(o.transport, "pong");
    } else {
      o.transport = bench::transport_of(o.endpoint);
    }
    if (o.reply_endpoint.empty()) o.reply_endpoint = bench::companion_endpoint(o.endpoint, "pong");
    if (o.role == "ping" &&
        (o.endpoint.find(":*") != std::string::npos || o.reply_endpoint.find(":*") != std::string::npos))
      throw std::invalid_argument(
          "--role ping needs the endpoints the echo printed (--endpoint, --reply-endpoint)");
    if (o.transport == "inproc" && o.role != "both")
      throw std::invalid_argument("inproc works only inside one process: use --role both");
    return run(o);
  } catch (const std::exception& e) {
    bench::json_line().add("bench", "lat").add("ok", false).add("error", e.what()).print();
    std::_Exit(1);  // a detached echo thread may still hold sockets; do not wait for it
  }
}
