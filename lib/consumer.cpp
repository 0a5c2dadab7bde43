#include "ferry/consumer.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include <msgpack.hpp>

#include "detail/counter.hpp"
#include "detail/forwarder_protocol.hpp"
#include "detail/forwarder_session.hpp"
#include "detail/log.hpp"
#include "detail/wakeup.hpp"
#include "detail/wire.hpp"

namespace ferry {
namespace fwd = detail::fwd;

retry_message::retry_message(std::chrono::milliseconds delay, const std::string& reason)
    : std::runtime_error(reason), delay_(delay) {
  if (delay.count() < 0 || static_cast<std::uint64_t>(delay.count()) > fwd::max_nack_delay_ms)
    throw std::invalid_argument("ferry::retry_message: the delay must be 0 to 86400000 ms (24 h), not " +
                                std::to_string(delay.count()) + " ms");
}
using steady = std::chrono::steady_clock;

namespace {

enum class verdict { ack, nack, reject };

struct work {
  message msg;
};

// The deliveries of one message being handled: almost always one, more when ferryd redelivered it while
// a handler had it (no allocation for the usual one).
struct pending {
  std::uint64_t first = 0;
  std::vector<std::uint64_t> more;
  steady::time_point renewed{};  // delivered, or its lease last extended
};

struct result {
  message_id id;
  verdict v = verdict::ack;
  std::string reason;
  std::optional<std::chrono::milliseconds> delay;  // a NACK's "retry in"
};

zmq::message_t frame(std::string_view s) {
  return zmq::message_t(s.data(), s.size());
}

// The name a topic subscription is consumed under ("topic@name"; ephemeral ones get a random '~' name).
std::string subscription_queue_of(const topic_subscription& sub) {
  if (!fwd::valid_queue_name(sub.topic) || fwd::is_dlq_name(sub.topic))
    throw error("consumer: topic '" + sub.topic +
                "' is not a topic name: 1-200 characters of A-Z a-z 0-9 . _ - not starting with '.', not "
                "ending in .dlq");
  if (sub.name.empty()) {
    std::random_device random;
    const unsigned long long r = (static_cast<unsigned long long>(random()) << 32) ^ random();
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", r);
    return fwd::subscription_queue(sub.topic, std::string("~") + hex);
  }
  if (!fwd::valid_subscription_name(sub.name) || sub.name.front() == '~')
    throw error("consumer: subscription name '" + sub.name +
                "' is not valid: 1-200 characters of A-Z a-z 0-9 . _ - not starting with '.', not ending "
                "in .dlq (leave it empty for an ephemeral subscription)");
  if (sub.topic.size() + 1 + sub.name.size() > fwd::max_queue_name)
    throw error("consumer: '" + sub.topic + "@" + sub.name +
                "' is too long: the topic and subscription names " + "take at most " +
                std::to_string(fwd::max_queue_name) + " bytes together with the '@'");
  return fwd::subscription_queue(sub.topic, sub.name);
}

}  // namespace

struct consumer::impl {
  consumer_options options;
  std::optional<topic_subscription> subscription;  // a topic's, or none for a queue
  std::string queue_name;
  message_handler handler;
  detail::forwarder_session session;
  detail::wakeup wake;

  // Between the I/O thread and handler threads.
  std::mutex mutex;
  std::condition_variable work_ready;
  std::deque<work> queue;
  std::vector<result> results;
  bool stopping = false;                    // handlers take no new work
  std::atomic<bool> stop_requested{false};  // `stopping`, read between the messages of a taken batch
  bool closing = false;                     // the I/O thread ends
  std::condition_variable ready_cv;
  bool subscribed = false;

  detail::counter received, duplicates, malformed, resubscribed;
  detail::counter handled, failed, rejected;  // written by the I/O thread from results
  detail::log_limiter failure_log;            // handler threads

  // I/O thread only.
  std::unordered_map<message_id, pending> in_progress;  // id -> the deliveries to answer
  std::optional<dedup_window> dedup;
  steady::time_point next_consume{};
  std::string acks;                    // tokens to acknowledge in one ACK
  std::uint64_t highest_sequence = 0;  // a topic subscription: the highest sequence number received
  std::vector<message> decoded;        // a v2 DELIVER's messages (reused)
  std::vector<detail::payload_span> payloads;
  std::vector<message_id> prefetch_ids;              // ids whose dedup window slots are about to be looked up
  std::chrono::milliseconds lease{0}, max_lease{0};  // from CONSUMING; max_lease 0: no EXTEND
  steady::time_point next_renewal{};
  std::string renew_tokens;

