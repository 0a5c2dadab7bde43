#include "forwarder.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <msgpack.hpp>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "ferry/envelope.hpp"
#include "record.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

namespace {

std::uint64_t random_u64() {
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v))
    v = static_cast<std::uint64_t>(steady::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
  return v;
}

std::string_view view(const zmq::message_t& m) {
  return m.to_string_view();
}

zmq::message_t frame(std::string_view s) {
  return zmq::message_t(s.data(), s.size());
}

std::string packed(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return {buf.data(), buf.size()};
}

// Reads an unsigned field from a small msgpack map frame; `fallback` when absent. False when the frame is
// not a map or the field has the wrong type.
bool map_uint(std::string_view bytes, std::string_view field, std::uint64_t& out, std::uint64_t fallback) {
  out = fallback;
  if (bytes.empty()) return true;
  try {
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    const msgpack::object& o = oh.get();
    if (o.type != msgpack::type::MAP) return false;
    for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) continue;
      if (std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) != field) continue;
      if (kv.val.type != msgpack::type::POSITIVE_INTEGER) return false;
      out = kv.val.via.u64;
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool is_space_error(int err) {
  return err == ENOSPC || err == EDQUOT || err == EFBIG;
}

// The id of an envelope that does not decode, when its first fields are still readable (array, version
// as a fixint, 16-byte bin), so a refusal names the message it is about.
message_id readable_id(std::string_view env) {
  const auto* b = reinterpret_cast<const unsigned char*>(env.data());
  if (env.size() >= 20 && (b[0] & 0xf0) == 0x90 && b[1] < 0x80 && b[2] == 0xc4 && b[3] == 16)
    return *message_id::from_bytes(env.substr(4, 16));
  return {};
}

// Bytes from the network, fit for a log line or an error text.
std::string printable(std::string_view bytes) {
  std::string shown(bytes.substr(0, 64));
  for (auto& c : shown)
    if (c < 32 || c > 126) c = '?';
  return shown;
}

// A ZeroMQ routing id for logs.
std::string peer_name(std::string_view identity) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : identity) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace

// ---- data directory ------------------------------------------------------------------------------------

