// bench_durable: durable messaging through ferryd, next to a raw cppzmq program doing the bare mechanism.
//
// Roles:
//   produce      --producers N processes (forked, started together) send --count messages in all to
//                --forwarder and wait for every confirm. Reports confirmed messages/s from the first send
//                to the last confirm, across processes.
//   e2e          the same producers, and a consumer in this process that handles and acknowledges every
//                message. Reports handled messages/s and produce-to-handler latency (the send time travels
//                in the payload's first 8 bytes; steady clock, same machine). --rate paces the producers.
//   raw-server   the raw baseline's server (durable_raw_server.cpp). Prints a "ready" line, runs until
//                SIGTERM.
//   replay       the producers store --count messages nobody reads; then one reader takes them all back:
//                with --topic a new durable subscription from the first message (from disk), else a
//                consumer of the queue (raw: of the raw server). Reports handled messages/s from the
//                reader's start to its last message.
//   fsync-probe  4 KiB write + fdatasync in --data-dir, --count times: the disk's sync latency.
//
// --topic (ferry only): the producers publish to a durable topic instead of sending to a queue; e2e reads
// it through --subscriptions durable subscriptions (each gets every message; msgs_per_s is the rate of the
// slowest), and produce first creates --idle-subscriptions subscriptions that nobody reads.
//
// --impl ferry uses ferry::producer / ferry::consumer against a real ferryd (started by bench.py or by
// hand). --impl raw uses plain cppzmq sockets (durable.hpp's protocol) against `bench_durable --role
// raw-server`, which does the minimum a durable queue must do and nothing else:
//   producer: DEALER; one frame per message: 'S', a 16-byte id, the payload; keeps up to --window
//             messages unconfirmed.
//   consumer: DEALER, one thread; handles each delivered message inline and acknowledges each batch.
// This file holds the clients of both, the probe and main.

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "durable.hpp"
#include "ferry/ferry.hpp"
#include "procs.hpp"

namespace {

using bench::mono_ns;
using namespace bench::durable;

// --- producers --------------------------------------------------------------------------------------

bench::producer_result ferry_producer(const options& o, unsigned index, const std::function<void()>& ready) {
  bench::producer_result r;
  ferry::context ctx(1);
  ferry::producer_options po;
  po.max_in_flight = o.window;
  po.send_timeout = o.timeout();  // a stalled ferryd fails the run instead of hanging it
  ferry::producer p(ctx, o.forwarder, po);
  // The producer pings ferryd as soon as it starts; its PONG marks the connection up.
  const auto deadline = bench::clock::now() + o.timeout();
  while (!p.stats().forwarder_up) {
    if (bench::clock::now() > deadline) throw std::runtime_error("ferryd did not answer the producer's ping");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ready();
  const std::uint64_t n = bench::share_of(o.count, o.producers, index);
  std::string payload(o.size, 'x');
  const double cpu0 = bench::process_cpu_ns();
  r.first_send_ns = mono_ns();
  const bench::pacer pace(o.rate / o.producers, r.first_send_ns);
  for (std::uint64_t i = 0; i < n; ++i) {
    bench::stamp_payload(payload.data(), pace.wait_turn(i));
    ferry::message m(std::string(bench::topic), payload);
    const ferry::send_status st = o.topic ? p.publish(m) : p.send(m);
    if (st != ferry::send_status::ok)
      throw std::runtime_error("producer send failed: " + std::string(ferry::to_string(st)));
    ++r.sent;
  }
  if (!p.flush(o.timeout())) throw std::runtime_error("not every message was confirmed within the timeout");
  r.last_confirm_ns = mono_ns();
  r.cpu_ns = bench::process_cpu_ns() - cpu0;
  const ferry::producer_stats st = p.stats();
  r.confirmed = st.confirmed;
  if (st.refused > 0) throw std::runtime_error(std::to_string(st.refused) + " message(s) refused by ferryd");
  return r;
}

// Says hello on a raw DEALER and waits for the answer: the connection is up and, on one connection,
// everything sent before it has been read by the server.
void raw_handshake(zmq::socket_t& s) {
  (void)s.send(zmq::message_t(&verb_hello, 1), zmq::send_flags::none);
  zmq::message_t reply;
  if (!s.recv(reply) || reply.size() != 1 || *static_cast<const char*>(reply.data()) != verb_hello)
    throw std::runtime_error("the raw server did not answer hello");
}

zmq::socket_t raw_dealer(zmq::context_t& ctx, const options& o) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::sndhwm, 0);  // the window bounds what is queued, as in ferry's producer
  s.set(zmq::sockopt::rcvhwm, 0);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, static_cast<int>(o.timeout_s * 1000));
  s.connect(o.forwarder);
  return s;
}

