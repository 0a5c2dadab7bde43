// bench_peers: the durable equivalents on other systems, measured like bench_durable measures ferry, so
// docs/benchmarks.md can put them side by side (scripts/bench.sh --peers starts the servers).
//
//   --system redis --role produce   pipelined XADD to the stream "bench" from --producers processes;
//                                   confirmed = replies received (with appendfsync always Redis replies
//                                   only after its AOF write and fsync)
//   --system redis --role e2e       the same producers; this process runs --threads consumers of one
//                                   group (XREADGROUP ... COUNT --batch, then one XACK per batch) and
//                                   measures produce-to-handler latency as bench_durable does
//   --system nats  --role produce   JetStream async publish (js_PublishAsync, at most --window pending)
//                                   to the file-stored stream BENCH (subject "bench"); confirmed = PubAcks
//
// Producers are separate processes started together (bench/procs.hpp); payloads carry the send time in
// their first 8 bytes.

#include <hiredis/hiredis.h>
#include <nats/nats.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <mutex>

#include "procs.hpp"

namespace {

using bench::mono_ns;

struct options {
  std::string system = "redis";
  std::string role = "produce";
  std::string server;  // host:port
  unsigned producers = 1;
  std::uint64_t count = 100'000;
  std::size_t size = 256;
  std::size_t window = 10'000;  // ferry::producer's default max_in_flight
  std::size_t batch = 1000;
  double rate = 0;
  unsigned threads = 2;
  int timeout_s = 300;

  [[nodiscard]] std::string host() const { return server.substr(0, server.rfind(':')); }
  [[nodiscard]] int port() const { return std::stoi(server.substr(server.rfind(':') + 1)); }
};

constexpr const char* stream_key = "bench";

// --- Redis ------------------------------------------------------------------------------------------------

struct redis_reply {
  redisReply* r = nullptr;
  ~redis_reply() {
    if (r != nullptr) freeReplyObject(r);
  }
};

class redis_connection {
 public:
  explicit redis_connection(const options& o) {
    const timeval tv{5, 0};
    c_ = redisConnectWithTimeout(o.host().c_str(), o.port(), tv);
    if (c_ == nullptr || c_->err != 0)
      throw std::runtime_error("redis: cannot connect to " + o.server +
                               (c_ ? std::string(": ") + c_->errstr : ""));
    const timeval rtv{o.timeout_s, 0};
    redisSetTimeout(c_, rtv);
  }
  ~redis_connection() { redisFree(c_); }
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  /// Runs one command (arguments as bytes) and returns its reply; throws on a connection or Redis error.
  redis_reply command(const std::vector<std::string_view>& args) {
    append(args);
    return reply();
  }
  void append(const std::vector<std::string_view>& args) {
    argv_.clear();
    len_.clear();
    for (const auto a : args) {
      argv_.push_back(a.data());
      len_.push_back(a.size());
    }
    if (redisAppendCommandArgv(c_, static_cast<int>(args.size()), argv_.data(), len_.data()) != REDIS_OK)
      throw std::runtime_error(std::string("redis: ") + c_->errstr);
  }
  /// The next reply; the first call after append() writes everything appended.
  redis_reply reply() {
    redis_reply out;
    void* r = nullptr;
    if (redisGetReply(c_, &r) != REDIS_OK) throw std::runtime_error(std::string("redis: ") + c_->errstr);
    out.r = static_cast<redisReply*>(r);
    if (out.r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("redis: ") + out.r->str);
    return out;
  }

 private:
  redisContext* c_ = nullptr;
  std::vector<const char*> argv_;
  std::vector<std::size_t> len_;
};

std::uint64_t read_replies(redis_connection& c, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) (void)c.reply();
  return n;
}

// Pipelined XADD: a batch is written while the replies of the previous one are read, so up to two batches
// are in flight.
bench::producer_result redis_producer(const options& o, unsigned index, const std::function<void()>& ready) {
  bench::producer_result r;
  redis_connection c(o);
  (void)c.command({"PING"});
  ready();
  const std::uint64_t n = bench::share_of(o.count, o.producers, index);
  std::string payload(o.size, 'x');
  const double cpu0 = bench::process_cpu_ns();
  r.first_send_ns = mono_ns();
  const bench::pacer pace(o.rate / o.producers, r.first_send_ns);
  // Paced, a batch is what comes due in 0.2 ms (the pacer's burst), so no message waits in the client
  // for a batch of --batch to fill; flat out, --batch.
  const std::uint64_t batch_size =
      o.rate > 0 ? std::max<std::uint64_t>(1, static_cast<std::uint64_t>(o.rate / o.producers / 5000))
                 : o.batch;
  std::uint64_t previous_batch = 0;
  while (r.sent < n) {
    const std::uint64_t batch = std::min<std::uint64_t>(batch_size, n - r.sent);
    for (std::uint64_t i = 0; i < batch; ++i) {
      bench::stamp_payload(payload.data(), pace.wait_turn(r.sent));
      c.append({"XADD", stream_key, "*", "p", payload});
      ++r.sent;
    }
    r.confirmed += read_replies(c, previous_batch);
    previous_batch = batch;
  }
  r.confirmed += read_replies(c, previous_batch);
  r.last_confirm_ns = mono_ns();
  r.cpu_ns = bench::process_cpu_ns() - cpu0;
  return r;
}