  std::vector<std::thread> handlers;
  std::thread io;
  std::mutex stop_mutex;
  bool stopped = false;

  static consumer_options check(consumer_options o, const std::string& queue, const message_handler& h,
                                bool topic) {
    // A subscription's dead letters ("topic@name.dlq") are a queue; the subscription itself is not.
    const bool subscription_dlq = fwd::is_subscription_queue(queue) && fwd::is_dlq_name(queue);
    if (!topic && fwd::is_subscription_queue(queue) && !subscription_dlq)
      throw error("consumer: '" + queue + "' is a topic's subscription: construct the consumer with a " +
                  "topic_subscription instead of a queue name");
    if (!topic && !fwd::valid_queue_name(queue) && !subscription_dlq)
      throw error("consumer: queue '" + queue +
                  "' is not a queue name: 1-200 characters of A-Z a-z 0-9 . _ - not starting with '.'");
    if (!h) throw error("consumer: a handler is required");
    if (o.threads == 0) throw error("consumer: threads must be at least 1");
    if (o.prefetch == 0) o.prefetch = 2 * o.threads + 8;
    return o;
  }

  static detail::forwarder_session::options session_options(const consumer_options& o,
                                                            const std::string& queue) {
    detail::forwarder_session::options so;
    so.name = "consumer";
    so.heartbeat_interval = o.heartbeat_interval;
    so.ping_queue = queue;  // ferryd answers not_consuming if it forgot us
    so.socket = o.socket;
    so.socket.send_hwm = 0;
    so.socket.receive_hwm = 0;  // credit bounds what ferryd sends
    so.socket.linger = std::chrono::milliseconds(1000);
    return so;
  }

  impl(context& ctx, const std::string& forwarder, std::string q, message_handler h, consumer_options o,
       std::optional<topic_subscription> sub = std::nullopt)
      : options(check(std::move(o), q, h, sub.has_value())),
        subscription(std::move(sub)),
        queue_name(std::move(q)),
        handler(std::move(h)),
        session(ctx, forwarder, session_options(options, queue_name)) {
    if (options.dedup) dedup.emplace(*options.dedup);
    for (unsigned i = 0; i < options.threads; ++i) handlers.emplace_back([this] { handler_loop(); });
    io = std::thread([this] { run(); });
  }

  void send(std::vector<zmq::message_t>& frames) { session.send(frames); }

  void send_subscribe() {
    // SUBSCRIBE | topic | {name, from, [seq | time_us], prefetch, version}
    const topic_subscription& sub = *subscription;
    start_position start = sub.start;
    // An ephemeral subscription made again (ferryd restarted or forgot it) goes on after what it received.
    if (sub.name.empty() && highest_sequence != 0) start = start_position::at_seq(highest_sequence + 1);
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    const bool has_value =
        start.from == start_position::kind::seq || start.from == start_position::kind::time;
    pk.pack_map(has_value ? 5 : 4);
    pk.pack("name");
    pk.pack(queue_name.substr(queue_name.find(fwd::subscription_separator) + 1));
    pk.pack("from");
    switch (start.from) {
      case start_position::kind::new_messages:
        pk.pack("new");
        break;
      case start_position::kind::first:
        pk.pack("first");
        break;
      case start_position::kind::seq:
        pk.pack("seq");
        pk.pack("seq");
        pk.pack(std::max<std::uint64_t>(1, start.seq));
        break;
      case start_position::kind::time:
        pk.pack("time");
        pk.pack("time_us");
        pk.pack(static_cast<std::int64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(start.time.time_since_epoch()).count()));
        break;
    }
    pk.pack("prefetch");
    pk.pack(options.prefetch);
    pk.pack("version");
    pk.pack(fwd::protocol_version);
    std::vector<zmq::message_t> frames;
    frames.push_back(frame(fwd::subscribe));
    frames.push_back(frame(sub.topic));
    frames.emplace_back(buf.data(), buf.size());
    send(frames);
  }

