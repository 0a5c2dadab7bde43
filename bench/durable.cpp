// bench_durable: durable messaging through ferryd, next to a raw cppzmq program doing the bare mechanism.
//
// Roles:
//   produce      --producers N processes (forked, started together) send --count messages in all to
//                --forwarder and wait for every confirm. Reports confirmed messages/s from the first send
//                to the last confirm, across processes.
//   e2e          the same producers, and a consumer in this process that handles and acknowledges every
//                message. Reports handled messages/s and produce-to-handler latency (the send time travels
//                in the payload's first 8 bytes; steady clock, same machine). --rate paces the producers.
//   raw-server   the raw baseline's server (see below). Prints a "ready" line, runs until SIGTERM.
//   fsync-probe  4 KiB write + fdatasync in --data-dir, --count times: the disk's sync latency.
//
// --impl ferry uses ferry::producer / ferry::consumer against a real ferryd (started by bench.py or by
// hand). --impl raw uses plain cppzmq sockets against `bench_durable --role raw-server`, which does the
// minimum a durable queue must do and nothing else:
//   producer: DEALER; one frame per message: 'S', a 16-byte id, the payload; keeps up to --window
//             messages unconfirmed.
//   server:   ROUTER; appends each message (length, sequence number, id, payload) to one file; a second
//             thread writes the gathered batch and fdatasyncs it while the next batch gathers; then one
//             confirm frame per producer per batch ('K' and the ids). With a consumer attached it delivers
//             the durable messages against credit and appends the acknowledged sequence numbers to an ack
//             file, synced with the first batch after 200 ms (as ferryd syncs its journal). No checksums,
//             dedup, leases, redelivery, dead letters, per-key order, segments or metrics: that is ferry's
//             work, which the ratio puts a price on.
//   consumer: DEALER, one thread; handles each delivered message inline and acknowledges each batch.
// On restart the raw server scans its file (length framing only) and reports how long that took.

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "ferry/ferry.hpp"
#include "procs.hpp"

namespace {

using bench::mono_ns;

struct options {
  std::string role = "produce";
  std::string impl = "ferry";
  std::string forwarder;
  unsigned producers = 1;
  std::uint64_t count = 100'000;
  std::size_t size = 256;
  std::size_t window = 10'000;  // ferry::producer's default max_in_flight
  double rate = 0;
  unsigned threads = 2;
  std::uint32_t prefetch = 1024;
  std::string endpoint = "tcp://127.0.0.1:*";
  std::string data_dir;
  int timeout_s = 300;

  [[nodiscard]] std::chrono::seconds timeout() const { return std::chrono::seconds(timeout_s); }
};

// Raw protocol: the first byte of a frame says what it is.
constexpr char verb_send = 'S';     // producer -> server: id (16) + payload
constexpr char verb_confirm = 'K';  // server -> producer: ids (16 each)
constexpr char verb_hello = 'H';    // either way: connection check
constexpr char verb_consume = 'C';  // consumer -> server: credit (u32)
constexpr char verb_deliver = 'D';  // server -> consumer: then one frame per message: seq (8) + id + payload
constexpr char verb_ack = 'A';      // consumer -> server: seqs (8 each); gives the credit back
constexpr char verb_bye = 'X';      // consumer -> server: unsubscribe (the raw server has no heartbeats)
constexpr std::size_t id_size = 16;

std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return v;
}
void put_u64(std::string& out, std::uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), 8);
}

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
    const ferry::send_status st = p.send(m);
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
      .add("window", static_cast<std::uint64_t>(o.window));
  return j;
}