data_dir_lock::data_dir_lock(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec))
    throw startup_error(exit_data_dir, fmt::format("data directory {} does not exist (create it first, e.g. "
                                                   "mkdir -p {})",
                                                   dir.string(), dir.string()));
  if (!fs::is_directory(dir, ec))
    throw startup_error(exit_data_dir, fmt::format("data directory {} is not a directory", dir.string()));
  const fs::path lock_path = dir / "ferryd.lock";
  fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw startup_error(exit_data_dir, fmt::format("data directory {} is not writable: cannot create {}: {}",
                                                   dir.string(), lock_path.string(), std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    throw startup_error(
        exit_locked, fmt::format("another ferryd (pid {}) is using data directory {}; stop it "
                                 "or pick another --data-dir",
                                 n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?", dir.string()));
  }
  // A full disk is no reason not to start: consumers draining the backlog is what frees space, and
  // producers are refused with disk_full meanwhile. Anything else that stops a write is.
  auto fatal = [](int err) { return err != ENOSPC && err != EDQUOT; };
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    if (fatal(errno))
      throw startup_error(exit_data_dir, fmt::format("data directory {} is not writable: {}", dir.string(),
                                                     std::strerror(errno)));
  }
  // A probe write: catches a directory we may lock but not fill (a read-only mount).
  const fs::path probe = dir / ".ferryd-probe";
  const int pfd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (pfd < 0 || ::write(pfd, "ok", 2) != 2) {
    const int err = errno;
    if (pfd >= 0) ::close(pfd);
    ::unlink(probe.c_str());
    if (fatal(err))
      throw startup_error(exit_data_dir, fmt::format("data directory {} is not writable: {}", dir.string(),
                                                     std::strerror(err)));
    logger().warn(
        "data directory {} is full: starting anyway; producers are refused (disk_full) until "
        "consumers or an operator free space",
        dir.string());
    return;
  }
  ::close(pfd);
  ::unlink(probe.c_str());
}

data_dir_lock::~data_dir_lock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

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
  std::error_code ec;
  fs::create_directories(options_.data_dir / "queues", ec);
  if (ec)
    throw startup_error(exit_data_dir, fmt::format("cannot create {}: {}",
                                                   (options_.data_dir / "queues").string(), ec.message()));
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
  logger().info("ferryd started in {:.3f} s: {} queue(s), fsync {}, data dir {}",
                std::chrono::duration<double>(steady::now() - t0).count(), queues_.size(),
                options_.fsync == fsync_policy::always
                    ? "always"
                    : fmt::format("every {} ms", options_.fsync_interval.count()),
                options_.data_dir.string());
  for (const auto& ep : bound_) logger().info("listening on {}", ep);
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
    if (entry.is_directory() && fwd::valid_queue_name(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) open_queue(name);
}

forwarder::queue_slot* forwarder::find_queue(std::string_view name) {
  const auto it = queue_index_.find(std::string(name));
  return it == queue_index_.end() ? nullptr : &queues_[it->second];
}

forwarder::queue_slot& forwarder::open_queue(const std::string& name) {
  if (auto* slot = find_queue(name)) return *slot;
  const auto index = static_cast<std::uint32_t>(queues_.size());
  queue_config config = options_.queue;
  if (fwd::is_dlq_name(name)) config.max_attempts = ~0u;  // dead letters are never dead-lettered again
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
    for (const auto& p : log_report.problems) logger().warn("queue {}: {}", name, p);
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
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    sig_fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  }
  logger().info("ready");
  std::vector<zmq::message_t> frames;
  frames.reserve(64);
  next_timer_ = steady::now();
  while (!stop_.load(std::memory_order_relaxed)) {
    zmq_pollitem_t items[3] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, commit_fd_, ZMQ_POLLIN, 0},
                               {nullptr, sig_fd, ZMQ_POLLIN, 0}};
    const auto now0 = steady::now();
    long timeout_ms =
        std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(next_timer_ - now0).count());
    try {
      zmq::poll(items, sig_fd >= 0 ? 3 : 2, std::chrono::milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (sig_fd >= 0 && (items[2].revents & ZMQ_POLLIN)) {
      signalfd_siginfo info{};
      (void)!::read(sig_fd, &info, sizeof info);
      logger().info("received {}, shutting down", info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      std::uint64_t n = 0;
      (void)!::read(commit_fd_, &n, sizeof n);
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
    ++rejected_frames_;
    return;
  }
  const std::string identity(view(frames[0]));
  const std::string_view verb = view(frames[1]);
  if (auto p = peers_.find(identity); p != peers_.end()) p->second.last_seen = steady::now();
  if (verb == fwd::send) return on_send(identity, frames);
  if (verb == fwd::ack || verb == fwd::nack || verb == fwd::reject) return on_answer(identity, verb, frames);
  if (verb == fwd::ping) {
    std::vector<zmq::message_t> reply;
    reply.push_back(frame(fwd::pong));
    char inst[8];
    fwd::put_u64(inst, instance_);
    reply.emplace_back(inst, 8);
    send_frames(identity, reply);
    // A consumer names its queue: tell it when it is no longer subscribed (declared dead, or a restart).
    if (frames.size() >= 3) {
      const queue_slot* slot = find_queue(view(frames[2]));
      if (slot == nullptr || !slot->q->has_subscriber(identity))
        send_error(identity, fwd::code::not_consuming,
                   fmt::format("this connection is not consuming queue '{}'; send CONSUME again",
                               printable(view(frames[2]))));
    }
    return;
  }
  if (verb == fwd::consume) return on_consume(identity, frames);
  if (verb == fwd::cancel) return on_cancel(identity, frames);
  if (verb == fwd::hello) return on_hello(identity, frames);
  if (verb == fwd::stats) return on_stats(identity);
  if (verb == fwd::dlq) return on_dlq(identity, frames);
  ++rejected_frames_;
  send_error(identity, fwd::code::unknown_verb, fmt::format("unknown verb '{}'", printable(verb)));
}

void forwarder::on_hello(const std::string& identity, std::vector<zmq::message_t>& frames) {
  std::uint64_t version = 1;
  if (frames.size() >= 3 && !map_uint(view(frames[2]), "version", version, 1)) {
    ++rejected_frames_;
    return send_error(
        identity, fwd::code::bad_frames,
        "HELLO: the second frame must be a MessagePack map whose \"version\" is an unsigned integer");
  }
  if (version != fwd::protocol_version) {
    return send_error(identity, fwd::code::bad_frames,
                      fmt::format("protocol version {} is not supported; this ferryd speaks version {}",
                                  version, fwd::protocol_version));
  }
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::welcome));
  reply.push_back(frame(packed([&](auto& pk) {
    pk.pack_map(7);
    pk.pack("version");
    pk.pack(fwd::protocol_version);
    pk.pack("server");
    pk.pack(std::string("ferryd ") + FERRY_VERSION);
    pk.pack("instance");
    pk.pack(instance_);
    pk.pack("heartbeat_ms");
    pk.pack(static_cast<std::uint64_t>(options_.heartbeat_interval.count()));
    pk.pack("lease_ms");
    pk.pack(static_cast<std::uint64_t>(options_.queue.lease.count()));
    pk.pack("max_message_bytes");
    pk.pack(options_.max_message_bytes);
    pk.pack("max_batch");
    pk.pack(static_cast<std::uint64_t>(fwd::max_batch));
  })));
  send_frames(identity, reply);
}