  void send_consume() {
    if (subscription) return send_subscribe();
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(2);
    pk.pack("prefetch");
    pk.pack(options.prefetch);
    pk.pack("version");  // DELIVERs as one block; a ferryd of protocol v1 ignores it and sends frame pairs
    pk.pack(fwd::protocol_version);
    std::vector<zmq::message_t> frames;
    frames.push_back(frame(fwd::consume));
    frames.push_back(frame(queue_name));
    frames.emplace_back(buf.data(), buf.size());
    send(frames);
  }

  // Each handler thread takes its share of what is queued (at most `max_take` messages) under one lock
  // and hands the results back under one lock with one wake-up, so a busy consumer with quick handlers
  // pays for the lock and the I/O thread's wake-up per batch, not per message. A handler call slower than
  // `slow_handler` gives the rest of its batch back to the queue's front (its siblings take them) and its
  // thread takes one message at a time until a call is quick again. A thread starts that way, so slow
  // handlers never batch; one that is usually quick and suddenly blocks delays at most max_take - 1
  // messages it had taken, for that one call.
  static constexpr std::size_t max_take = 16;
  static constexpr std::chrono::microseconds slow_handler{100};

  void handler_loop() {
    std::vector<work> taken;
    std::vector<result> done;
    taken.reserve(max_take);
    done.reserve(max_take);
    bool slow = true;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        work_ready.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;  // what is still queued goes back to ferryd with CANCEL
        const std::size_t share =
            slow ? 1 : std::clamp<std::size_t>(queue.size() / options.threads, 1, max_take);
        for (std::size_t i = 0; i < share; ++i) {
          taken.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      auto started = steady::now();
      for (std::size_t k = 0; k < taken.size(); ++k) {
        // A stop between two messages leaves the rest unanswered: CANCEL gives them back to ferryd.
        if (stop_requested.load(std::memory_order_relaxed)) break;
        done.push_back(handle_one(taken[k].msg));
        const auto finished = steady::now();
        slow = finished - started > slow_handler;
        started = finished;
        if (slow && k + 1 < taken.size()) {
          {
            std::lock_guard lock(mutex);
            for (std::size_t j = taken.size(); j > k + 1; --j) queue.push_front(std::move(taken[j - 1]));
          }
          work_ready.notify_all();
          break;
        }
      }
      taken.clear();
      if (done.empty()) continue;
      {
        std::lock_guard lock(mutex);
        for (result& r : done) results.push_back(std::move(r));
      }
      done.clear();
      wake.notify();
    }
  }

  result handle_one(message& m) {
    result r;
    r.id = m.id();
    try {
      handler(m);
      r.v = verdict::ack;
    } catch (const reject_message& e) {
      r.v = verdict::reject;
      r.reason = e.what();
    } catch (const retry_message& e) {
      r.v = verdict::nack;
      r.reason = e.what();
      r.delay = e.delay();
    } catch (const std::exception& e) {
      r.v = verdict::nack;
      r.reason = e.what();
    } catch (...) {
      r.v = verdict::nack;
      r.reason = "handler threw a non-standard exception";
    }
    if (r.v != verdict::ack) log_failure(m, r);
    return r;
  }

  // Handler threads: what became of a message whose handler did not return, as worker_pool logs it.
  void log_failure(const message& m, const result& r) {
    std::uint64_t held = 0;
    if (!failure_log.allow(held)) return;
    if (r.v == verdict::reject) {
      detail::logger().info(
          "consumer: handler rejected message {} of queue {} (attempt {}): {}; it goes to {}{}{}",
          m.id().to_hex(), queue_name, m.attempt(), r.reason, queue_name, fwd::dlq_suffix,
          detail::suppressed_note(held));
    } else if (r.delay) {
      detail::logger().info(
          "consumer: handler asked to retry message {} of queue {} (attempt {}) in {} ms: {}{}",
          m.id().to_hex(), queue_name, m.attempt(), r.delay->count(), r.reason,
          detail::suppressed_note(held));
    } else {
      detail::logger().warn(
          "consumer: handler threw on message {} of queue {} (attempt {}): {}; it is nacked{}",
          m.id().to_hex(), queue_name, m.attempt(), r.reason, detail::suppressed_note(held));
    }
  }

  void answer(const pending& p, verdict v, const std::string& reason,
              std::optional<std::chrono::milliseconds> delay = std::nullopt) {
    answer(p.first, v, reason, delay);
    for (const std::uint64_t t : p.more) answer(t, v, reason, delay);
  }