// One consumer of the group: read a batch, handle it, acknowledge it with one XACK.
void redis_consume(const options& o, unsigned index, std::atomic<std::uint64_t>& handled,
                   std::atomic<std::int64_t>& last_ns, bench::latency_log& lat, std::atomic<bool>& stop) {
  redis_connection c(o);
  const std::string name = "c" + std::to_string(index);
  const std::string count = std::to_string(o.batch);
  std::vector<std::string> ids;
  while (!stop.load() && handled.load() < o.count) {
    const redis_reply rep = c.command(
        {"XREADGROUP", "GROUP", "g", name, "COUNT", count, "BLOCK", "100", "STREAMS", stream_key, ">"});
    if (rep.r->type != REDIS_REPLY_ARRAY || rep.r->elements == 0) continue;
    const redisReply* entries = rep.r->element[0]->element[1];
    ids.clear();
    for (std::size_t i = 0; i < entries->elements; ++i) {
      const redisReply* e = entries->element[i];
      ids.emplace_back(e->element[0]->str, e->element[0]->len);
      const redisReply* fields = e->element[1];
      if (fields->elements >= 2 && fields->element[1]->len >= bench::min_payload) {
        const std::int64_t now = mono_ns();
        lat.add(now - bench::payload_stamp(fields->element[1]->str));
        if (handled.fetch_add(1) + 1 == o.count) last_ns.store(now);
      }
    }
    std::vector<std::string_view> ack{"XACK", stream_key, "g"};
    for (const auto& id : ids) ack.emplace_back(id);
    (void)c.command(ack);
  }
}

// --- NATS JetStream ---------------------------------------------------------------------------------------

void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw std::runtime_error(std::string("nats: ") + what + ": " + natsStatus_GetText(s));
}

struct nats_counts {
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::uint64_t> failed{0};
};

void on_pub_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr*, void* closure) {
  auto* counts = static_cast<nats_counts*>(closure);
  if (pa != nullptr) {
    counts->acked.fetch_add(1, std::memory_order_relaxed);
  } else {
    counts->failed.fetch_add(1, std::memory_order_relaxed);
  }
  natsMsg_Destroy(msg);
}

