// The raw baseline's server (bench_durable --role raw-server): the bare mechanism a durable queue cannot do
// without, written with plain cppzmq, so that the ratio puts a price on everything else ferryd does.
//
// A ROUTER appends each message (4-byte length, 8-byte sequence number, id, payload) to one file. A second
// thread writes the gathered batch and fdatasyncs it while the next batch gathers (group commit, as ferryd
// does); then one confirm frame per producer per batch ('K' and the ids). With a consumer attached it
// delivers the durable messages against credit and appends the acknowledged sequence numbers to an ack file,
// written every loop iteration and synced with the first batch after 200 ms (as ferryd syncs its journal).
// No checksums, dedup, leases, redelivery, dead letters, per-key order, segments or metrics; undelivered
// messages are kept in memory: those stored while no consumer is attached only with --backlog (the replay
// case), so the other cases do not pay for it. On restart it scans its file (length framing only, a torn
// tail is cut) and reports how long that took.
//
// Threads: the loop thread owns the socket and every container but the batch being committed, which is
// handed to the sync thread under the mutex and back through an eventfd.

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common.hpp"
#include "durable.hpp"

namespace bench::durable {
namespace {

std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return v;
}
void put_u64(std::string& out, std::uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), 8);
}

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
    if (!consumers_.empty() || o_.backlog) {  // the batch is durable: it may be delivered
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

}  // namespace

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

}  // namespace bench::durable