  void answer(std::uint64_t t, verdict v, const std::string& reason,
              std::optional<std::chrono::milliseconds> delay = std::nullopt) {
    char b[8];
    fwd::put_u64(b, t);
    if (v == verdict::ack) {
      acks.append(b, 8);
      return;
    }
    std::vector<zmq::message_t> frames;
    frames.push_back(frame(v == verdict::nack ? fwd::nack : fwd::reject));
    frames.push_back(frame(queue_name));
    frames.emplace_back(b, 8);
    frames.push_back(frame(reason));
    if (delay) {
      char d[8];
      fwd::put_u64(d, static_cast<std::uint64_t>(delay->count()));
      frames.emplace_back(d, 8);
    }
    send(frames);
  }

  void flush_acks() {
    if (acks.empty()) return;
    std::vector<zmq::message_t> frames;
    frames.push_back(frame(fwd::ack));
    frames.push_back(frame(queue_name));
    frames.push_back(frame(acks));
    send(frames);
    acks.clear();
  }

  void take_results() {
    std::vector<result> done;
    {
      std::lock_guard lock(mutex);
      done.swap(results);
    }
    if (done.empty()) return;
    if (dedup) {
      prefetch_ids.clear();
      for (const auto& r : done)
        if (r.v == verdict::ack) prefetch_ids.push_back(r.id);
      dedup->prefetch(prefetch_ids.data(), prefetch_ids.size());
    }
    const auto now = steady::now();
    for (auto& r : done) {
      auto it = in_progress.find(r.id);
      if (it == in_progress.end()) continue;
      switch (r.v) {
        case verdict::ack:
          handled.add();
          if (dedup) dedup->check_and_insert(r.id, now);
          break;
        case verdict::nack:
          failed.add();
          break;
        case verdict::reject:
          rejected.add();
          break;
      }
      answer(it->second, r.v, r.reason, r.delay);
      in_progress.erase(it);
    }
  }