bench::producer_result nats_producer(const options& o, unsigned index, const std::function<void()>& ready) {
  (void)index;
  bench::producer_result r;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  nats_counts counts;
  const std::string url = "nats://" + o.server;
  check(natsConnection_ConnectTo(&nc, url.c_str()), "connect");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = static_cast<int64_t>(o.window);
  jo.PublishAsync.AckHandler = on_pub_ack;
  jo.PublishAsync.AckHandlerClosure = &counts;
  jo.PublishAsync.StallWait = static_cast<int64_t>(o.timeout_s) * 1000;
  check(natsConnection_JetStream(&js, nc, &jo), "JetStream context");
  // Every producer declares the stream; the same configuration declared twice is not an error.
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = "BENCH";
  const char* subjects[] = {stream_key};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsStreamInfo* si = nullptr;
  const natsStatus added = js_AddStream(&si, js, &cfg, nullptr, &jerr);
  if (si != nullptr) jsStreamInfo_Destroy(si);
  if (added != NATS_OK && jerr != JSStreamNameExistErr) check(added, "add stream");
  ready();
  const std::uint64_t n = bench::share_of(o.count, o.producers, index);
  std::string payload(o.size, 'x');
  const double cpu0 = bench::process_cpu_ns();
  r.first_send_ns = mono_ns();
  const bench::pacer pace(o.rate / o.producers, r.first_send_ns);
  for (; r.sent < n; ++r.sent) {
    bench::stamp_payload(payload.data(), pace.wait_turn(r.sent));
    check(js_PublishAsync(js, stream_key, payload.data(), static_cast<int>(payload.size()), nullptr),
          "publish");
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = static_cast<int64_t>(o.timeout_s) * 1000;
  check(js_PublishAsyncComplete(js, &po), "waiting for PubAcks");
  r.last_confirm_ns = mono_ns();
  r.cpu_ns = bench::process_cpu_ns() - cpu0;
  r.confirmed = counts.acked.load();
  const std::uint64_t failed = counts.failed.load();
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_Close();
  if (failed > 0) throw std::runtime_error(std::to_string(failed) + " publish(es) failed");
  return r;
}

// --- roles ------------------------------------------------------------------------------------------------

bench::json_line describe(const options& o) {
  bench::json_line j;
  j.add("bench", "peers")
      .add("system", o.system)
      .add("role", o.role)
      .add("producers", static_cast<std::uint64_t>(o.producers))
      .add("count", o.count)
      .add("size", static_cast<std::uint64_t>(o.size));
  return j;
}

bench::producer_fn producer_for(const options& o) {
  if (o.system == "redis")
    return [&o](unsigned i, const std::function<void()>& ready) { return redis_producer(o, i, ready); };
  return [&o](unsigned i, const std::function<void()>& ready) { return nats_producer(o, i, ready); };
}

int run_produce(const options& o) {
  bench::producer_group group;
  group.start(o.producers, producer_for(o));
  group.await_ready(std::chrono::seconds(30));
  group.go();
  const bench::producer_totals t = bench::total(group.results(std::chrono::seconds(o.timeout_s)));
  auto j = describe(o);
  const bool ok = t.ok && t.confirmed == o.count;
  j.add("ok", ok);
  if (!ok) j.add("error", t.ok ? "fewer confirms than messages" : t.error);
  bench::add_totals(j, t, o.count);
  j.add("pipeline", o.system == "redis" ? "batches of --batch XADDs, two batches in flight"
                                        : "js_PublishAsync, at most --window pending");
  j.print();
  return ok ? 0 : 1;
}

int run_redis_e2e(const options& o) {
  bench::producer_group group;
  group.start(o.producers, producer_for(o));  // before this process starts any thread
  group.await_ready(std::chrono::seconds(30));
  {
    redis_connection c(o);
    (void)c.command({"XGROUP", "CREATE", stream_key, "g", "$", "MKSTREAM"});
  }
  bench::latency_log lat(o.count + o.count / 10);
  std::atomic<std::uint64_t> handled{0};
  std::atomic<std::int64_t> last_ns{0};
  std::atomic<bool> stop{false};
  std::vector<std::string> errors(o.threads);
  std::vector<std::thread> consumers;
  const double cpu0 = bench::process_cpu_ns();
  group.go();
  for (unsigned i = 0; i < o.threads; ++i) {
    consumers.emplace_back([&, i] {
      try {
        redis_consume(o, i, handled, last_ns, lat, stop);
      } catch (const std::exception& e) {
        errors[i] = e.what();
        stop.store(true);
      }
    });
  }
  const auto deadline = bench::clock::now() + std::chrono::seconds(o.timeout_s);
  while (handled.load() < o.count && !stop.load() && bench::clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop.store(true);
  for (auto& t : consumers) t.join();
  const double cpu = bench::process_cpu_ns() - cpu0;
  std::string error;
  for (const auto& e : errors)
    if (error.empty()) error = e;
  const bench::producer_totals t = bench::total(group.results(std::chrono::seconds(o.timeout_s)));
  const bool ok = error.empty() && t.ok && handled.load() >= o.count;
  auto j = describe(o);
  j.add("ok", ok);
  if (!ok) j.add("error", !error.empty() ? error : !t.ok ? t.error : "not every message was handled in time");
  bench::add_e2e_figures(j, t, lat, o.count, ok, handled.load(), last_ns.load(), cpu, o.rate, o.threads);
  j.print();
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"durable equivalents on Redis Streams and NATS JetStream, measured like bench_durable"};
  options o;
  app.add_option("--system", o.system, "redis or nats")->check(CLI::IsMember({"redis", "nats"}));
  app.add_option("--role", o.role, "produce or e2e (redis only)")->check(CLI::IsMember({"produce", "e2e"}));
  app.add_option("--server", o.server, "host:port of the server")->required();
  app.add_option("--producers", o.producers, "producer processes")->check(CLI::Range(1, 64));
  app.add_option("--count", o.count, "messages in all")->check(CLI::PositiveNumber);
  app.add_option("--size", o.size, "payload bytes (at least 8: the send time)")
      ->check(CLI::Range(8, 1 << 24));
  app.add_option("--window", o.window, "nats: most PubAcks pending per producer")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "redis: XADDs per pipelined batch; XREADGROUP COUNT")
      ->check(CLI::PositiveNumber);
  app.add_option("--rate", o.rate, "messages/s from all producers together; 0 sends flat out");
  app.add_option("--threads", o.threads, "redis e2e: consumers in the group (threads)")
      ->check(CLI::Range(1, 64));
  app.add_option("--timeout", o.timeout_s, "seconds a run may take");
  CLI11_PARSE(app, argc, argv);
  try {
    if (o.role == "e2e" && o.system != "redis")
      throw std::invalid_argument("--role e2e is implemented for redis only");
    return o.role == "produce" ? run_produce(o) : run_redis_e2e(o);
  } catch (const std::exception& e) {
    bench::json_line().add("bench", "peers").add("ok", false).add("error", e.what()).print();
    std::_Exit(1);
  }
}