bool forwarder::disk_full(steady::time_point now) {
  return low_disk_ || now < disk_full_until_;
}

void forwarder::on_send(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 5 || (frames.size() - 3) % 2 != 0) {
    ++rejected_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      "SEND needs: queue, then envelope and payload frames in pairs");
  }
  const std::string_view name = view(frames[2]);
  const std::size_t count = (frames.size() - 3) / 2;
  const auto now = steady::now();
  std::string queue_problem;
  if (!fwd::valid_queue_name(name)) {
    queue_problem = "queue names are 1-200 characters of A-Z a-z 0-9 . _ - and do not start with '.'";
  } else if (fwd::is_dlq_name(name)) {
    queue_problem = "dead-letter queues are written by ferryd only (use DLQ replay to move messages back)";
  }
  std::string batch_problem;
  if (count > fwd::max_batch)
    batch_problem = fmt::format("at most {} messages per SEND; send them in smaller batches", fwd::max_batch);
  queue_slot* slot = queue_problem.empty() ? &open_queue(std::string(name)) : nullptr;
  const bool no_space = disk_full(now);
  const std::int64_t now_us = unix_now_us();
  for (std::size_t i = 0; i < count; ++i) {
    const zmq::message_t& env = frames[3 + 2 * i];
    const zmq::message_t& payload = frames[4 + 2 * i];
    const decode_error err = decode_envelope(view(env), scratch_);
    const message_id id = err == decode_error::none ? scratch_.id() : readable_id(view(env));
    if (!queue_problem.empty()) {
      refuse(identity, id, fwd::code::bad_queue, queue_problem);
      continue;
    }
    if (!batch_problem.empty()) {
      ++rejected_frames_;
      refuse(identity, id, fwd::code::malformed, batch_problem);
      continue;
    }
    queue& q = *slot->q;
    if (err != decode_error::none) {
      ++rejected_frames_;
      ++q.counters().refused;
      refuse(identity, id, fwd::code::malformed, fmt::format("envelope rejected: {}", to_string(err)));
      continue;
    }
    if (payload.size() > options_.max_message_bytes) {
      ++q.counters().refused;
      refuse(identity, id, fwd::code::too_large,
             fmt::format("payload of {} bytes is over the limit of {} bytes", payload.size(),
                         options_.max_message_bytes));
      continue;
    }
    if (const auto first = q.admit(id, now)) {
      // A resend. Confirm it now if the first copy is durable, or together with it if still in a batch.
      ++q.counters().deduplicated;
      if (q.commit_finished(*first)) {
        queue_confirm(identity, id);
      } else {
        slot->extra_waiters.emplace(id, identity);
      }
      continue;
    }
    if (no_space) {
      q.append_failed_admission(id);
      ++q.counters().refused;
      refuse(identity, id, fwd::code::disk_full,
             "the data directory is out of space; the message was not stored (retry later)");
      continue;
    }
    if (q.full()) {
      q.append_failed_admission(id);
      ++q.counters().refused;
      refuse(identity, id, fwd::code::queue_full,
             fmt::format("queue {} holds its maximum of {} messages", q.name(), q.config().max_messages));
      continue;
    }
    scratch_.set_attempt(0);
    envelope_buffer_.resize(envelope_size(scratch_, envelope_form::storage));
    encode_envelope(scratch_, envelope_buffer_.data(), envelope_form::storage);
    const std::uint64_t seq = q.append(id, key_hash(scratch_.key()), envelope_buffer_, view(payload), now_us);
    slot->gathering.push_back(pending_append{seq, id, identity});
  }
}

void forwarder::queue_confirm(const std::string& identity, const message_id& id) {
  // Confirms come in runs for one producer: remember where the last one went.
  if (last_confirm_ == nullptr || last_confirm_identity_ != identity) {
    last_confirm_ = &confirms_out_[identity];
    last_confirm_identity_ = identity;
  }
  last_confirm_->append(id.view());
}

