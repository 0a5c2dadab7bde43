// ferryd's event loop: start-up and recovery of every queue, the loop itself, the verb table, timers and
// shutdown. The handlers live with their concern: produce.cpp (SEND and the commit pipeline),
// sessions.cpp (HELLO, PING, CONSUME, CANCEL, answers, delivery), dead_letters.cpp, admin.cpp (STATS, DLQ).
#include "forwarder.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "file_io.hpp"
#include "protocol_helpers.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

// ---- start-up --------------------------------------------------------------------------------------------

forwarder::forwarder(forwarder_options options)
    : options_(std::move(options)),
      lock_(options_.data_dir),
      instance_(random_u64() | 1),
      router_(ctx_.make_socket(
          zmq::socket_type::router,
          [&] {
            socket_options o;
            o.send_hwm =
                1'000'000;  // confirms and deliveries are bounded by windows and credit, not by the HWM
            o.receive_hwm = 100'000;
            o.linger = std::chrono::milliseconds(2000);
            // Frames larger than a message may be are refused in the protocol with a reason; libzmq's own
            // limit (which disconnects the peer) only guards against absurd sizes.
            o.max_message_size = static_cast<std::int64_t>(options_.max_message_bytes * 2 + 65536);
            return o;
          }())),
      started_(steady::now()) {
  const auto t0 = steady::now();
  router_.set(zmq::sockopt::router_mandatory, 1);
  commit_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (commit_fd_ < 0) throw startup_error(exit_runtime, "eventfd failed");
  try {
    // Made durable with its parent: a power loss after the first confirm must not lose the entry.
    storage::create_directories_durably(options_.data_dir / "queues");
  } catch (const ferry::error& e) {
    throw startup_error(exit_data_dir, e.what());
  }
  recover_all();
  commit_ = std::make_unique<group_commit>(options_.fsync, options_.fsync_interval, commit_fd_,
                                           options_.sync_delay);
  for (const auto& ep : options_.bind) {
    try {
      bound_.push_back(ferry::bind(router_, ep));
    } catch (const ferry::error& e) {
      throw startup_error(exit_endpoint, e.what());
    }
  }
  local_endpoint_ = fmt::format("inproc://ferryd-{:016x}", instance_);
  router_.bind(local_endpoint_);
  if (!options_.feed.empty()) {
    socket_options fo;
    fo.linger = std::chrono::milliseconds(0);  // the feed is at most once: repair reads the log
    fo.send_hwm = 10'000;                      // frames; a subscriber behind that misses some, then FETCHes
    feed_.emplace(ctx_.make_socket(zmq::socket_type::pub, fo));
    for (const auto& ep : options_.feed) {
      try {
        feed_bound_.push_back(ferry::bind(*feed_, ep));
      } catch (const ferry::error& e) {
        throw startup_error(exit_endpoint, e.what());
      }
    }
  }
  logger().info("ferryd started in {:.3f} s: {} queue(s), fsync {}, data dir {}",
                std::chrono::duration<double>(steady::now() - t0).count(), queues_.size(),
                options_.fsync == fsync_policy::always
                    ? "always"
                    : fmt::format("every {} ms", options_.fsync_interval.count()),
                options_.data_dir.string());
  for (const auto& ep : bound_) logger().info("listening on {}", ep);
  for (const auto& ep : feed_bound_) logger().info("live feed of topics on {}", ep);
}

forwarder::~forwarder() {
  commit_.reset();
  if (commit_fd_ >= 0) ::close(commit_fd_);
}

void forwarder::recover_all() {
  const fs::path root = options_.data_dir / "queues";
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    // Queues, and the dead-letter queues of topics' subscriptions.
    if (entry.is_directory() && (fwd::valid_queue_name(name) || fwd::is_subscription_queue(name)))
      names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) open_queue(name);
  const fs::path topics = options_.data_dir / "topics";
  std::error_code ec;
  if (!fs::is_directory(topics, ec)) return;
  names.clear();
  for (const auto& entry : fs::directory_iterator(topics)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && fwd::valid_queue_name(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) open_topic(name);
}

