// bench_thr: throughput from one sender to one receiver, in the spirit of libzmq's local_thr/remote_thr.
//
// The same run measures ferry and the raw cppzmq programs it is compared with:
//   --impl ferry  pusher -> worker_pool, or publisher -> subscriber, in wire v2: one frame per message
//                 (topic 00 block), two from 32 KiB payloads (the split form: the payload frame moved, not
//                 copied); with --batch N, send_batch / publish_batch pack N messages into one frame
//   --impl raw1   raw PUSH -> PULL / XPUB -> SUB, one payload frame per message (what a raw ZeroMQ user
//                 sends): the headline baseline, never batched
//   --impl raw3   raw sockets moving three frames per message (topic, envelope, payload: wire v1's shape,
//                 what ferry sent before v2), kept so the ratios stay comparable with earlier runs
//
// The receiver binds the data endpoint and a control endpoint (REP) and prints a "ready" line with both; the
// sender connects, sends --count messages, then asks the receiver over the control socket whether it is done
// and waits for the answer, so it never exits while messages are still in flight (linger alone loses the
// tail of an ipc stream, see DESIGN.md). The receiver times its first to its last message and prints one
// JSON line; `frames_per_msg` there is what crossed the socket (ferry: counted by the receiver). Pub/sub
// never drops here: the publisher waits for the subscription before sending and blocks at the high-water
// mark (ferry when_full::block, raw XPUB_NODROP), so the rate counts delivered messages.

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "common.hpp"
#include "ferry/ferry.hpp"

namespace {

using bench::clock;

struct options {
  std::string role = "both";
  std::string pattern = "pushpull";
  std::string impl = "ferry";
  std::string transport = "tcp";
  std::size_t size = 256;
  std::uint64_t count = 1'000'000;
  std::size_t batch = 1;  // ferry: messages per send_batch / publish_batch call (1: send / publish)
  std::string endpoint;
  std::string control;
  int timeout_s = 120;

  [[nodiscard]] bool pubsub() const { return pattern == "pubsub"; }
  [[nodiscard]] std::chrono::milliseconds timeout() const { return std::chrono::seconds(timeout_s); }
};

using ready_fn = std::function<void(const std::string& endpoint, const std::string& control)>;

// Counts what arrived and remembers when the first and the last message did.
struct tally {
  std::uint64_t expected;
  std::size_t size;
  std::uint64_t received = 0;
  std::uint64_t wrong_size = 0;
  clock::time_point first{}, last{};