void forwarder::refuse(const std::string& identity, const message_id& id, std::string_view code,
                       const std::string& text) {
  std::uint64_t held = 0;
  static detail::log_limiter limiter(10);
  if (limiter.allow(held))
    logger().warn("refused message {}: {}: {}{}", id.to_hex(), code, text,
                  held ? fmt::format(" ({} more refusals not logged)", held) : std::string());
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::refuse));
  reply.emplace_back(id.view().data(), id.view().size());
  reply.push_back(frame(code));
  reply.push_back(frame(text));
  send_frames(identity, reply);
}

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

void forwarder::on_consume(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 3) {
    ++rejected_frames_;
    return send_error(identity, fwd::code::bad_frames, "CONSUME needs a queue frame");
  }
  const std::string_view name = view(frames[2]);
  if (!fwd::valid_queue_name(name))
    return send_error(identity, fwd::code::bad_queue,
                      fmt::format("'{}' is not a valid queue name", printable(name)));
  std::uint64_t prefetch = 64;
  if (frames.size() >= 4 && !map_uint(view(frames[3]), "prefetch", prefetch, 64)) {
    ++rejected_frames_;
    return send_error(identity, fwd::code::bad_frames, "CONSUME options must be a MessagePack map");
  }
  prefetch = std::clamp<std::uint64_t>(prefetch, 1, 100'000);
  queue_slot& slot = open_queue(std::string(name));
  slot.q->subscribe(identity, static_cast<std::uint32_t>(prefetch));
  peer& p = peers_[identity];
  p.last_seen = steady::now();
  if (std::find(p.queues.begin(), p.queues.end(), slot.q->index()) == p.queues.end())
    p.queues.push_back(slot.q->index());
  logger().info("consumer {} on queue {} (prefetch {})", peer_name(identity), name, prefetch);
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::consuming));
  reply.push_back(frame(name));
  reply.push_back(frame(packed([&](auto& pk) {
    pk.pack_map(4);
    pk.pack("prefetch");
    pk.pack(prefetch);
    pk.pack("lease_ms");
    pk.pack(static_cast<std::uint64_t>(options_.queue.lease.count()));
    pk.pack("heartbeat_ms");
    pk.pack(static_cast<std::uint64_t>(options_.heartbeat_interval.count()));
    pk.pack("instance");
    pk.pack(instance_);
  })));
  send_frames(identity, reply);
}

void forwarder::on_cancel(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 3) {
    ++rejected_frames_;
    return send_error(identity, fwd::code::bad_frames, "CANCEL needs a queue frame");
  }
  if (!fwd::valid_queue_name(view(frames[2])))
    return send_error(identity, fwd::code::bad_queue,
                      fmt::format("'{}' is not a valid queue name", printable(view(frames[2]))));
  if (queue_slot* slot = find_queue(view(frames[2]))) {
    slot->q->unsubscribe(identity, false);
    if (auto p = peers_.find(identity); p != peers_.end()) {
      std::erase(p->second.queues, slot->q->index());
      if (p->second.queues.empty()) peers_.erase(p);
    }
  }
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::cancelled));
  reply.push_back(frame(view(frames[2])));
  send_frames(identity, reply);
}

void forwarder::on_answer(const std::string& identity, std::string_view verb,
                          std::vector<zmq::message_t>& frames) {
  const bool is_ack = verb == fwd::ack;
  if (frames.size() < 4 || (is_ack && frames[3].size() % fwd::token_size != 0) ||
      (!is_ack && frames[3].size() != fwd::token_size)) {
    ++rejected_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      fmt::format("{} needs: queue, then {}", verb,
                                  is_ack ? "tokens (8 bytes each)" : "a token and a reason"));
  }
  queue_slot* slot = find_queue(view(frames[2]));
  if (slot == nullptr || !slot->q->has_subscriber(identity)) {
    // ferryd restarted or declared this consumer dead: nothing it answers settles anything.
    return send_error(identity, fwd::code::not_consuming,
                      fmt::format("this connection is not consuming queue '{}'; send CONSUME again",
                                  printable(view(frames[2]))));
  }
  queue& q = *slot->q;
  const char* tokens = static_cast<const char*>(frames[3].data());
  if (is_ack) {
    for (std::size_t i = 0; i < frames[3].size(); i += fwd::token_size)
      (void)q.ack(identity, fwd::get_u64(tokens + i));
  } else {
    std::string reason =
        frames.size() >= 5 ? std::string(view(frames[4]).substr(0, 1024)) : std::string("no reason given");
    // A dead letter rejected again stays where it is: there is no dead-letter queue of a dead-letter queue.
    if (verb == fwd::nack || fwd::is_dlq_name(q.name())) {
      (void)q.nack(identity, fwd::get_u64(tokens), std::move(reason));
    } else {
      (void)q.reject(identity, fwd::get_u64(tokens), std::move(reason));
    }
  }
}