  void on_deliver(std::vector<zmq::message_t>& frames) {
    // v2: DELIVER | queue | tokens | block          v1: DELIVER | queue | tokens | (envelope | payload) x n
    const bool packed = frames.size() == 4;
    const std::size_t n = packed ? frames[2].size() / 8 : (frames.size() - 3) / 2;
    if (frames.size() < 4 || (!packed && (frames.size() - 3) % 2 != 0) || n == 0 ||
        frames[2].size() != 8 * n) {
      detail::logger().warn("consumer: malformed DELIVER from ferryd ({} frames) ignored", frames.size());
      return;
    }
    const auto* tokens = static_cast<const char*>(frames[2].data());
    std::shared_ptr<const zmq::message_t> block;
    if (packed) {
      std::size_t count = 0;
      const decode_error err =
          detail::decode_block(frames[3].to_string_view(), decoded, payloads, count, options.limits);
      if (err != decode_error::none || count != n) {
        // Nothing in it can be handled: each delivery goes to the dead-letter queue with the reason.
        const std::string why = std::string("consumer could not decode the DELIVER block: ") +
                                std::string(err != decode_error::none ? to_string(err) : "batch_count");
        for (std::size_t i = 0; i < n; ++i) {
          received.add();
          malformed.add();
          answer(fwd::get_u64(tokens + 8 * i), verdict::reject, why);
        }
        return;
      }
      block = std::make_shared<const zmq::message_t>(std::move(frames[3]));
      if (dedup) {  // the window's slots for these ids are fetched while the loop below works
        prefetch_ids.clear();
        for (std::size_t i = 0; i < n; ++i) prefetch_ids.push_back(decoded[i].id());
        dedup->prefetch(prefetch_ids.data(), n);
      }
    }
    const auto now = steady::now();  // one clock read for the whole DELIVER
    std::vector<work> fresh;
    fresh.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t token = fwd::get_u64(tokens + 8 * i);
      received.add();
      work w;
      if (packed) {
        w.msg = std::move(decoded[i]);
      } else if (const decode_error err =
                     decode_envelope(frames[3 + 2 * i].to_string_view(), w.msg, options.limits);
                 err != decode_error::none) {
        malformed.add();
        answer(token, verdict::reject,
               std::string("consumer could not decode the envelope: ") + std::string(to_string(err)));
        continue;
      }
      if (dedup && dedup->contains(w.msg.id(), now)) {
        duplicates.add();
        answer(token, verdict::ack, {});
        continue;
      }
      auto [it, fresh_id] = in_progress.try_emplace(w.msg.id());
      if (!fresh_id) {  // the same message is being handled now: answer both tokens when it is done
        it->second.more.push_back(token);
        duplicates.add();
        continue;
      }
      it->second.first = token;
      it->second.renewed = now;
      if (subscription) {
        highest_sequence = std::max(highest_sequence, w.msg.sequence());
        w.msg.set_topic(subscription->topic);
      } else {
        w.msg.set_topic(queue_name);
      }
      if (packed) {
        w.msg.set_payload_slice(block, payloads[i].offset, payloads[i].size);
      } else {
        w.msg.set_payload(std::move(frames[4 + 2 * i]));
      }
      fresh.push_back(std::move(w));
    }
    if (fresh.empty()) return;
    {
      std::lock_guard lock(mutex);
      for (auto& w : fresh) queue.push_back(std::move(w));
    }
    if (fresh.size() == 1) {
      work_ready.notify_one();
    } else {
      work_ready.notify_all();
    }
  }

  // Sends CONSUME again (at most every 200 ms: several signs of a lost subscription may arrive at once).
  void resubscribe() {
    const auto now = steady::now();
    if (now < next_consume) return;
    next_consume = now + std::chrono::milliseconds(200);
    resubscribed.add();
    send_consume();
  }

  // Messages held for a third of the lease get a full lease more (checked every sixth of it), so a lease
  // is renewed at the latest half way through.
  void renew_leases(steady::time_point now) {
    if (!options.extend_leases || max_lease.count() == 0 || lease.count() == 0 || in_progress.empty() ||
        now < next_renewal)
      return;
    next_renewal = now + std::max<steady::duration>(std::chrono::milliseconds(10), lease / 6);
    renew_tokens.clear();
    char b[8];
    for (auto& [id, p] : in_progress) {
      if (now - p.renewed < lease / 3) continue;
      p.renewed = now;
      fwd::put_u64(b, p.first);
      renew_tokens.append(b, 8);
      for (const std::uint64_t t : p.more) {
        fwd::put_u64(b, t);
        renew_tokens.append(b, 8);
      }
    }
    if (renew_tokens.empty()) return;
    std::vector<zmq::message_t> frames;
    frames.push_back(frame(fwd::extend));
    frames.push_back(frame(queue_name));
    frames.push_back(frame(renew_tokens));
    fwd::put_u64(b, static_cast<std::uint64_t>(lease.count()));
    frames.emplace_back(b, 8);
    send(frames);
  }

  // A uint field of a MessagePack map (WELCOME, CONSUMING), 0 when absent.
  static std::uint64_t announced(std::string_view map, std::string_view key) {
    try {
      const msgpack::object_handle oh = msgpack::unpack(map.data(), map.size());
      const msgpack::object& o = oh.get();
      if (o.type != msgpack::type::MAP) return 0;
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type == msgpack::type::STR &&
            std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key &&
            kv.val.type == msgpack::type::POSITIVE_INTEGER)
          return kv.val.via.u64;
      }
    } catch (const std::exception&) {
    }
    return 0;
  }

  void handle(std::vector<zmq::message_t>& frames) {
    const std::string_view verb = frames[0].to_string_view();
    if (verb == fwd::deliver) return on_deliver(frames);
    if (session.handle(frames, steady::now()) != detail::forwarder_session::event::other) {
      if (session.instance_changed()) {
        detail::logger().info("consumer: ferryd restarted; subscribing to {} again", queue_name);
        resubscribe();
      }
      return;
    }
    if (verb == fwd::consuming) {
      if (frames.size() >= 3) {
        const std::string_view map = frames[2].to_string_view();
        session.adopt_heartbeat(std::chrono::milliseconds(announced(map, "heartbeat_ms")));
        lease = std::chrono::milliseconds(announced(map, "lease_ms"));
        max_lease = std::chrono::milliseconds(announced(map, "max_lease_ms"));
      }
      std::lock_guard lock(mutex);
      subscribed = true;
      ready_cv.notify_all();
      return;
    }
    if (verb == fwd::error && frames.size() >= 3) {
      if (frames[1].to_string_view() == fwd::code::not_consuming) {
        // ferryd forgot us (restart, or it declared us dead): subscribe again. Answers already sent for
        // old deliveries settle nothing; those messages come again and the dedup window catches them.
        resubscribe();
        return;
      }
      detail::logger().warn("consumer: ferryd says {}: {}", frames[1].to_string_view(),
                            frames[2].to_string_view());
    }
  }

  void run() {
    send_consume();
    std::vector<zmq::message_t> frames;
    for (;;) {
      const auto now = steady::now();
      if (session.check_reconnect()) resubscribe();  // a new connection is a new consumer to ferryd
      session.tick(now);
      while (session.receive(frames)) handle(frames);
      take_results();
      flush_acks();
      renew_leases(now);
      bool end = false;
      {
        std::lock_guard lock(mutex);
        end = closing;
      }
      if (end) break;
      wake.about_to_sleep();
      {
        std::lock_guard lock(mutex);
        if (!results.empty() || closing) {
          wake.awake();
          continue;
        }
      }
      zmq_pollitem_t items[3];
      session.poll_items(items);
      items[2] = {nullptr, wake.fd(), ZMQ_POLLIN, 0};
      try {
        zmq::poll(
            items, 3,
            std::chrono::milliseconds(std::clamp<long>(session.until_next_tick(steady::now()), 0, 100)));
      } catch (const zmq::error_t&) {
        return;
      }
      if (items[2].revents & ZMQ_POLLIN) {
        wake.drain();
      } else {
        wake.awake();
      }
    }
    // Handlers have finished: answer what they did, hand the rest back without penalty.
    take_results();
    flush_acks();
    std::vector<zmq::message_t> cancel;
    cancel.push_back(frame(fwd::cancel));
    cancel.push_back(frame(queue_name));
    send(cancel);
    zmq::socket_t& socket = session.socket();
    if (!session.connected()) {
      // Nothing reaches ferryd now: neither wait for CANCELLED nor linger on what is queued. ferryd, if it
      // held deliveries for this connection, gives them back at its heartbeat timeout.
      socket.set(zmq::sockopt::linger, 0);
      return;
    }
    socket.set(zmq::sockopt::rcvtimeo, 1000);
    const auto deadline = steady::now() + std::chrono::seconds(1);
    while (steady::now() < deadline) {  // wait for CANCELLED so our answers were processed before we go
      zmq::message_t part;
      if (!socket.recv(part)) break;
      const bool cancelled = part.to_string_view() == fwd::cancelled;
      while (part.more()) (void)socket.recv(part);
      if (cancelled) break;
    }
  }

  void stop() {
    std::lock_guard guard(stop_mutex);
    if (stopped) return;
    stopped = true;
    {
      std::lock_guard lock(mutex);
      stopping = true;
      stop_requested = true;
    }
    work_ready.notify_all();
    for (auto& t : handlers) t.join();
    {
      std::lock_guard lock(mutex);
      closing = true;
    }
    wake.force();
    io.join();
  }
};