  // Returns true for the last expected message. Reads the clock only for the first and the last, so the
  // measurement adds nothing per message.
  bool add(std::size_t payload_size) {
    if (received == 0) first = clock::now();
    if (payload_size != size) ++wrong_size;
    if (++received < expected) return false;
    last = clock::now();
    return true;
  }
};

bench::json_line describe(const options& o, const char* role) {
  bench::json_line j;
  j.add("bench", "thr")
      .add("role", role)
      .add("pattern", o.pattern)
      .add("impl", o.impl)
      .add("transport", o.transport)
      .add("size", static_cast<std::uint64_t>(o.size))
      .add("count", o.count)
      .add("batch", static_cast<std::uint64_t>(o.batch));
  return j;
}

// ZeroMQ frames per message. Raw: fixed by the program. ferry: from what it counted, `v2` frames (a split
// message's two frames count once there) and `v1` frame sets of three, over `messages`.
double frames_per_msg(const options& o, std::uint64_t v2, std::uint64_t v1, std::uint64_t messages) {
  if (o.impl != "ferry") return o.impl == "raw1" ? 1.0 : 3.0;
  if (messages == 0) return 0.0;
  const bool split = o.size >= ferry::wire_options{}.split_payload;
  return static_cast<double>(v2 * (split ? 2 : 1) + v1 * 3) / static_cast<double>(messages);
}

// --- receiving side ---------------------------------------------------------------------------------

// Raw receive loop: recv blocks, up to the timeout per message.
void receive_raw(zmq::socket_t& socket, const options& o, tally& t) {
  zmq::message_t topic, envelope, payload;
  const bool three = o.impl == "raw3";
  while (t.received < t.expected) {
    if (three) {
      if (!socket.recv(topic)) return;
      if (!topic.more()) throw std::runtime_error("raw3 receiver: got a 1-frame message");
      (void)socket.recv(envelope);
    }
    if (!socket.recv(payload)) return;
    if (payload.more()) throw std::runtime_error("receiver: more frames than expected");
    t.add(payload.size());
  }
}

bench::json_line run_receiver(ferry::context& ctx, const options& o, const ready_fn& ready) {
  zmq::socket_t control(ctx.zmq(), zmq::socket_type::rep);
  control.set(zmq::sockopt::linger, 1000);
  const std::string control_ep = ferry::bind(control, o.control);
  tally t{o.count, o.size};
  ferry::receive_stats stats;
  const ferry::endpoints where{{o.endpoint}, {}};
  std::string data_ep;
  double cpu_start = 0, cpu_end = 0;
  const ready_fn announce = [&](const std::string& ep, const std::string& ctl) {
    cpu_start = bench::process_cpu_ns();
    ready(ep, ctl);
  };

  if (o.impl == "ferry") {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    auto handler = [&](ferry::message& msg) {
      if (t.add(msg.payload().size())) {
        std::lock_guard lock(mutex);
        done = true;
        cv.notify_all();
      }
    };
    std::optional<ferry::worker_pool> pool;
    std::optional<ferry::subscriber> sub;
    if (o.pubsub()) {
      sub.emplace(ctx, where, std::vector<std::string>{""}, handler);
      data_ep = sub->bound().at(0);
    } else {
      pool.emplace(ctx, where, handler);
      data_ep = pool->bound().at(0);
    }
    announce(data_ep, control_ep);
    {
      std::unique_lock lock(mutex);
      cv.wait_for(lock, o.timeout(), [&] { return done; });
    }
    cpu_end = bench::process_cpu_ns();
    // stop() joins the handler thread, so `t` is safe to read afterwards.
    if (sub) {
      sub->stop();
      stats = sub->stats();
    } else {
      pool->stop();
      stats = pool->stats();
    }
  } else {
    zmq::socket_t data(ctx.zmq(), o.pubsub() ? zmq::socket_type::sub : zmq::socket_type::pull);
    if (o.pubsub()) data.set(zmq::sockopt::subscribe, "");
    data.set(zmq::sockopt::rcvtimeo, static_cast<int>(o.timeout().count()));
    data_ep = ferry::bind(data, o.endpoint);
    announce(data_ep, control_ep);
    receive_raw(data, o, t);
    cpu_end = bench::process_cpu_ns();
  }

  // The sender's end-of-stream request: answering it lets the sender exit knowing everything arrived.
  control.set(zmq::sockopt::rcvtimeo, static_cast<int>(o.timeout().count()));
  zmq::message_t request;
  const bool sender_done = t.received == t.expected && control.recv(request).has_value();
  if (sender_done) (void)control.send(zmq::str_buffer("ok"), zmq::send_flags::none);
  bench::remove_ipc_file(data_ep);
  bench::remove_ipc_file(control_ep);

  const double seconds = t.received == t.expected ? bench::seconds_between(t.first, t.last) : 0.0;
  const bool ok = sender_done && t.wrong_size == 0 && stats.malformed == 0 && stats.gaps == 0;
  auto j = describe(o, "recv");
  j.add("ok", ok).add("received", t.received);
  if (!ok) {
    j.add("error", t.received < t.expected ? "timed out before every message arrived"
                   : !sender_done          ? "the sender never reported the end of its stream"
                                           : "payloads of the wrong size, malformed or missing messages");
  }
  j.add("seconds", seconds)
      .add("msgs_per_s", seconds > 0 ? static_cast<double>(t.received) / seconds : 0.0)
      .add("mb_per_s", seconds > 0 ? static_cast<double>(t.received * o.size) / seconds / 1e6 : 0.0)
      .add("cpu_ns_per_msg", (cpu_end - cpu_start) / static_cast<double>(o.count))
      .add("frames_per_msg", frames_per_msg(o, stats.v2_frames, stats.v1_frames, t.received));
  if (o.impl == "ferry") {
    j.add("malformed", stats.malformed).add("gaps", stats.gaps).add("dropped", stats.dropped);
    j.add("v2_frames", stats.v2_frames).add("v1_frames", stats.v1_frames);
  }
  if (o.pubsub())
    j.add("delivery", o.impl == "ferry" ? "no drops: when_full::block, subscribed before the first send"
                                        : "no drops: XPUB_NODROP, subscribed before the first send");
  j.add("zmq_version", bench::zmq_version_string());
  return j;
}

// --- sending side -----------------------------------------------------------------------------------

// Waits for a raw XPUB to see the subscriber's subscribe request (the raw twin of wait_for_subscriptions).
void wait_for_raw_subscription(zmq::socket_t& xpub, std::chrono::milliseconds timeout) {
  xpub.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
  zmq::message_t frame;
  for (;;) {
    if (!xpub.recv(frame)) throw std::runtime_error("publisher: no subscriber within the timeout");
    if (frame.size() > 0 && static_cast<const unsigned char*>(frame.data())[0] == 1) return;
  }
}

// Each send_* calls `finished` after its last message, while its socket is still open: closing it first
// could lose the tail still queued in it (libzmq drops what an XPUB holds at close; ipc loses it, see
// DESIGN.md).
using finished_fn = std::function<void()>;

// ferry's sender: every message is built per send, as a program would (the payload copied into it); with
// --batch N a program's vector of N messages goes to send_batch / publish_batch per call. Returns the
// frames the sender counted (pusher_stats / publisher_stats `frames`).
template <typename Sender, typename One, typename Many>
std::uint64_t send_ferry_messages(Sender& sender, const options& o, clock::time_point& start, One send_one,
                                  Many send_many, const finished_fn& finished) {
  const std::string payload(o.size, 'x');
  start = clock::now();
  if (o.batch <= 1) {
    for (std::uint64_t i = 0; i < o.count; ++i) {
      ferry::message msg{std::string(bench::topic), std::string_view(payload)};
      if (send_one(msg) != ferry::send_status::ok) throw std::runtime_error("send failed");
    }
  } else {
    std::vector<ferry::message> batch;
    batch.reserve(o.batch);
    for (std::uint64_t i = 0; i < o.count;) {
      batch.clear();
      for (; batch.size() < o.batch && i < o.count; ++i)
        batch.emplace_back(std::string(bench::topic), std::string_view(payload));
      const ferry::batch_status r = send_many(std::span<ferry::message>(batch));
      if (r.status != ferry::send_status::ok || r.sent != batch.size())
        throw std::runtime_error("batch send failed: " + std::string(ferry::to_string(r.status)));
    }
  }
  finished();
  return sender.stats().frames;
}

std::uint64_t send_ferry(ferry::context& ctx, const options& o, clock::time_point& start,
                         const finished_fn& finished) {
  const ferry::endpoints where{{}, {o.endpoint}};
  if (o.pubsub()) {
    ferry::publisher_options po;
    po.when_full = ferry::when_full::block;
    ferry::publisher pub(ctx, where, po);
    if (!pub.wait_for_subscriptions(1, o.timeout()))
      throw std::runtime_error("publisher: no subscriber within the timeout");
    return send_ferry_messages(
        pub, o, start, [&](ferry::message& m) { return pub.publish(m); },
        [&](std::span<ferry::message> ms) { return pub.publish_batch(ms); }, finished);
  }
  ferry::pusher push(ctx, where);
  return send_ferry_messages(
      push, o, start, [&](ferry::message& m) { return push.send(m); },
      [&](std::span<ferry::message> ms) { return push.send_batch(ms); }, finished);
}

void send_raw(ferry::context& ctx, const options& o, clock::time_point& start, const finished_fn& finished) {
  zmq::socket_t data(ctx.zmq(), o.pubsub() ? zmq::socket_type::xpub : zmq::socket_type::push);
  data.set(zmq::sockopt::linger, 1000);
  if (o.pubsub()) data.set(zmq::sockopt::xpub_nodrop, 1);
  ferry::connect(data, o.endpoint);
  if (o.pubsub()) wait_for_raw_subscription(data, o.timeout());
  const bench::ferry_frames frames = bench::sample_frames(o.size, o.pubsub());
  start = clock::now();
  if (o.impl == "raw3") {
    for (std::uint64_t i = 0; i < o.count; ++i) {
      zmq::message_t topic(frames.topic.data(), frames.topic.size());
      zmq::message_t envelope(frames.envelope.data(), frames.envelope.size());
      zmq::message_t payload(frames.payload.data(), frames.payload.size());
      (void)data.send(topic, zmq::send_flags::sndmore);
      (void)data.send(envelope, zmq::send_flags::sndmore);
      (void)data.send(payload, zmq::send_flags::none);
    }
  } else {
    for (std::uint64_t i = 0; i < o.count; ++i) {
      zmq::message_t payload(frames.payload.data(), frames.payload.size());
      (void)data.send(payload, zmq::send_flags::none);
    }
  }
  finished();
}

bench::json_line run_sender(ferry::context& ctx, const options& o) {
  zmq::socket_t control(ctx.zmq(), zmq::socket_type::req);
  control.set(zmq::sockopt::linger, 0);
  control.set(zmq::sockopt::rcvtimeo, static_cast<int>(o.timeout().count()));
  ferry::connect(control, o.control);

  clock::time_point sent;
  bool acknowledged = false;
  // The receiver answers once it has every message; only then may the data socket close.
  double cpu_start = bench::process_cpu_ns(), cpu_end = 0;
  auto finished = [&] {
    sent = clock::now();
    cpu_end = bench::process_cpu_ns();
    (void)control.send(zmq::str_buffer("done"), zmq::send_flags::none);
    zmq::message_t reply;
    acknowledged = control.recv(reply).has_value();
  };
  clock::time_point start;
  std::uint64_t ferry_frames = 0;
  if (o.impl == "ferry") {
    ferry_frames = send_ferry(ctx, o, start, finished);
  } else {
    send_raw(ctx, o, start, finished);
  }

  const double seconds = bench::seconds_between(start, sent);
  auto j = describe(o, "send");
  j.add("ok", acknowledged);
  if (!acknowledged) j.add("error", "the receiver did not confirm the end of the stream");
  j.add("send_seconds", seconds)
      .add("send_msgs_per_s", seconds > 0 ? static_cast<double>(o.count) / seconds : 0.0)
      .add("cpu_ns_per_msg", (cpu_end - cpu_start) / static_cast<double>(o.count))
      .add("frames_per_msg", frames_per_msg(o, ferry_frames, 0, o.count))
      .add("zmq_version", bench::zmq_version_string());
  return j;
}

void print_ready(const std::string& endpoint, const std::string& control) {
  bench::json_line().add("ready", true).add("endpoint", endpoint).add("control", control).print();
}

int run(options& o) {
  ferry::context ctx(1);
  if (o.role == "recv") {
    const auto j = run_receiver(ctx, o, print_ready);
    j.print();
    return j.ok() ? 0 : 1;
  }
  if (o.role == "send") {
    const auto j = run_sender(ctx, o);
    j.print();
    return j.ok() ? 0 : 1;
  }
  // both: the receiver runs on a thread of this process (the only way for inproc).
  std::promise<std::pair<std::string, std::string>> ready;
  std::optional<bench::json_line> received, sent;
  std::exception_ptr failure;
  std::thread receiver([&] {
    bool announced = false;
    try {
      received = run_receiver(ctx, o, [&](const std::string& ep, const std::string& ctl) {
        announced = true;
        ready.set_value({ep, ctl});
      });
    } catch (...) {
      if (!announced) ready.set_exception(std::current_exception());
      failure = std::current_exception();
    }
  });
  try {
    const auto [ep, ctl] = ready.get_future().get();
    options send_options = o;
    send_options.endpoint = ep;
    send_options.control = ctl;
    sent = run_sender(ctx, send_options);
  } catch (...) {
    // The receiver would wait out its timeout; nothing useful is left to measure.
    receiver.detach();
    throw;
  }
  receiver.join();
  if (failure) std::rethrow_exception(failure);
  received->print();
  if (!sent->ok()) sent->print();  // the driver reads the last line: the sender's error
  return received->ok() && sent->ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferry throughput benchmark: one sender, one receiver, ferry or raw ZeroMQ"};
  options o;
  app.add_option("--role", o.role, "send, recv, or both (threads of one process; required for inproc)")
      ->check(CLI::IsMember({"send", "recv", "both"}));
  app.add_option("--pattern", o.pattern, "pushpull or pubsub")->check(CLI::IsMember({"pushpull", "pubsub"}));
  app.add_option("--impl", o.impl,
                 "ferry, raw1 (raw, one payload frame per message) or raw3 (raw, 3 frames: wire v1's shape)")
      ->check(CLI::IsMember({"ferry", "raw1", "raw3"}));
  app.add_option("--transport", o.transport, "tcp, ipc or inproc (sets the default endpoints)")
      ->check(CLI::IsMember({"tcp", "ipc", "inproc"}));
  app.add_option("--size", o.size, "payload bytes per message");
  app.add_option("--count", o.count, "messages to send")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch,
                 "ferry: messages per send_batch / publish_batch call (1: one send per message); "
                 "the raw baselines always send one message per frame")
      ->check(CLI::PositiveNumber);
  app.add_option("--endpoint", o.endpoint, "data endpoint the receiver binds and the sender connects to");
  app.add_option("--control", o.control, "control endpoint (default: next to --endpoint)");
  app.add_option("--timeout", o.timeout_s, "seconds to wait for peers and messages");
  CLI11_PARSE(app, argc, argv);

  try {
    if (o.endpoint.empty()) {
      o.endpoint = bench::default_endpoint(o.transport, "data");
      if (o.control.empty()) o.control = bench::default_endpoint(o.transport, "ctl");
    } else {
      o.transport = bench::transport_of(o.endpoint);
    }
    if (o.control.empty()) o.control = bench::companion_endpoint(o.endpoint, "ctl");
    if (o.role == "send" &&
        (o.endpoint.find(":*") != std::string::npos || o.control.find(":*") != std::string::npos))
      throw std::invalid_argument(
          "--role send needs the endpoints the receiver printed (--endpoint, --control)");
    if (o.transport == "inproc" && o.role != "both")
      throw std::invalid_argument("inproc works only inside one process: use --role both");
    if (o.batch > 1 && o.impl != "ferry")
      throw std::invalid_argument("--batch is ferry's: the raw baselines send one message per frame");
    return run(o);
  } catch (const std::exception& e) {
    bench::json_line().add("bench", "thr").add("ok", false).add("error", e.what()).print();
    std::_Exit(1);  // a detached receiver thread may still hold sockets; do not wait for it
  }
}