// ---- delivery, dead letters
// ----------------------------------------------------------------------------------

void forwarder::dispatch_all(steady::time_point now) {
  for (auto& slot : queues_) {
    queue& q = *slot.q;
    if (q.subscribers() == 0 || !q.has_work()) continue;
    if (q.dispatch(now) == 0) continue;
    for (auto& [identity, sub] : q.subs()) {
      const std::size_t messages = sub->out_frames.size() / 2;
      for (std::size_t first = 0; first < messages; first += fwd::max_deliver) {
        const std::size_t n = std::min(fwd::max_deliver, messages - first);
        std::vector<zmq::message_t> out;
        out.reserve(2 * n + 3);
        out.push_back(frame(fwd::deliver));
        out.push_back(frame(q.name()));
        out.push_back(
            frame(std::string_view(sub->out_tokens).substr(first * fwd::token_size, n * fwd::token_size)));
        for (std::size_t i = 2 * first; i < 2 * (first + n); ++i)
          out.push_back(std::move(sub->out_frames[i]));
        // Sent after the journal is flushed (see run()); kept here until then.
        pending_delivers_.push_back({identity, std::move(out)});
      }
      sub->out_frames.clear();
      sub->out_tokens.clear();
    }
  }
}

void forwarder::move_dead_letters() {
  for (std::uint32_t i = 0; i < queues_.size(); ++i) {
    queue& source = *queues_[i].q;
    auto requests = source.take_dead_letters();
    const auto now = steady::now();
    for (auto& req : requests) {
      if (req.not_before > now) {
        source.dead_letter_failed(
            std::move(req), std::chrono::duration_cast<std::chrono::milliseconds>(req.not_before - now));
        continue;
      }
      message_record rec;
      if (!source.read(req.where, read_buffer_, rec)) {
        logger().error("queue {}: cannot read message seq {} to dead-letter it; it is dropped", source.name(),
                       req.seq);
        source.dead_lettered(req.seq);
        continue;
      }
      queue_slot& dlq = open_queue(source.name() + std::string(fwd::dlq_suffix));
      message m;
      if (decode_envelope(rec.envelope, m) != decode_error::none) {
        logger().error("queue {}: stored envelope of seq {} does not decode; dead-lettering it as is",
                       source.name(), req.seq);
        m.set_id(rec.id);
      }
      if (const auto first = dlq.q->admit(m.id(), now)) {
        if (!dlq.q->commit_finished(*first)) {
          source.dead_letter_failed(std::move(req), std::chrono::milliseconds(50));  // its copy is on the way
          continue;
        }
        if (dlq.q->unsettled(*first)) {
          source.dead_lettered(req.seq);  // moved before a restart: finish the move
          continue;
        }
        dlq.q->readmit(m.id(), now);  // an earlier copy was replayed or purged: this is a new dead letter
      }
      m.set_header("ferry-dead-letter-reason", req.reason);
      m.set_header("ferry-attempts", std::to_string(req.attempts));
      m.set_header("ferry-source-queue", source.name());
      m.set_attempt(0);
      envelope_buffer_.resize(envelope_size(m, envelope_form::storage));
      encode_envelope(m, envelope_buffer_.data(), envelope_form::storage);
      const std::uint64_t seq =
          dlq.q->append(m.id(), key_hash(m.key()), envelope_buffer_, rec.payload, unix_now_us());
      pending_append p;
      p.seq = seq;
      p.id = m.id();
      p.source_queue = i;
      p.source_seq = req.seq;
      logger().info("queue {}: message {} goes to {} ({})", source.name(), m.id().to_hex(), dlq.q->name(),
                    req.reason);
      p.request = std::make_unique<dead_letter_request>(std::move(req));
      dlq.gathering.push_back(std::move(p));
    }
  }
}

void forwarder::flush_journals() {
  for (auto& slot : queues_) {
    journal& j = slot.q->state_journal();
    if (!j.has_buffered()) continue;
    if (const int err = j.flush(); err != 0) {
      static detail::log_limiter limiter(1);
      std::uint64_t held = 0;
      if (limiter.allow(held))
        logger().error("queue {}: cannot write its journal: {} (kept in memory, retried)", slot.q->name(),
                       std::strerror(err));
    }
    slot.journal_dirty = true;
  }
}

void forwarder::flush_outgoing() {
  for (auto& [identity, frames] : pending_delivers_) send_frames(identity, frames);
  pending_delivers_.clear();
  for (auto& [identity, ids] : confirms_out_) {
    std::vector<zmq::message_t> reply;
    reply.push_back(frame(fwd::confirm));
    reply.push_back(frame(ids));
    send_frames(identity, reply);
  }
  confirms_out_.clear();
  last_confirm_ = nullptr;
}