bench::producer_result raw_producer(const options& o, unsigned index, const std::function<void()>& ready) {
  bench::producer_result r;
  zmq::context_t ctx(1);
  zmq::socket_t s = raw_dealer(ctx, o);
  raw_handshake(s);
  ready();
  const std::uint64_t n = bench::share_of(o.count, o.producers, index);
  std::string frame(1 + id_size + o.size, 'x');
  frame[0] = verb_send;
  const std::uint64_t origin = (static_cast<std::uint64_t>(::getpid()) << 20) | index;
  std::memcpy(frame.data() + 1, &origin, 8);
  std::uint64_t confirmed = 0;
  zmq::message_t reply;
  auto take_confirm = [&](zmq::recv_flags flags) {
    if (!s.recv(reply, flags)) return false;
    if (reply.size() > 0 && *static_cast<const char*>(reply.data()) == verb_confirm)
      confirmed += (reply.size() - 1) / id_size;
    return true;
  };
  const double cpu0 = bench::process_cpu_ns();
  r.first_send_ns = mono_ns();
  const bench::pacer pace(o.rate / o.producers, r.first_send_ns);
  while (confirmed < n) {
    while (r.sent < n && r.sent - confirmed < o.window) {
      const std::int64_t stamp = pace.wait_turn(r.sent);
      std::memcpy(frame.data() + 9, &r.sent, 8);
      bench::stamp_payload(frame.data() + 1 + id_size, stamp);
      zmq::message_t m(frame.data(), frame.size());
      (void)s.send(m, zmq::send_flags::none);
      ++r.sent;
      if ((r.sent & 63) == 0)
        while (take_confirm(zmq::recv_flags::dontwait)) {
        }
    }
    if (!take_confirm(zmq::recv_flags::none)) throw std::runtime_error("no confirm within the timeout");
    while (take_confirm(zmq::recv_flags::dontwait)) {
    }
  }
  r.last_confirm_ns = mono_ns();
  r.cpu_ns = bench::process_cpu_ns() - cpu0;
  r.confirmed = confirmed;
  return r;
}

bench::producer_fn producer_for(const options& o) {
  if (o.impl == "ferry")
    return [&o](unsigned i, const std::function<void()>& ready) { return ferry_producer(o, i, ready); };
  return [&o](unsigned i, const std::function<void()>& ready) { return raw_producer(o, i, ready); };
}

bench::json_line describe(const options& o) {
  bench::json_line j;
  j.add("bench", "durable")
      .add("role", o.role)
      .add("impl", o.impl)
      .add("producers", static_cast<std::uint64_t>(o.producers))
      .add("count", o.count)
      .add("size", static_cast<std::uint64_t>(o.size))
      .add("window", static_cast<std::uint64_t>(o.window))
      .add("topic", o.topic)
      .add("subscriptions", static_cast<std::uint64_t>(o.topic ? o.subscriptions : 0))
      .add("idle_subscriptions", static_cast<std::uint64_t>(o.idle_subscriptions));
  return j;
}