int run_produce(const options& o) {
  bench::producer_group group;
  group.start(o.producers, producer_for(o));
  group.await_ready(std::chrono::seconds(30));
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

consumed ferry_consume(const options& o, bench::producer_group& group, bench::latency_log& lat) {
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

consumed raw_consume(const options& o, bench::producer_group& group, bench::latency_log& lat) {
  consumed c;
  zmq::context_t ctx(1);
  zmq::socket_t s = raw_dealer(ctx, o);
  std::string consume(1, verb_consume);
  consume.append(reinterpret_cast<const char*>(&o.prefetch), 4);
  (void)s.send(zmq::buffer(consume), zmq::send_flags::none);
  raw_handshake(s);  // the server has the subscription before any producer starts
  const double cpu0 = bench::process_cpu_ns();
  group.go();
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
  bench::latency_log lat(o.count + o.count / 10);
  consumed c;
  try {
    c = o.impl == "ferry" ? ferry_consume(o, group, lat) : raw_consume(o, group, lat);
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

// --- the raw server -------------------------------------------------------------------------------------

class raw_server {
 public:
  explicit raw_server(const options& o) : o_(o), router_(ctx_, zmq::socket_type::router) {
    const std::filesystem::path dir(o.data_dir);
    log_fd_ = ::open((dir / "raw.log").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ack_fd_ = ::open((dir / "raw.acks").c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    done_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (log_fd_ < 0 || ack_fd_ < 0 || done_fd_ < 0)
      throw std::runtime_error("raw server: cannot open files in " + o.data_dir);
    recover();
    router_.set(zmq::sockopt::sndhwm, 0);
    router_.set(zmq::sockopt::rcvhwm, 100'000);
    router_.set(zmq::sockopt::linger, 2000);
    router_.bind(o.endpoint);
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    sync_thread_ = std::thread([this] { sync_loop(); });
  }
  ~raw_server() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    sync_thread_.join();
    ::close(log_fd_);
    ::close(ack_fd_);
    ::close(done_fd_);
  }

  void run(int sig_fd) {
    bench::json_line()
        .add("ready", true)
        .add("endpoint", endpoint_)
        .add("recovered", recovered_)
        .add("unsettled", unsettled_)
        .add("recovery_s", recovery_s_)
        .print();
    std::vector<zmq::message_t> frames;
    for (;;) {
      zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, done_fd_, ZMQ_POLLIN, 0},
                                 {nullptr, sig_fd, ZMQ_POLLIN, 0}};
      zmq::poll(items, 3, std::chrono::milliseconds(100));
      if (items[2].revents & ZMQ_POLLIN) break;
      if (items[1].revents & ZMQ_POLLIN) commit_done();
      for (int budget = 0; budget < 4096; ++budget) {
        zmq::message_t identity;
        if (!router_.recv(identity, zmq::recv_flags::dontwait)) break;
        zmq::message_t body;
        (void)router_.recv(body);
        while (body.more()) (void)router_.recv(body);  // one frame per request; ignore extras
        handle(identity, body);
      }
      deliver();
      if (acks_.size() > 0) {  // like ferryd's journal: written every iteration, synced every 200 ms
        (void)!::write(ack_fd_, acks_.data(), acks_.size());
        acks_.clear();
        acks_unsynced_ = true;
      }
      if (!busy_ && !gather_.empty()) submit();
    }
    while (busy_) {  // let the batch in progress finish; confirms no longer matter
      pollfd p{done_fd_, POLLIN, 0};
      ::poll(&p, 1, 1000);
      commit_done();
    }
    std::sort(sync_us_.begin(), sync_us_.end());
    bench::json_line()
        .add("ok", true)
        .add("stored", stored_)
        .add("commits", commits_)
        .add("commit_p50_us", bench::percentile(sync_us_, 0.5))
        .add("commit_p99_us", bench::percentile(sync_us_, 0.99))
        .add("commit_max_us", sync_us_.empty() ? 0.0 : sync_us_.back())
        .print();
  }

 private:
  struct peer_ids {
    zmq::message_t identity;
    std::string ids;
  };
  struct consumer {
    zmq::message_t identity;
    std::uint32_t credit;
  };

  // Scans the log: length framing only, a torn tail is cut. Acked sequence numbers come from the ack file.
  void recover() {
    const auto t0 = bench::clock::now();
    std::vector<char> buf(1 << 20);
    std::size_t have = 0;
    std::uint64_t offset = 0, good_end = 0;
    for (;;) {
      const ssize_t n =
          ::pread(log_fd_, buf.data() + have, buf.size() - have, static_cast<off_t>(offset + have));
      if (n <= 0) break;
      have += static_cast<std::size_t>(n);
      std::size_t pos = 0;
      while (have - pos >= 4) {
        std::uint32_t len = 0;
        std::memcpy(&len, buf.data() + pos, 4);
        if (len < 8 + id_size || len > (1u << 28)) break;  // damage: stop here (a torn tail)
        if (have - pos < 4 + len) {
          if (4 + len > buf.size()) buf.resize(4 + len);
          break;
        }
        next_seq_ = get_u64(buf.data() + pos + 4) + 1;
        ++recovered_;
        pos += 4 + len;
      }
      offset += pos;
      good_end = offset;
      std::memmove(buf.data(), buf.data() + pos, have - pos);
      have -= pos;
    }
    if (::ftruncate(log_fd_, static_cast<off_t>(good_end)) != 0)
      throw std::runtime_error("raw server: ftruncate");
    write_offset_ = good_end;
    struct stat st {};
    ::fstat(ack_fd_, &st);
    unsettled_ = recovered_ - std::min<std::uint64_t>(recovered_, static_cast<std::uint64_t>(st.st_size) / 8);
    recovery_s_ = bench::seconds_between(t0, bench::clock::now());
  }

  void handle(zmq::message_t& identity, zmq::message_t& body) {
    if (body.size() == 0) return;
    const auto* p = static_cast<const char*>(body.data());
    switch (p[0]) {
      case verb_send: {
        if (body.size() < 1 + id_size) return;
        const std::uint32_t len = static_cast<std::uint32_t>(8 + body.size() - 1);
        gather_.append(reinterpret_cast<const char*>(&len), 4);
        put_u64(gather_, next_seq_++);
        gather_.append(p + 1, body.size() - 1);
        peer_for(identity).ids.append(p + 1, id_size);
        ++stored_;
        return;
      }
      case verb_hello:
        (void)router_.send(identity, zmq::send_flags::sndmore);
        (void)router_.send(zmq::message_t(&verb_hello, 1), zmq::send_flags::none);
        return;
      case verb_consume: {
        std::uint32_t credit = 64;
        if (body.size() >= 5) std::memcpy(&credit, p + 1, 4);
        consumers_.push_back({zmq::message_t(identity.data(), identity.size()), credit});
        return;
      }
      case verb_ack: {
        const std::size_t k = (body.size() - 1) / 8;
        acks_.append(p + 1, 8 * k);
        for (auto& c : consumers_)
          if (c.identity == identity) c.credit += static_cast<std::uint32_t>(k);
        return;
      }
      case verb_bye:
        std::erase_if(consumers_, [&](const consumer& c) { return c.identity == identity; });
        return;
      default:
        return;
    }
  }

  // The confirm list of the peer `identity`; the last one used is checked first (one producer sends runs).
  peer_ids& peer_for(const zmq::message_t& identity) {
    if (last_peer_ < peers_.size() && peers_[last_peer_].identity == identity) return peers_[last_peer_];
    for (last_peer_ = 0; last_peer_ < peers_.size(); ++last_peer_)
      if (peers_[last_peer_].identity == identity) return peers_[last_peer_];
    peers_.push_back({zmq::message_t(identity.data(), identity.size()), {}});
    return peers_.back();
  }

  void submit() {
    committing_.swap(gather_);
    committing_peers_.swap(peers_);
    peers_.clear();
    last_peer_ = 0;
    // Like ferryd's journal: the ack file is synced with the first batch after 200 ms have passed.
    const auto now = bench::clock::now();
    const bool sync_acks = acks_unsynced_ && now - last_ack_sync_ >= std::chrono::milliseconds(200);
    {
      std::lock_guard lock(mutex_);
      sync_acks_ = sync_acks;
      go_ = true;
    }
    if (sync_acks) {
      acks_unsynced_ = false;
      last_ack_sync_ = now;
    }
    busy_ = true;
    cv_.notify_one();
  }

  void commit_done() {
    std::uint64_t n = 0;
    if (::read(done_fd_, &n, sizeof n) != sizeof n) return;
    {
      std::lock_guard lock(mutex_);
      if (sync_error_ != 0)
        throw std::runtime_error(std::string("raw server: write or sync failed: ") +
                                 std::strerror(sync_error_));
    }
    ++commits_;
    for (auto& peer : committing_peers_) {
      std::string frame(1, verb_confirm);
      frame += peer.ids;
      (void)router_.send(peer.identity, zmq::send_flags::sndmore);
      (void)router_.send(zmq::buffer(frame), zmq::send_flags::none);
    }
    committing_peers_.clear();
    if (!consumers_.empty()) {  // the batch is durable: it may be delivered
      for (std::size_t pos = 0; pos + 4 <= committing_.size();) {
        std::uint32_t len = 0;
        std::memcpy(&len, committing_.data() + pos, 4);
        ready_.emplace_back(committing_.data() + pos + 4, len);
        pos += 4 + len;
      }
    }
    committing_.clear();
    busy_ = false;
  }

  void deliver() {
    for (auto& c : consumers_) {
      if (ready_.empty()) return;
      if (c.credit == 0) continue;
      const std::size_t n = std::min<std::size_t>({c.credit, ready_.size(), 512});
      (void)router_.send(zmq::message_t(c.identity.data(), c.identity.size()), zmq::send_flags::sndmore);
      (void)router_.send(zmq::message_t(&verb_deliver, 1), zmq::send_flags::sndmore);
      for (std::size_t i = 0; i < n; ++i) {
        (void)router_.send(zmq::buffer(ready_.front()),
                           i + 1 < n ? zmq::send_flags::sndmore : zmq::send_flags::none);
        ready_.pop_front();
      }
      c.credit -= static_cast<std::uint32_t>(n);
    }
  }

  // The second thread: writes the batch and syncs it (and the ack file when acks were written since).
  void sync_loop() {
    for (;;) {
      bool acks = false;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return go_ || stop_; });
        if (!go_) return;
        acks = sync_acks_;
      }
      const auto t0 = bench::clock::now();
      int err = 0;
      std::size_t done = 0;
      while (done < committing_.size()) {
        const ssize_t n = ::pwrite(log_fd_, committing_.data() + done, committing_.size() - done,
                                   static_cast<off_t>(write_offset_ + done));
        if (n <= 0) {
          err = errno;
          break;
        }
        done += static_cast<std::size_t>(n);
      }
      write_offset_ += done;
      if (err == 0 && acks && ::fdatasync(ack_fd_) != 0) err = errno;
      if (err == 0 && ::fdatasync(log_fd_) != 0) err = errno;
      {
        std::lock_guard lock(mutex_);
        go_ = false;
        sync_error_ = err;
        sync_us_.push_back(bench::seconds_between(t0, bench::clock::now()) * 1e6);
      }
      const std::uint64_t one = 1;
      (void)!::write(done_fd_, &one, sizeof one);
    }
  }

  const options& o_;
  zmq::context_t ctx_{1};
  zmq::socket_t router_;
  std::string endpoint_;
  int log_fd_ = -1, ack_fd_ = -1, done_fd_ = -1;
  std::uint64_t next_seq_ = 1, recovered_ = 0, unsettled_ = 0, stored_ = 0, commits_ = 0;
  double recovery_s_ = 0;
  // Loop thread.
  std::string gather_;
  std::vector<peer_ids> peers_;
  std::size_t last_peer_ = 0;
  std::vector<consumer> consumers_;
  std::deque<std::string> ready_;
  std::string acks_;
  bool acks_unsynced_ = false;
  bool busy_ = false;
  // Handed to the sync thread while busy_ (the mutex orders the hand-over both ways).
  std::string committing_;
  std::vector<peer_ids> committing_peers_;
  std::uint64_t write_offset_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool go_ = false, stop_ = false, sync_acks_ = false;
  bench::clock::time_point last_ack_sync_{};
  int sync_error_ = 0;
  std::vector<double> sync_us_;  // write + sync time of each batch (read after the thread is idle)
  std::thread sync_thread_;
};

int run_raw_server(const options& o) {
  // SIGTERM ends the loop cleanly: blocked before any thread starts, read through a signalfd.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const int sig_fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  raw_server server(o);
  server.run(sig_fd);
  return 0;
}

// --- disk sync latency ------------------------------------------------------------------------------------

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
  app.add_option("--role", o.role, "produce, e2e, raw-server or fsync-probe")
      ->check(CLI::IsMember({"produce", "e2e", "raw-server", "fsync-probe"}));
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
  CLI11_PARSE(app, argc, argv);

  try {
    if ((o.role == "produce" || o.role == "e2e") && o.forwarder.empty())
      throw std::invalid_argument("--forwarder is required (ferryd's endpoint, or the raw server's)");
    if ((o.role == "raw-server" || o.role == "fsync-probe") && o.data_dir.empty())
      throw std::invalid_argument("--data-dir is required");
    if (o.role == "produce") return run_produce(o);
    if (o.role == "e2e") return run_e2e(o);
    if (o.role == "raw-server") return run_raw_server(o);
    return run_fsync_probe(o);
  } catch (const std::exception& e) {
    bench::json_line().add("bench", "durable").add("ok", false).add("error", e.what()).print();
    std::_Exit(1);
  }
}