void forwarder::maybe_submit() {
  if (commit_->busy()) return;
  commit_batch batch;
  for (auto& slot : queues_) {
    if (!slot.q->has_pending()) continue;
    batch.appends.push_back({slot.q->writer(), slot.q->index(), slot.q->take_pending()});
    slot.committing = std::move(slot.gathering);
    slot.gathering.clear();
  }
  // Settlements and attempt counts are written to the journal every loop iteration (so a killed ferryd
  // loses none) but synced only with the first batch after 200 ms have passed (with `--fsync interval`,
  // on its interval): a machine crash can bring back what was acknowledged meanwhile, to be delivered
  // again, and never loses a confirmed message. Syncing them with every batch would put a second
  // fdatasync on the path of every confirm; this way one batch in 200 ms carries it.
  const auto now = steady::now();
  const bool sync_journals =
      now - last_journal_sync_ >= std::chrono::milliseconds(200) &&
      std::any_of(queues_.begin(), queues_.end(), [](const queue_slot& q) { return q.journal_dirty; });
  if (batch.appends.empty() && !sync_journals) return;
  if (sync_journals) {
    last_journal_sync_ = now;
    for (auto& slot : queues_) {
      if (slot.journal_dirty) {
        batch.sync_fds.push_back(slot.q->state_journal().fd());
        slot.journal_dirty = false;
      }
    }
  }
  batch.number = ++batch_number_;
  commit_->submit(std::move(batch));
}

void forwarder::handle_commit(commit_result& result) {
  if (result.sync_error != 0) {
    // After a failed fdatasync nothing can be called durable, and retrying may report success for data
    // that never reached the disk. Stop; a restart recovers from what is really on disk.
    logger().critical(
        "fdatasync failed: {}; ferryd stops without confirming the batch. Restart it to recover.",
        std::strerror(result.sync_error));
    std::_Exit(exit_runtime);
  }
  ++commits_;
  for (std::size_t n = 0; n < result.outcomes.size(); ++n) {
    auto& [index, outcome] = result.outcomes[n];
    queue_slot& slot = queues_[index];
    queue& q = *slot.q;
    q.committed(outcome);
    if (n < result.buffers.size()) q.recycle(std::move(result.buffers[n]));
    const bool failed = outcome.error != 0;
    if (failed) {
      if (is_space_error(outcome.error)) {
        disk_full_until_ = steady::now() + std::chrono::seconds(1);
        logger().error(
            "queue {}: write failed: {}; producers are refused with disk_full for a second, then "
            "writes are tried again",
            q.name(), std::strerror(outcome.error));
      } else {
        logger().error("queue {}: write failed: {}; the batch is refused with io_error", q.name(),
                       std::strerror(outcome.error));
      }
    }
    for (auto& p : slot.committing) {
      const bool ok = !failed || (outcome.durable_through != 0 && p.seq <= outcome.durable_through);
      auto waiters = slot.extra_waiters.equal_range(p.id);
      if (ok) {
        ++committed_records_;
        if (!p.identity.empty()) {
          ++q.counters().confirmed;
          queue_confirm(p.identity, p.id);
        }
        for (auto w = waiters.first; w != waiters.second; ++w) queue_confirm(w->second, p.id);
        if (p.source_queue != ~0u) {
          queue& source = *queues_[p.source_queue].q;
          if (p.replay) {
            source.settle_waiting(p.source_seq, settle_reason::replayed);
          } else {
            source.dead_lettered(p.source_seq);
          }
        }
      } else {
        q.append_failed(p.id, p.seq);
        const std::string_view code =
            is_space_error(outcome.error) ? fwd::code::disk_full : fwd::code::io_error;
        const std::string text = fmt::format("not stored: {}", std::strerror(outcome.error));
        if (!p.identity.empty()) {
          ++q.counters().refused;
          refuse(p.identity, p.id, code, text);
        }
        for (auto w = waiters.first; w != waiters.second; ++w) refuse(w->second, p.id, code, text);
        if (p.source_queue != ~0u && !p.replay && p.request)
          queues_[p.source_queue].q->dead_letter_failed(std::move(*p.request), std::chrono::seconds(1));
      }
      slot.extra_waiters.erase(p.id);
    }
    slot.committing.clear();
  }
}

// ---- timers
// -------------------------------------------------------------------------------------------------