// Creates `n` durable subscriptions of the bench topic (from new messages) and leaves them unread.
void make_idle_subscriptions(const options& o, unsigned n) {
  ferry::context ctx(1);
  for (unsigned i = 0; i < n; ++i) {
    ferry::consumer c(ctx, o.forwarder,
                      ferry::topic_subscription{std::string(bench::topic), "idle-" + std::to_string(i), {}},
                      [](ferry::message&) {}, {.prefetch = 1});
    if (!c.wait_ready(std::chrono::seconds(30))) throw std::runtime_error("ferryd did not accept SUBSCRIBE");
  }  // each stops: the subscription stays in ferryd, unread
}

int run_produce(const options& o) {
  bench::producer_group group;
  group.start(o.producers, producer_for(o));
  group.await_ready(std::chrono::seconds(30));
  if (o.idle_subscriptions > 0) make_idle_subscriptions(o, o.idle_subscriptions);
  group.go();
  const bench::producer_totals t = bench::total(group.results(o.timeout()));
  auto j = describe(o);
  const bool ok = t.ok && t.confirmed == o.count;
  j.add("ok", ok);
  if (!ok) j.add("error", t.ok ? "fewer confirms than messages" : t.error);
  bench::add_totals(j, t, o.count);
  j.add("process_model", "one process per producer").add("zmq_version", bench::zmq_version_string());
  j.print();
  return ok ? 0 : 1;
}

// --- end to end ---------------------------------------------------------------------------------------

// What the consumer side measured.
struct consumed {
  std::uint64_t handled = 0;
  std::int64_t last_ns = 0;
  double cpu_ns = 0;
  std::string error;
};

// Counts handled messages and wakes the main thread after the last one.
class finish_line {
 public:
  explicit finish_line(std::uint64_t expected) : expected_(expected) {}
  void handled(std::int64_t now_ns) {
    if (count_.fetch_add(1, std::memory_order_relaxed) + 1 != expected_) return;
    std::lock_guard lock(mutex_);
    last_ns_ = now_ns;
    done_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::seconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return done_; });
  }
  [[nodiscard]] std::uint64_t count() const { return count_.load(); }
  [[nodiscard]] std::int64_t last_ns() {
    std::lock_guard lock(mutex_);
    return last_ns_;
  }

 private:
  std::uint64_t expected_;
  std::atomic<std::uint64_t> count_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::int64_t last_ns_ = 0;
};

// e2e through `o.subscriptions` durable subscriptions of the topic, each of which must handle every message.
consumed ferry_subscribe(const options& o, bench::producer_group& group, bench::latency_log& lat) {
  consumed c;
  ferry::context ctx(1);
  std::vector<std::unique_ptr<finish_line>> finishes;
  std::vector<std::unique_ptr<ferry::consumer>> consumers;
  std::mutex lat_mutex;  // the log is filled from every subscription's handler thread
  ferry::consumer_options co;
  co.threads = o.threads;
  co.prefetch = o.prefetch;
  for (unsigned i = 0; i < o.subscriptions; ++i) {
    auto& finish = *finishes.emplace_back(std::make_unique<finish_line>(o.count));
    consumers.push_back(std::make_unique<ferry::consumer>(
        ctx, o.forwarder,
        ferry::topic_subscription{std::string(bench::topic), "sub-" + std::to_string(i),
                                  ferry::start_position::first()},
        [&finish, &lat, &lat_mutex](ferry::message& m) {
          const std::int64_t now = mono_ns();
          if (m.payload().size() >= bench::min_payload) {
            std::lock_guard lock(lat_mutex);
            lat.add(now - bench::payload_stamp(m.payload().data()));
          }
          finish.handled(now);
        },
        co));
  }
  for (auto& consumer : consumers)
    if (!consumer->wait_ready(std::chrono::seconds(30)))
      throw std::runtime_error("ferryd did not accept SUBSCRIBE");
  const double cpu0 = bench::process_cpu_ns();
  group.go();
  for (auto& finish : finishes)
    if (!finish->wait(o.timeout()))
      c.error = "not every subscription handled every message within the timeout";
  c.cpu_ns = bench::process_cpu_ns() - cpu0;
  for (auto& consumer : consumers) consumer->stop();
  c.handled = o.count;
  for (auto& finish : finishes) {
    c.handled = std::min(c.handled, finish->count());
    c.last_ns = std::max(c.last_ns, finish->last_ns());
  }
  return c;
}