forwarder::queue_slot* forwarder::find_queue(std::string_view name) {
  const auto it = queue_index_.find(std::string(name));
  return it == queue_index_.end() ? nullptr : &queues_[it->second];
}

forwarder::queue_slot& forwarder::open_queue(const std::string& name) {
  if (auto* slot = find_queue(name)) return *slot;
  const auto index = static_cast<std::uint32_t>(queues_.size());
  queue_config config = options_.queue;
  if (fwd::is_dlq_name(name)) {
    config.max_attempts = ~0u;                          // dead letters are never dead-lettered again
    config.message_ttl = std::chrono::milliseconds(0);  // nor do they expire
  }
  const std::uint64_t token_prefix = (random_u64() & 0xffffffull) << 40;
  auto q = std::make_unique<queue>(name, index, options_.data_dir / "queues" / name, config, token_prefix);
  const auto t0 = steady::now();
  recovery_report log_report;
  recovery_report journal_report;
  q->recover(log_report, journal_report);
  const double seconds = std::chrono::duration<double>(steady::now() - t0).count();
  if (log_report.records > 0 || !log_report.problems.empty() || !journal_report.problems.empty()) {
    logger().info(
        "queue {}: recovered {} record(s) in {} segment(s) ({} bytes) in {:.3f} s: {} unsettled, "
        "{} torn-tail bytes truncated, {} damaged region(s) skipped",
        name, log_report.records, log_report.segments, log_report.bytes, seconds, q->depth(),
        log_report.truncated_bytes + journal_report.truncated_bytes,
        log_report.corrupt_regions + journal_report.corrupt_regions);
    for (const auto& p : log_report.corruption) logger().error("queue {}: {}", name, p);
    for (const auto& p : log_report.problems)
      if (std::find(log_report.corruption.begin(), log_report.corruption.end(), p) ==
          log_report.corruption.end())
        logger().warn("queue {}: {}", name, p);
    for (const auto& p : journal_report.problems) logger().warn("queue {}: journal: {}", name, p);
  }
  queue_slot slot;
  slot.q = std::move(q);
  queues_.push_back(std::move(slot));
  queue_index_.emplace(name, index);
  return queues_.back();
}

// ---- the loop ---------------------------------------------------------------------------------------------

void forwarder::stop() noexcept {
  stop_.store(true, std::memory_order_relaxed);
}