void forwarder::on_timer(steady::time_point now) {
  next_timer_ = now + std::chrono::milliseconds(100);
  for (auto& slot : queues_) slot.q->expire_leases(now);
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (now - it->second.last_seen > options_.heartbeat_timeout) {
      for (const std::uint32_t index : it->second.queues) {
        queue& q = *queues_[index].q;
        logger().warn(
            "consumer {} on queue {} silent for over {} ms: its {} delivery(ies) go back to the queue",
            peer_name(it->first), q.name(), options_.heartbeat_timeout.count(),
            q.subs().count(it->first) ? q.subs().at(it->first)->unacked : 0u);
        q.unsubscribe(it->first, true);
      }
      it = peers_.erase(it);
    } else {
      ++it;
    }
  }
  if (now >= next_disk_check_) {
    next_disk_check_ = now + std::chrono::seconds(1);
    struct statvfs st {};
    if (::statvfs(options_.data_dir.c_str(), &st) == 0) {
      const std::uint64_t free_bytes = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
      const bool low = free_bytes < options_.min_free_bytes;
      if (low && !low_disk_)
        logger().warn("free space in {} is {} bytes, under --min-free-mb: producers are refused (disk_full)",
                      options_.data_dir.string(), free_bytes);
      if (!low && low_disk_)
        logger().info("free space in {} is back to {} bytes: accepting messages again",
                      options_.data_dir.string(), free_bytes);
      low_disk_ = low;
    }
  }
  if (!commit_->busy()) {
    flush_journals();  // housekeeping may rewrite a journal: what is buffered goes first (and gets synced)
    const std::int64_t now_us = unix_now_us();
    for (auto& slot : queues_) slot.q->housekeeping(now_us);
  }
}

// ---- admin ------------------------------------------------------------------------------------------------

void forwarder::on_stats(const std::string& identity) {
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::stats_reply));
  reply.push_back(frame(packed([&](auto& pk) {
    pk.pack_map(6);
    pk.pack("server");
    pk.pack(std::string("ferryd ") + FERRY_VERSION);
    pk.pack("instance");
    pk.pack(instance_);
    pk.pack("uptime_s");
    pk.pack(std::chrono::duration<double>(steady::now() - started_).count());
    pk.pack("rejected_frames");
    pk.pack(rejected_frames_);
    pk.pack("commits");
    pk.pack(commits_);
    pk.pack("queues");
    pk.pack_map(static_cast<std::uint32_t>(queues_.size()));
    for (auto& slot : queues_) {
      queue& q = *slot.q;
      const auto& c = q.counters();
      pk.pack(q.name());
      pk.pack_map(16);
      pk.pack("depth");
      pk.pack(q.depth());
      pk.pack("in_flight");
      pk.pack(static_cast<std::uint64_t>(q.in_flight()));
      pk.pack("parked");
      pk.pack(static_cast<std::uint64_t>(q.parked()));
      pk.pack("consumers");
      pk.pack(static_cast<std::uint64_t>(q.subscribers()));
      pk.pack("disk_bytes");
      pk.pack(q.disk_bytes());
      pk.pack("confirmed");
      pk.pack(c.confirmed);
      pk.pack("delivered");
      pk.pack(c.delivered);
      pk.pack("acked");
      pk.pack(c.acked);
      pk.pack("nacked");
      pk.pack(c.nacked);
      pk.pack("redelivered");
      pk.pack(c.redelivered);
      pk.pack("expired");
      pk.pack(c.expired);
      pk.pack("dead_lettered");
      pk.pack(c.dead_lettered);
      pk.pack("deduplicated");
      pk.pack(c.deduplicated);
      pk.pack("refused");
      pk.pack(c.refused);
      pk.pack("stale_acks");
      pk.pack(c.stale_acks);
      pk.pack("rejected");
      pk.pack(c.rejected);
    }
  })));
  send_frames(identity, reply);
}