consumed ferry_consume(const options& o, bench::producer_group& group, bench::latency_log& lat) {
  if (o.topic) return ferry_subscribe(o, group, lat);
  consumed c;
  ferry::context ctx(1);
  finish_line finish(o.count);
  ferry::consumer_options co;
  co.threads = o.threads;
  co.prefetch = o.prefetch;
  ferry::consumer consumer(
      ctx, o.forwarder, std::string(bench::topic),
      [&](ferry::message& m) {
        const std::int64_t now = mono_ns();
        if (m.payload().size() >= bench::min_payload) lat.add(now - bench::payload_stamp(m.payload().data()));
        finish.handled(now);
      },
      co);
  if (!consumer.wait_ready(std::chrono::seconds(30)))
    throw std::runtime_error("ferryd did not accept CONSUME");
  const double cpu0 = bench::process_cpu_ns();
  group.go();
  if (!finish.wait(o.timeout())) c.error = "not every message was handled within the timeout";
  c.cpu_ns = bench::process_cpu_ns() - cpu0;
  consumer.stop();
  c.handled = finish.count();
  c.last_ns = finish.last_ns();
  return c;
}

consumed raw_consume(const options& o, const std::function<void()>& start, bench::latency_log& lat) {
  consumed c;
  zmq::context_t ctx(1);
  zmq::socket_t s = raw_dealer(ctx, o);
  std::string consume(1, verb_consume);
  consume.append(reinterpret_cast<const char*>(&o.prefetch), 4);
  (void)s.send(zmq::buffer(consume), zmq::send_flags::none);
  raw_handshake(s);  // the server has the subscription before any producer starts
  const double cpu0 = bench::process_cpu_ns();
  start();
  std::string acks;
  zmq::message_t part;
  while (c.handled < o.count) {
    if (!s.recv(part)) {
      c.error = "not every message was handled within the timeout";
      break;
    }
    if (part.size() != 1 || *static_cast<const char*>(part.data()) != verb_deliver) {
      while (part.more()) (void)s.recv(part);
      continue;
    }
    acks.assign(1, verb_ack);
    while (part.more()) {
      (void)s.recv(part);
      if (part.size() < 8 + id_size + bench::min_payload) continue;
      const auto* p = static_cast<const char*>(part.data());
      const std::int64_t now = mono_ns();
      lat.add(now - bench::payload_stamp(p + 8 + id_size));  // the handler's work
      acks.append(p, 8);
      if (++c.handled == o.count) c.last_ns = now;
    }
    (void)s.send(zmq::buffer(acks), zmq::send_flags::none);
  }
  c.cpu_ns = bench::process_cpu_ns() - cpu0;
  (void)s.send(zmq::message_t(&verb_bye, 1), zmq::send_flags::none);
  raw_handshake(s);  // the server has read the goodbye
  return c;
}