int forwarder::run(bool handle_signals) {
  int sig_fd = -1;
  if (handle_signals) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);  // would end the process by default; ferryd has nothing to reload
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    sig_fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  }
  logger().info("ready");
  std::vector<zmq::message_t> frames;
  frames.reserve(64);
  next_timer_ = steady::now();
  last_wake_ = steady::now();
  while (!stop_.load(std::memory_order_relaxed)) {
    zmq_pollitem_t items[3] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, commit_fd_, ZMQ_POLLIN, 0},
                               {nullptr, sig_fd, ZMQ_POLLIN, 0}};
    const auto now0 = steady::now();
    // Wake for the timer, or sooner when a delayed message falls due (so it leaves within a millisecond).
    steady::time_point wake = next_timer_;
    for (const auto& slot : queues_)
      if (const auto due = slot.q->next_due(); due && *due < wake) wake = *due;
    long timeout_ms = std::max<long>(0, std::chrono::ceil<std::chrono::milliseconds>(wake - now0).count());
    try {
      zmq::poll(items, sig_fd >= 0 ? 3 : 2, std::chrono::milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    credit_stall(steady::now(), std::chrono::milliseconds(timeout_ms));
    if (sig_fd >= 0 && (items[2].revents & ZMQ_POLLIN)) {
      signalfd_siginfo info{};
      (void)!::read(sig_fd, &info, sizeof info);
      if (info.ssi_signo == SIGHUP) {
        logger().info(
            "received SIGHUP: nothing to reload (ferryd takes no configuration changes while it "
            "runs); ignored");
      } else {
        logger().info("received {}, shutting down", info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
      }
    }
    if (items[1].revents & ZMQ_POLLIN) {
      std::uint64_t n = 0;
      (void)!::read(commit_fd_, &n, sizeof n);
      if (const int err = commit_->sync_failure(); err != 0) fail_sync(err);  // --fsync interval
      if (auto result = commit_->take()) handle_commit(*result);
    }
    // Bounded per iteration so commits, timers and deliveries keep pace with a flood of input.
    for (int budget = 0; budget < 2048; ++budget) {
      frames.clear();
      zmq::message_t part;
      if (!router_.recv(part, zmq::recv_flags::dontwait)) break;
      frames.push_back(std::move(part));
      while (frames.back().more()) {
        zmq::message_t next;
        (void)router_.recv(next);
        frames.push_back(std::move(next));
      }
      handle_message(frames);
    }
    const auto now = steady::now();
    if (now >= next_timer_) on_timer(now);
    for (auto& slot : queues_) slot.q->release_due(now);
    dispatch_all(now);
    move_dead_letters();
    flush_journals();  // attempt counts are on file before the deliveries that made them leave
    flush_outgoing();
    maybe_submit();
  }
  if (sig_fd >= 0) ::close(sig_fd);
  return shutdown();
}

void forwarder::handle_message(std::vector<zmq::message_t>& frames) {
  if (frames.size() < 2) {
    ++malformed_frames_;
    return;
  }
  using handler = void (forwarder::*)(const std::string&, std::vector<zmq::message_t>&);
  struct verb_entry {
    std::string_view verb;
    handler handle;
  };
  // Most frequent first: a linear scan of short strings beats hashing here.
  static constexpr verb_entry verbs[] = {
      {fwd::send, &forwarder::on_send},     {fwd::ack, &forwarder::on_answer},
      {fwd::ping, &forwarder::on_ping},     {fwd::nack, &forwarder::on_answer},
      {fwd::reject, &forwarder::on_answer}, {fwd::consume, &forwarder::on_consume},
      {fwd::cancel, &forwarder::on_cancel}, {fwd::hello, &forwarder::on_hello},
      {fwd::stats, &forwarder::on_stats},   {fwd::dlq, &forwarder::on_dlq},
      {fwd::publish, &forwarder::on_send},  {fwd::subscribe, &forwarder::on_subscribe},
      {fwd::fetch, &forwarder::on_fetch},   {fwd::extend, &forwarder::on_extend},
  };
  const std::string identity(view(frames[0]));
  const std::string_view verb = view(frames[1]);
  peers_.heard_from(identity, steady::now());
  for (const auto& v : verbs) {
    if (v.verb != verb) continue;
    try {
      (this->*v.handle)(identity, frames);
    } catch (const std::exception& e) {
      // Opening a queue or topic whose files cannot be read (a directory replaced by a file, an unreadable
      // journal) fails that request, before anything of it was stored; ferryd keeps serving the others.
      if (dynamic_cast<const ferry::error*>(&e) == nullptr &&
          dynamic_cast<const std::filesystem::filesystem_error*>(&e) == nullptr)
        throw;
      logger().error("{} from {} failed: {}", verb, peer_name(identity), e.what());
      send_error(identity, fwd::code::io_error, fmt::format("{} failed: {}", verb, e.what()));
    }
    return;
  }
  ++malformed_frames_;
  send_error(identity, fwd::code::unknown_verb, fmt::format("unknown verb '{}'", printable(verb)));
}

// ---- replies ----------------------------------------------------------------------------------------------

void forwarder::send_error(const std::string& identity, std::string_view code, const std::string& text) {
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::error));
  reply.push_back(frame(code));
  reply.push_back(frame(text));
  send_frames(identity, reply);
}