consumer::consumer(context& ctx, const std::string& forwarder, const std::string& queue,
                   message_handler handler, consumer_options options)
    : impl_(std::make_unique<impl>(ctx, forwarder, queue, std::move(handler), std::move(options))) {}

consumer::consumer(context& ctx, const std::string& forwarder, topic_subscription subscription,
                   message_handler handler, consumer_options options) {
  std::string name = subscription_queue_of(subscription);
  impl_ = std::make_unique<impl>(ctx, forwarder, std::move(name), std::move(handler), std::move(options),
                                 std::move(subscription));
}

consumer::~consumer() {
  stop();
}

void consumer::stop() {
  impl_->stop();
}

void consumer::request_stop() noexcept {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    impl_->stop_requested = true;
  }
  impl_->work_ready.notify_all();
}

bool consumer::wait_ready(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  return impl_->ready_cv.wait_for(lock, timeout, [&] { return impl_->subscribed; });
}

consumer_stats consumer::stats() const {
  const impl& s = *impl_;
  consumer_stats st;
  st.received = s.received.get();
  st.handled = s.handled.get();
  st.failed = s.failed.get();
  st.rejected = s.rejected.get();
  st.duplicates = s.duplicates.get();
  st.malformed = s.malformed.get();
  st.resubscribed = s.resubscribed.get();
  return st;
}

}  // namespace ferry
