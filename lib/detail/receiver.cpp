#include "detail/receiver.hpp"

#include <atomic>

#include "detail/wire.hpp"
#include "ferry/error.hpp"

namespace ferry::detail {
namespace {

// A blocking receive wakes at least this often to notice stop(). Blocking (rather than a non-blocking
// try followed by zmq_poll) keeps one system call per message when messages come one at a time.
constexpr int stop_check_ms = 50;

// Stops draining a socket at shutdown after this many messages, so stop() is bounded even while a peer
// keeps sending.
constexpr std::uint64_t max_drain = 1'000'000;

}  // namespace

receiver::receiver(zmq::socket_t socket, receiver_config config, message_handler handler)
    : config_(std::move(config)), handler_(std::move(handler)), socket_(std::move(socket)) {
  if (!handler_) throw error(config_.name + ": a handler is required");
  if (config_.threads == 0) throw error(config_.name + ": threads must be at least 1");
  socket_.set(zmq::sockopt::rcvtimeo, stop_check_ms);
  if (config_.dedup) dedup_.emplace(*config_.dedup);
  for (unsigned i = 0; i < config_.threads; ++i) per_thread_.push_back(std::make_unique<handler_counters>());
  if (config_.threads > 1) {
    queue_capacity_ = 2 * config_.threads;
    for (unsigned i = 0; i < config_.threads; ++i)
      handler_threads_.emplace_back([this, i] { handler_loop(i); });
  }
  receive_thread_ = std::thread([this] { receive_loop(); });
}

receiver::~receiver() {
  stop();
}

void receiver::stop() {
  std::lock_guard guard(stop_mutex_);
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(queue_mutex_);
    stopping_.store(true, std::memory_order_relaxed);
  }
  queue_not_full_.notify_all();
  receive_thread_.join();
  for (auto& t : handler_threads_) t.join();
}

void receiver::run_handler(message& msg, counter& handled, counter& failed) {
  try {
    handler_(msg);
    handled.add();
  } catch (const std::exception& e) {
    failed.add();
    std::uint64_t held = 0;
    if (failure_log_.allow(held))
      logger().warn("{}: handler threw on message {}: {}{}", config_.name, msg.id().to_hex(), e.what(),
                    suppressed_note(held));
  } catch (...) {
    failed.add();
    std::uint64_t held = 0;
    if (failure_log_.allow(held))
      logger().warn("{}: handler threw a non-std exception on message {}", config_.name, msg.id().to_hex());
  }
}

bool receiver::dispatch(message& msg, handler_counters& own) {
  if (dedup_ && dedup_->check_and_insert(msg.id())) {
    duplicates_.add();
    return true;
  }
  if (config_.threads == 1) {
    if (stopping_.load(std::memory_order_relaxed)) return false;  // stopping inside a batch
    run_handler(msg, own.handled, own.failed);
    return true;
  }
  std::unique_lock lock(queue_mutex_);
  queue_not_full_.wait(
      lock, [&] { return queue_.size() < queue_capacity_ || stopping_.load(std::memory_order_relaxed); });
  if (queue_.size() >= queue_capacity_) return false;  // stopping with no room
  queue_.push_back(std::move(msg));
  lock.unlock();
  queue_not_empty_.notify_one();
  return true;
}

void receiver::receive_loop() {
  frame_reader reader(config_.limits);
  handler_counters& own = *per_thread_[0];
  std::vector<message> repaired;
  while (!stopping_.load(std::memory_order_relaxed)) {
    const receive_status st = reader.receive(socket_, true);
    if (st == receive_status::would_block) continue;  // the timeout: look at stopping_ again
    if (st == receive_status::closed) break;
    if (st == receive_status::rejected) {
      malformed_.add();
      std::uint64_t held = 0;
      if (reject_log_.allow(held))
        logger().warn("{}: dropped a malformed message ({}){}", config_.name, to_string(reader.error()),
                      suppressed_note(held));
      continue;
    }
    (reader.version() == wire_version::v1 ? v1_frames_ : v2_frames_).add();
    const std::span<message> batch = reader.messages();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      message& msg = batch[i];
      received_.add();
      if (config_.observe) {
        std::uint64_t missing = config_.observe(msg);
        if (missing > 0 && config_.repair) {
          repaired.clear();
          missing = config_.repair(msg, missing, repaired);
          repaired_.add(repaired.size());
          std::size_t j = 0;
          while (j < repaired.size() && dispatch(repaired[j], own)) ++j;
          if (j < repaired.size()) {  // stopping: these and the rest of the batch are not handled
            dropped_.add(repaired.size() - j + batch.size() - i);
            break;
          }
        }
        gaps_.add(missing);
      }
      if (!dispatch(msg, own)) {
        dropped_.add(batch.size() - i);
        break;
      }
    }
  }

  {
    std::lock_guard lock(queue_mutex_);
    queue_closed_ = true;
  }
  queue_not_empty_.notify_all();

  // What libzmq already queued for us is not handled: count it, so a stop never loses messages silently.
  std::uint64_t drained = 0;
  try {
    while (drained < max_drain) {
      const receive_status st = reader.receive(socket_, false);
      if (st == receive_status::ok) {
        drained += reader.messages().size();  // a v2 batch holds several
      } else if (st == receive_status::rejected) {
        malformed_.add();
      } else {
        break;
      }
    }
  } catch (const zmq::error_t&) {
  }
  dropped_.add(drained);
  if (drained > 0)
    logger().info("{}: stopped with {} received messages not handled (at-most-once)", config_.name, drained);
  socket_.close();
}

void receiver::handler_loop(std::size_t index) {
  handler_counters& own = *per_thread_[index];
  for (;;) {
    std::unique_lock lock(queue_mutex_);
    queue_not_empty_.wait(lock, [&] { return !queue_.empty() || queue_closed_; });
    if (queue_.empty()) return;
    message msg = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    queue_not_full_.notify_one();
    run_handler(msg, own.handled, own.failed);
  }
}

receive_stats receiver::stats() const noexcept {
  receive_stats s;
  s.received = received_.get();
  s.malformed = malformed_.get();
  s.v1_frames = v1_frames_.get();
  s.v2_frames = v2_frames_.get();
  s.duplicates = duplicates_.get();
  s.dropped = dropped_.get();
  s.gaps = gaps_.get();
  s.repaired = repaired_.get();
  for (const auto& c : per_thread_) {
    s.handled += c->handled.get();
    s.failed += c->failed.get();
  }
  return s;
}

}  // namespace ferry::detail