int run_e2e(const options& o) {
  bench::producer_group group;
  group.start(o.producers, producer_for(o));  // before this process starts any thread
  group.await_ready(std::chrono::seconds(30));
  bench::latency_log lat((o.count + o.count / 10) * (o.topic ? o.subscriptions : 1));
  consumed c;
  try {
    c = o.impl == "ferry" ? ferry_consume(o, group, lat)
                          : raw_consume(
                                o, [&group] { group.go(); }, lat);
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  // After a consumer failure the producers may be stuck on a full window: the group kills them.
  const bench::producer_totals t =
      bench::total(c.error.empty() ? group.results(o.timeout()) : std::vector<bench::producer_result>{});
  auto j = describe(o);
  const bool ok = c.error.empty() && t.ok && c.handled >= o.count;
  j.add("ok", ok);
  if (!ok) j.add("error", !c.error.empty() ? c.error : t.error);
  bench::add_e2e_figures(j, t, lat, o.count, ok, c.handled, c.last_ns, c.cpu_ns, o.rate, o.threads);
  j.add("prefetch", static_cast<std::uint64_t>(o.prefetch))
      .add("process_model", "one process per producer, the consumer in another")
      .add("zmq_version", bench::zmq_version_string());
  j.print();
  return ok ? 0 : 1;
}

// --- catch-up replay ---------------------------------------------------------------------------------------

int run_replay(const options& o) {
  bench::producer_group group;
  group.start(o.producers, producer_for(o));
  group.await_ready(std::chrono::seconds(30));
  group.go();
  const bench::producer_totals t = bench::total(group.results(o.timeout()));
  auto j = describe(o);
  if (!t.ok || t.confirmed != o.count) {
    j.add("ok", false).add("error", t.ok ? "fewer confirms than messages" : t.error).print();
    return 1;
  }
  // Everything is stored and nobody has read it: one reader takes it all back (ferry: a new subscription
  // from the first message of the topic, or a consumer of the queue; raw: a consumer of the raw server).
  const double cpu0 = bench::process_cpu_ns();
  const std::int64_t start_ns = mono_ns();
  consumed c;
  if (o.impl == "raw") {
    bench::latency_log unused(o.count + o.count / 10);
    c = raw_consume(
        o, [] {}, unused);
  } else {
    ferry::context ctx(1);
    finish_line finish(o.count);
    ferry::consumer_options co;
    co.threads = o.threads;
    co.prefetch = o.prefetch;
    auto handler = [&](ferry::message&) { finish.handled(mono_ns()); };
    auto consumer =
        o.topic
            ? std::make_unique<ferry::consumer>(ctx, o.forwarder,
                                                ferry::topic_subscription{std::string(bench::topic), "replay",
                                                                          ferry::start_position::first()},
                                                handler, co)
            : std::make_unique<ferry::consumer>(ctx, o.forwarder, std::string(bench::topic), handler, co);
    if (!finish.wait(o.timeout())) c.error = "not every message was handled within the timeout";
    consumer->stop();
    c.handled = finish.count();
    c.last_ns = finish.last_ns();
  }
  const double cpu = bench::process_cpu_ns() - cpu0;
  const double seconds = static_cast<double>(c.last_ns - start_ns) / 1e9;
  const bool ok = c.error.empty() && c.handled >= o.count;
  j.add("ok", ok);
  if (!ok) j.add("error", c.error);
  j.add("handled", c.handled)
      .add("seconds", seconds)
      .add("msgs_per_s", ok && seconds > 0 ? static_cast<double>(o.count) / seconds : 0.0)
      .add("produce_msgs_per_s", t.seconds() > 0 ? static_cast<double>(t.confirmed) / t.seconds() : 0.0)
      .add("client_cpu_ns_per_msg", cpu / static_cast<double>(o.count))
      .add("zmq_version", bench::zmq_version_string());
  j.print();
  return ok ? 0 : 1;
}

// --- disk sync latency ------------------------------------------------------------------------------------

// --- delayed messages (issue 11) ------------------------------------------------------------------------

// `count` messages, each scheduled (ferry-not-before) so that they fall due at --rate a second, starting
// once all are stored; a consumer connected from the start handles them. Lateness: handler's wall clock
// minus the message's due time (the same machine's clock as ferryd's). Early ones (negative) are counted
// apart: they break the guarantee.
int run_delayed(const options& o) {
  using sys = std::chrono::system_clock;
  const double rate = o.rate > 0 ? o.rate : 50'000;
  ferry::context ctx(1);
  std::mutex mutex;
  std::vector<double> late_us;
  late_us.reserve(o.count);
  std::uint64_t early = 0;
  finish_line finish(o.count);
  ferry::consumer_options co;
  co.threads = o.threads;
  co.prefetch = o.prefetch;
  ferry::consumer consumer(
      ctx, o.forwarder, std::string(bench::topic),
      [&](ferry::message& m) {
        const auto now = sys::now();
        std::int64_t due_us = 0;
        std::memcpy(&due_us, m.payload().data(), sizeof due_us);
        const double late = static_cast<double>(
            std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() - due_us);
        {
          std::lock_guard lock(mutex);
          if (late < 0) ++early;
          late_us.push_back(std::max(0.0, late));
        }
        finish.handled(mono_ns());
      },
      co);
  if (!consumer.wait_ready(std::chrono::seconds(30)))
    throw std::runtime_error("ferryd did not accept CONSUME");
  // Time to store them all first (at a conservative 50,000/s), then one second more.
  const auto first_due = std::chrono::time_point_cast<std::chrono::milliseconds>(
      sys::now() + std::chrono::milliseconds(1000 + static_cast<std::int64_t>(o.count / 50)));
  {
    ferry::producer producer(ctx, o.forwarder);
    std::string payload(std::max<std::size_t>(o.size, 8), 'x');
    for (std::uint64_t i = 0; i < o.count; ++i) {
      const auto due = first_due + std::chrono::milliseconds(
                                       static_cast<std::int64_t>(1000.0 * static_cast<double>(i) / rate));
      const std::int64_t due_us =
          std::chrono::duration_cast<std::chrono::microseconds>(due.time_since_epoch()).count();
      std::memcpy(payload.data(), &due_us, sizeof due_us);
      ferry::message m(std::string(bench::topic), payload);
      m.set_not_before(due);
      if (producer.send(m) != ferry::send_status::ok) throw std::runtime_error("send failed");
    }
    if (!producer.flush(o.timeout()) || producer.stats().confirmed != o.count)
      throw std::runtime_error("ferryd did not confirm every scheduled message");
  }
  const bool stored_in_time = sys::now() < first_due;
  const bool done = finish.wait(o.timeout());
  consumer.stop();
  std::lock_guard lock(mutex);
  std::sort(late_us.begin(), late_us.end());
  const double window_s = static_cast<double>(o.count) / rate;
  auto j = describe(o);
  const bool ok = done && early == 0 && late_us.size() >= o.count;
  j.add("ok", ok);
  if (!ok)
    j.add("error", !done ? "not every message was handled within the timeout"
                         : "messages delivered before their time: " + std::to_string(early));
  j.add("due_rate", rate)
      .add("count", o.count)
      .add("stored_before_first_due", stored_in_time)
      .add("p50_us", bench::percentile(late_us, 0.5))
      .add("p99_us", bench::percentile(late_us, 0.99))
      .add("p999_us", bench::percentile(late_us, 0.999))
      .add("max_us", late_us.empty() ? 0.0 : late_us.back())
      .add("early", early)
      .add("window_s", window_s)
      .add("zmq_version", bench::zmq_version_string());
  j.print();
  return ok ? 0 : 1;
}

int run_fsync_probe(const options& o) {
  const std::string path = o.data_dir + "/fsync-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  std::vector<char> block(4096, 'f');
  std::vector<double> us;
  for (std::uint64_t i = 0; i < o.count; ++i) {
    const auto t0 = bench::clock::now();
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i * block.size())) != 4096 ||
        ::fdatasync(fd) != 0)
      throw std::runtime_error("write or fdatasync failed");
    us.push_back(bench::seconds_between(t0, bench::clock::now()) * 1e6);
  }
  ::close(fd);
  ::unlink(path.c_str());
  std::sort(us.begin(), us.end());
  bench::json_line()
      .add("bench", "fsync-probe")
      .add("ok", true)
      .add("count", o.count)
      .add("p50_us", bench::percentile(us, 0.5))
      .add("p99_us", bench::percentile(us, 0.99))
      .add("min_us", us.empty() ? 0.0 : us.front())
      .print();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ferry durable benchmark: producers, end to end and the raw baseline, through ferryd or raw ZeroMQ"};
  options o;
  app.add_option("--role", o.role, "produce, e2e, replay, delayed, raw-server or fsync-probe")
      ->check(CLI::IsMember({"produce", "e2e", "replay", "delayed", "raw-server", "fsync-probe"}));
  app.add_option("--impl", o.impl, "ferry (ferryd) or raw (a raw-server)")
      ->check(CLI::IsMember({"ferry", "raw"}));
  app.add_option("--forwarder", o.forwarder, "ferryd's or the raw server's endpoint");
  app.add_option("--producers", o.producers, "producer processes")->check(CLI::Range(1, 64));
  app.add_option("--count", o.count, "messages in all (fsync-probe: syncs)")->check(CLI::PositiveNumber);
  app.add_option("--size", o.size, "payload bytes (at least 8: the send time)")
      ->check(CLI::Range(8, 1 << 24));
  app.add_option("--window", o.window, "unconfirmed messages per producer (ferry: max_in_flight)")
      ->check(CLI::PositiveNumber);
  app.add_option("--rate", o.rate, "messages/s from all producers together; 0 sends flat out");
  app.add_option("--threads", o.threads, "e2e: consumer handler threads (raw: one thread)")
      ->check(CLI::Range(1, 64));
  app.add_option("--prefetch", o.prefetch, "e2e: consumer credit")->check(CLI::Range(1, 100'000));
  app.add_option("--endpoint", o.endpoint, "raw-server: where to bind");
  app.add_option("--data-dir", o.data_dir, "raw-server, fsync-probe: an existing directory");
  app.add_option("--timeout", o.timeout_s, "seconds a run may take");
  app.add_flag("--backlog", o.backlog, "raw-server: keep messages stored with no consumer attached");
  app.add_flag("--topic", o.topic,
               "ferry: publish to a durable topic; e2e and replay read subscriptions of it");
  app.add_option("--subscriptions", o.subscriptions, "e2e with --topic: durable subscriptions reading it")
      ->check(CLI::Range(1, 64));
  app.add_option("--idle-subscriptions", o.idle_subscriptions,
                 "produce with --topic: subscriptions created first and never read")
      ->check(CLI::Range(0, 10'000));
  CLI11_PARSE(app, argc, argv);

  try {
    if (o.topic && o.impl != "ferry") throw std::invalid_argument("--topic is for --impl ferry");
    if (o.role == "delayed" && o.impl != "ferry")
      throw std::invalid_argument("--role delayed is for --impl ferry");
    if ((o.role == "produce" || o.role == "e2e" || o.role == "replay" || o.role == "delayed") &&
        o.forwarder.empty())
      throw std::invalid_argument("--forwarder is required (ferryd's endpoint, or the raw server's)");
    if ((o.role == "raw-server" || o.role == "fsync-probe") && o.data_dir.empty())
      throw std::invalid_argument("--data-dir is required");
    if (o.role == "produce") return run_produce(o);
    if (o.role == "e2e") return run_e2e(o);
    if (o.role == "replay") return run_replay(o);
    if (o.role == "delayed") return run_delayed(o);
    if (o.role == "raw-server") return run_raw_server(o);
    return run_fsync_probe(o);
  } catch (const std::exception& e) {
    bench::json_line().add("bench", "durable").add("ok", false).add("error", e.what()).print();
    std::_Exit(1);
  }
}