void forwarder::send_frames(const std::string& identity, std::vector<zmq::message_t>& frames) {
  try {
    if (!router_.send(zmq::message_t(identity.data(), identity.size()),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait))
      return;  // the peer is not reading: it will ask again (resend, ping)
    for (std::size_t i = 0; i < frames.size(); ++i)
      (void)router_.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) throw;
    // The peer is gone. A consumer's deliveries return to the queue at its heartbeat timeout.
  }
}

// ---- timers -----------------------------------------------------------------------------------------------

void forwarder::credit_stall(steady::time_point woke, std::chrono::milliseconds waited) {
  // The loop comes back at least every 100 ms. Much longer means ferryd itself was not running (SIGSTOP, a
  // VM pause, a stall of its own): consumers could not be heard meanwhile and leases could not be answered,
  // so that time counts for nobody's silence and no lease. Their pings and acks are still in the socket.
  const auto since = woke - last_wake_;
  last_wake_ = woke;
  const auto stall = since - waited;
  if (stall > stall_threshold) {
    logger().warn(
        "ferryd was not running for {} ms (stopped or stalled): consumers' heartbeats and leases "
        "are extended by that much",
        std::chrono::duration_cast<std::chrono::milliseconds>(stall).count());
    peers_.forgive(std::chrono::duration_cast<steady::duration>(stall));
    for (auto& slot : queues_) slot.q->extend_leases(std::chrono::duration_cast<steady::duration>(stall));
  }
}

void forwarder::on_timer(steady::time_point now) {
  next_timer_ = now + std::chrono::milliseconds(100);
  for (auto& slot : queues_) {
    slot.q->expire_leases(now);
    slot.q->release_due(now);
  }
  expire_silent_consumers(now);
  check_free_space(now);
  if (!commit_->busy()) {
    flush_journals();  // housekeeping may rewrite a journal: what is buffered goes first (and gets synced)
    const std::int64_t now_us = unix_now_us();
    for (auto& slot : queues_)
      if (!slot.retired) slot.q->housekeeping(now_us);
  }
}

// ---- shutdown ---------------------------------------------------------------------------------------------

int forwarder::shutdown() {
  // Finish the batch being written, then commit what was gathered, so every accepted message is
  // confirmed before we go.
  if (auto r = commit_->wait()) handle_commit(*r);
  maybe_submit();
  if (auto r = commit_->wait()) handle_commit(*r);
  flush_journals();
  flush_outgoing();
  int status = exit_ok;
  for (auto& slot : queues_) {
    journal& j = slot.q->state_journal();
    if (!j.is_open()) continue;  // a queue that never stored anything has no journal to sync
    int err = j.flush();
    if (err == 0) err = j.sync();
    if (err != 0) {
      // Messages are safe (their segments are synced); settlements and attempt counts since the last
      // journal sync may come back as redeliveries after a machine crash.
      logger().error("queue {}: cannot write and sync its journal at shutdown: {}", slot.q->name(),
                     std::strerror(err));
      status = exit_runtime;
    }
  }
  if (const int err = commit_->finish(); err != 0) {
    // --fsync interval: the last sync (or an earlier background one) failed. Confirmed messages may not be
    // on disk; say so and exit non-zero.
    logger().error("fdatasync failed at shutdown: {}; messages confirmed in the last interval may be lost",
                   std::strerror(err));
    status = exit_runtime;
  }
  if (status == exit_ok) {
    // Everything is synced: each log's checkpoint of its durable end now covers all of it, so damage found
    // at the next start is corruption, never mistaken for a torn write.
    for (auto& slot : queues_) {
      const int fd = slot.q->checkpoint();
      if (fd >= 0 && storage::sync_data(fd) != 0)
        logger().warn("queue {}: cannot sync its log_end checkpoint at shutdown", slot.q->name());
    }
  }
  router_.close();  // lingers up to 2 s so the last confirms leave
  logger().info(status == exit_ok ? "ferryd stopped" : "ferryd stopped with errors");
  return status;
}

}  // namespace ferry::ferryd