void forwarder::on_dlq(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 4) {
    ++rejected_frames_;
    return send_error(identity, fwd::code::bad_frames, "DLQ needs: queue, operation (list, replay or purge)");
  }
  const std::string name(view(frames[2]));
  const std::string_view op = view(frames[3]);
  std::uint64_t limit = 100;
  if (frames.size() >= 5 && !map_uint(view(frames[4]), "limit", limit, 100))
    return send_error(identity, fwd::code::bad_frames, "DLQ options must be a MessagePack map");
  if (!fwd::valid_queue_name(name) || fwd::is_dlq_name(name))
    return send_error(identity, fwd::code::bad_queue,
                      "DLQ takes the name of the queue whose dead letters to use");
  queue_slot* dlq_slot = find_queue(name + std::string(fwd::dlq_suffix));
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::dlq_reply));
  if (op == "list") {
    std::vector<std::pair<message_record, std::string>> items;  // record views need their buffer alive
    std::vector<std::string> buffers;
    std::vector<queue::listed> listed;
    if (dlq_slot != nullptr)
      listed = dlq_slot->q->list(static_cast<std::size_t>(std::min<std::uint64_t>(limit, 10'000)));
    reply.push_back(frame(packed([&](auto& pk) {
      pk.pack_map(3);
      pk.pack("queue");
      pk.pack(name + std::string(fwd::dlq_suffix));
      pk.pack("depth");
      pk.pack(dlq_slot ? dlq_slot->q->depth() : 0);
      pk.pack("messages");
      pk.pack_array(static_cast<std::uint32_t>(listed.size()));
      std::string buf;
      for (const auto& l : listed) {
        message_record rec;
        message m;
        const bool ok =
            dlq_slot->q->read(l.where, buf, rec) && decode_envelope(rec.envelope, m) == decode_error::none;
        pk.pack_map(7);
        pk.pack("seq");
        pk.pack(l.seq);
        pk.pack("id");
        const std::string_view id_bytes = ok ? m.id().view() : std::string_view();
        pk.pack_bin(static_cast<std::uint32_t>(id_bytes.size()));
        pk.pack_bin_body(id_bytes.data(), static_cast<std::uint32_t>(id_bytes.size()));
        pk.pack("timestamp_us");
        pk.pack(ok ? m.timestamp_us() : 0);
        pk.pack("key");
        pk.pack(ok ? m.key() : std::string());
        pk.pack("headers");
        pk.pack(ok ? std::map<std::string, std::string>(m.headers().begin(), m.headers().end())
                   : std::map<std::string, std::string>());
        pk.pack("stored_at_us");
        pk.pack(ok ? rec.stored_at_us : 0);
        pk.pack("payload");
        const std::string_view payload = ok ? rec.payload : std::string_view();
        pk.pack_bin(static_cast<std::uint32_t>(payload.size()));
        pk.pack_bin_body(payload.data(), static_cast<std::uint32_t>(payload.size()));
      }
    })));
    return send_frames(identity, reply);
  }
  if (op == "purge" || op == "replay") {
    std::uint64_t done = 0;
    if (dlq_slot != nullptr) {
      const auto listed =
          dlq_slot->q->list(static_cast<std::size_t>(std::min<std::uint64_t>(limit, 1'000'000)));
      queue_slot* target = op == "replay" ? &open_queue(name) : nullptr;
      const std::uint32_t dlq_index = dlq_slot->q->index();
      std::string buf;
      for (const auto& l : listed) {
        queue& dlq = *queues_[dlq_index].q;
        if (op == "purge") {
          if (dlq.settle_waiting(l.seq, settle_reason::purged)) ++done;
          continue;
        }
        message_record rec;
        message m;
        if (!dlq.read(l.where, buf, rec) || decode_envelope(rec.envelope, m) != decode_error::none) continue;
        for (const char* h : {"ferry-dead-letter-reason", "ferry-attempts", "ferry-source-queue"})
          m.headers().erase(h);
        m.set_attempt(0);
        envelope_buffer_.resize(envelope_size(m, envelope_form::storage));
        encode_envelope(m, envelope_buffer_.data(), envelope_form::storage);
        // A deliberate move: the dedup window, which still remembers this id from its first trip, is not
        // asked.
        (void)target->q->admit(m.id(), steady::now());
        const std::uint64_t seq =
            target->q->append(m.id(), key_hash(m.key()), envelope_buffer_, rec.payload, unix_now_us());
        pending_append p;
        p.seq = seq;
        p.id = m.id();
        p.source_queue = dlq_index;
        p.source_seq = l.seq;
        p.replay = true;
        target->gathering.push_back(std::move(p));
        ++done;
      }
    }
    logger().info("DLQ {} of queue {}: {} message(s)", op, name, done);
    reply.push_back(frame(packed([&](auto& pk) {
      pk.pack_map(1);
      pk.pack(op == "purge" ? "purged" : "replayed");
      pk.pack(done);
    })));
    return send_frames(identity, reply);
  }
  send_error(identity, fwd::code::bad_frames, "DLQ operations are list, replay and purge");
}

// ---- shutdown
// -----------------------------------------------------------------------------------------------

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
  router_.close();  // lingers up to 2 s so the last confirms leave
  logger().info(status == exit_ok ? "ferryd stopped" : "ferryd stopped with errors");
  return status;
}

}  // namespace ferry::ferryd
