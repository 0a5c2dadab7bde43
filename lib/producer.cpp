#include "ferry/producer.hpp"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "detail/counter.hpp"
#include "detail/forwarder_protocol.hpp"
#include "detail/forwarder_session.hpp"
#include "detail/log.hpp"
#include "detail/wakeup.hpp"
#include "detail/wire.hpp"
#include "ferry/envelope.hpp"

namespace ferry {
namespace fwd = detail::fwd;
using steady = std::chrono::steady_clock;

namespace {

struct outgoing {
  message_id id;
  std::string queue;
  zmq::message_t envelope;
  zmq::message_t payload;
};

// A payload this large goes in a SEND of its own in v1 form, its frame shared rather than copied into a
// block (see wire_options::split_payload).
constexpr std::size_t large_payload = 32 * 1024;
// A v2 SEND's block stops growing past this many bytes.
constexpr std::size_t max_send_bytes = 1 << 20;

}  // namespace

struct producer::impl {
  producer_options options;
  confirm_handler on_confirm;
  refuse_handler on_refuse;
  detail::forwarder_session session;
  detail::wakeup wake;

  // Shared with senders.
  mutable std::mutex mutex;
  std::condition_variable room;     // in_flight dropped below the window
  std::condition_variable settled;  // in_flight reached zero
  std::vector<outgoing> outbox;
  std::uint64_t in_flight = 0;
  bool closing = false;

  // Counters (written by one thread each).
  detail::counter sent, confirmed, refused, resent;

  // I/O thread only.
  //
  // Unconfirmed messages wait in one FIFO in the order they were sent, each numbered. ferryd confirms the
  // messages of one queue in the order it stored them, so a confirm is nearly always for the oldest
  // unconfirmed message of its queue: each queue keeps the number of that message and every entry the
  // number of the next one of its queue. Only answers out of that order (after resends, refusals) search the
  // FIFO. No hash map: its lookups missed the cache once the window outgrew it.
  struct entry {
    message_id id;
    std::uint32_t queue = 0;  // index into queues
    zmq::message_t envelope;  // compact form
    zmq::message_t payload;
    steady::time_point sent_at;
    std::uint64_t next_of_queue = 0;  // number of the next entry of the same queue (0: none yet)
    bool settled = false;
  };
  struct queue_state {
    std::string name;
    std::uint64_t oldest = 0;  // number of the oldest unsettled entry (0: none)
    std::uint64_t newest = 0;  // number of the newest entry
    std::vector<std::uint64_t> to_send;
  };
  std::deque<entry> fifo;
  std::uint64_t front_number = 1;  // number of fifo.front()
  std::uint64_t next_number = 1;
  std::vector<queue_state> queues;  // few per producer: a vector beats a map
  std::uint32_t last_queue = 0;
  std::deque<std::pair<steady::time_point, std::uint64_t>> resend_order;  // (sent at, number)
  std::uint64_t unsettled = 0;
  bool resent_on_reconnect = false;
  std::thread thread;

  static detail::forwarder_session::options session_options(const producer_options& o) {
    detail::forwarder_session::options so;
    so.name = "producer";
    so.heartbeat_interval = o.heartbeat_interval;
    so.socket = o.socket;
    so.socket.send_hwm = 0;  // the window bounds what is queued; never drop or block here
    so.socket.receive_hwm = 0;
    so.socket.linger = std::chrono::milliseconds(0);  // unconfirmed messages are ours to resend
    return so;
  }

  impl(context& ctx, const std::string& forwarder, producer_options o, confirm_handler c, refuse_handler r)
      : options(check(std::move(o))),
        on_confirm(std::move(c)),
        on_refuse(std::move(r)),
        session(ctx, forwarder, session_options(options)) {
    thread = std::thread([this] { run(); });
  }

  static producer_options check(producer_options o) {
    if (o.max_in_flight == 0) throw error("producer: max_in_flight must be at least 1");
    o.max_batch = std::clamp<std::size_t>(o.max_batch, 1, fwd::max_batch);
    return o;
  }

  ~impl() {
    {
      std::lock_guard lock(mutex);
      closing = true;
    }
    room.notify_all();
    settled.notify_all();
    wake.force();
    thread.join();
    std::lock_guard lock(mutex);
    if (in_flight > 0)
      detail::logger().warn(
          "producer: destroyed with {} message(s) not confirmed by ferryd at {}; they are abandoned (call "
          "flush() before destroying a producer)",
          in_flight, session.endpoint());
  }

  void settle_window(std::uint64_t n) {
    if (n == 0) return;
    std::lock_guard lock(mutex);
    in_flight -= n;
    room.notify_all();
    if (in_flight == 0) settled.notify_all();
  }

  entry* at(std::uint64_t number) {
    if (number < front_number || number - front_number >= fifo.size()) return nullptr;
    return &fifo[number - front_number];
  }

  std::uint32_t queue_index(const std::string& name) {
    if (last_queue < queues.size() && queues[last_queue].name == name) return last_queue;
    for (std::uint32_t i = 0; i < queues.size(); ++i)
      if (queues[i].name == name) return last_queue = i;
    queues.push_back(queue_state{name, 0, 0, {}});
    return last_queue = static_cast<std::uint32_t>(queues.size() - 1);
  }

  void take_outbox(steady::time_point now) {
    std::vector<outgoing> items;
    {
      std::lock_guard lock(mutex);
      items.swap(outbox);
    }
    for (auto& item : items) {
      const std::uint32_t q = queue_index(item.queue);
      const std::uint64_t number = next_number++;
      fifo.push_back(entry{item.id, q, std::move(item.envelope), std::move(item.payload), now, 0, false});
      queue_state& qs = queues[q];
      if (entry* prev = at(qs.newest)) prev->next_of_queue = number;
      qs.newest = number;
      if (qs.oldest == 0) qs.oldest = number;
      qs.to_send.push_back(number);
      ++unsettled;
    }
  }

  // Marks `e` (number `number`) answered, moves its queue's oldest past settled entries and drops settled
  // entries from the front of the FIFO.
  void mark_settled(entry& e, std::uint64_t number) {
    e.settled = true;
    e.envelope = zmq::message_t();
    e.payload = zmq::message_t();
    --unsettled;
    queue_state& qs = queues[e.queue];
    if (qs.oldest == number) {
      std::uint64_t n = e.next_of_queue;
      while (n != 0 && at(n) != nullptr && at(n)->settled) n = at(n)->next_of_queue;
      qs.oldest = at(n) != nullptr ? n : 0;
    }
    while (!fifo.empty() && fifo.front().settled) {
      fifo.pop_front();
      ++front_number;
    }
  }

  // The unsettled entry for `id`: the oldest of some queue, else found by a search (answers out of order).
  std::uint64_t find(const message_id& id) {
    for (const queue_state& qs : queues)
      if (const entry* e = at(qs.oldest); e != nullptr && !e->settled && e->id == id) return qs.oldest;
    for (std::size_t i = 0; i < fifo.size(); ++i)
      if (!fifo[i].settled && fifo[i].id == id) return front_number + i;
    return 0;
  }

  void transmit(steady::time_point now) {
    const bool packed = session.welcome().version >= 2;
    std::vector<zmq::message_t> frames;
    for (queue_state& qs : queues) {
      auto& items = qs.to_send;
      std::size_t start = 0;
      while (start < items.size()) {
        std::size_t end = start;
        std::size_t bytes = 0;
        // A run for one SEND: up to max_batch messages; in v2 also up to max_send_bytes, and a payload of
        // split size goes on its own in v1 form (its frame is moved, not copied into a block).
        while (end < items.size() && end - start < options.max_batch) {
          const entry* e = at(items[end]);
          if (e == nullptr || e->settled) {
            ++end;
            continue;
          }
          const bool big = e->payload.size() >= large_payload;
          if (packed && big && end > start) break;
          bytes += detail::block_entry_size(e->envelope.size(), e->payload.size());
          ++end;
          if (packed && (big || bytes >= max_send_bytes)) break;
        }
        frames.clear();
        frames.emplace_back(fwd::send.data(), fwd::send.size());
        frames.emplace_back(qs.name.data(), qs.name.size());
        std::size_t count = 0;
        const bool one_big = packed && end == start + 1 && at(items[start]) != nullptr &&
                             at(items[start])->payload.size() >= large_payload;
        if (packed && !one_big) {
          for (std::size_t i = start; i < end; ++i)
            if (const entry* e = at(items[i]); e != nullptr && !e->settled) ++count;
          if (count > 0) {
            zmq::message_t block(detail::block_header_size(count) + bytes);
            char* p = detail::write_block_header(static_cast<char*>(block.data()), count);
            for (std::size_t i = start; i < end; ++i) {
              entry* e = at(items[i]);
              if (e == nullptr || e->settled) continue;
              p = detail::write_block_entry(p, e->envelope.to_string_view(), e->payload.to_string_view());
              e->sent_at = now;
              resend_order.emplace_back(now, items[i]);
            }
            frames.push_back(std::move(block));
          }
        } else {
          for (std::size_t i = start; i < end; ++i) {
            entry* e = at(items[i]);
            if (e == nullptr || e->settled) continue;
            zmq::message_t env, payload;
            env.copy(e->envelope);
            payload.copy(e->payload);  // shares the buffer; nothing is copied for large payloads
            frames.push_back(std::move(env));
            frames.push_back(std::move(payload));
            e->sent_at = now;
            resend_order.emplace_back(now, items[i]);
            ++count;
          }
        }
        if (count > 0) session.send(frames);  // a lost SEND is resent (reconnect, restart or confirm_timeout)
        start = end;
      }
      items.clear();  // keeps the vector's memory
    }
  }

  void resend_everything(steady::time_point now) {
    resend_order.clear();
    for (queue_state& qs : queues) qs.to_send.clear();
    for (std::size_t i = 0; i < fifo.size(); ++i) {
      if (fifo[i].settled) continue;
      queues[fifo[i].queue].to_send.push_back(front_number + i);
      resent.add();
    }
    transmit(now);
  }

  void check_resends(steady::time_point now) {
    if (!session.up()) return;  // resent all at once when it is back
    while (!resend_order.empty() && resend_order.front().first + options.confirm_timeout <= now) {
      const auto [when, number] = resend_order.front();
      resend_order.pop_front();
      entry* e = at(number);
      if (e == nullptr || e->settled || e->sent_at != when) continue;
      queues[e->queue].to_send.push_back(number);
      resent.add();
    }
  }

  void handle(std::vector<zmq::message_t>& frames, steady::time_point now) {
    if (session.handle(frames, now) != detail::forwarder_session::event::other) {
      // Only a new instance loses what it had not stored. A silence alone loses nothing (the connection
      // held), and a reconnect is seen through the socket monitor; a reconnect since the last PONG already
      // resent everything, to this new instance.
      if (session.instance_changed() && !resent_on_reconnect) {
        detail::logger().info("producer: ferryd restarted; resending {} unconfirmed message(s)", unsettled);
        resend_everything(now);
      }
      resent_on_reconnect = false;
      return;
    }
    const std::string_view verb = frames[0].to_string_view();
    if (verb == fwd::confirm && frames.size() >= 2) {
      const auto* p = static_cast<const char*>(frames[1].data());
      std::uint64_t n = 0;
      for (std::size_t off = 0; off + fwd::id_size <= frames[1].size(); off += fwd::id_size) {
        const auto id = *message_id::from_bytes({p + off, fwd::id_size});
        const std::uint64_t number = find(id);
        if (number == 0) continue;  // a second confirm, for a resent copy
        mark_settled(*at(number), number);
        ++n;
        if (on_confirm) on_confirm(id);
      }
      confirmed.add(n);
      settle_window(n);  // one lock and wake-up per CONFIRM, not per message
    } else if (verb == fwd::refuse && frames.size() >= 4) {
      const auto id = message_id::from_bytes(frames[1].to_string_view());
      const std::uint64_t number = id ? find(*id) : 0;
      if (number == 0) {
        detail::logger().warn("producer: ferryd refused a message: {}: {}", frames[2].to_string_view(),
                              frames[3].to_string_view());
        return;
      }
      mark_settled(*at(number), number);
      refused.add();
      if (on_refuse)
        on_refuse(
            refusal{*id, std::string(frames[2].to_string_view()), std::string(frames[3].to_string_view())});
      settle_window(1);
    } else if (verb == fwd::error && frames.size() >= 3) {
      detail::logger().warn("producer: ferryd says {}: {}", frames[1].to_string_view(),
                            frames[2].to_string_view());
    }
  }

  void run() {
    std::vector<zmq::message_t> frames;
    for (;;) {
      auto now = steady::now();
      if (session.check_reconnect() && unsettled > 0) {
        detail::logger().info("producer: reconnected to ferryd; resending {} unconfirmed message(s)",
                              unsettled);
        resend_everything(now);
        resent_on_reconnect = true;
      }
      take_outbox(now);
      session.tick(now);
      check_resends(now);
      transmit(now);
      while (session.receive(frames)) handle(frames, steady::now());  // take everything that arrived
      {
        std::lock_guard lock(mutex);
        if (closing) return;
      }
      wake.about_to_sleep();
      {
        std::lock_guard lock(mutex);
        if (!outbox.empty()) {
          wake.awake();
          continue;
        }
      }
      zmq_pollitem_t items[3];
      session.poll_items(items);
      items[2] = {nullptr, wake.fd(), ZMQ_POLLIN, 0};
      const long timeout = std::clamp<long>(session.until_next_tick(steady::now()), 0, 100);
      try {
        zmq::poll(items, 3, std::chrono::milliseconds(timeout));
      } catch (const zmq::error_t&) {
        return;
      }
      if (items[2].revents & ZMQ_POLLIN) {
        wake.drain();
      } else {
        wake.awake();
      }
    }
  }
};

producer::producer(context& ctx, const std::string& forwarder, producer_options options,
                   confirm_handler on_confirm, refuse_handler on_refuse)
    : impl_(std::make_unique<impl>(ctx, forwarder, std::move(options), std::move(on_confirm),
                                   std::move(on_refuse))) {}

producer::~producer() = default;

send_status producer::send(message& msg) {
  impl& s = *impl_;
  if (msg.payload().size() > s.options.max_payload || check_limits(msg) != decode_error::none)
    return send_status::too_large;
  msg.stamp();
  {
    std::unique_lock lock(s.mutex);
    auto has_room = [&] { return s.closing || s.in_flight < s.options.max_in_flight; };
    if (!has_room()) {
      if (s.options.send_timeout.count() == 0) return send_status::would_block;
      if (s.options.send_timeout.count() < 0) {
        s.room.wait(lock, has_room);
      } else if (!s.room.wait_for(lock, s.options.send_timeout, has_room)) {
        return send_status::timed_out;
      }
    }
    if (s.closing) return send_status::closed;
    ++s.in_flight;
    // The compact form fits libzmq's inline frame (no allocation); ferryd re-encodes it for storage.
    s.outbox.push_back(outgoing{msg.id(), msg.topic(), encode_envelope(msg), std::move(msg.payload_frame())});
  }
  s.sent.add();  // one writer per producer is typical; relaxed counts are good enough for stats
  s.wake.notify();
  return send_status::ok;
}

bool producer::flush(std::chrono::milliseconds timeout) {
  impl& s = *impl_;
  std::unique_lock lock(s.mutex);
  return s.settled.wait_for(lock, timeout, [&] { return s.in_flight == 0 || s.closing; }) && s.in_flight == 0;
}

producer_stats producer::stats() const {
  const impl& s = *impl_;
  producer_stats st;
  st.sent = s.sent.get();
  st.confirmed = s.confirmed.get();
  st.refused = s.refused.get();
  st.resent = s.resent.get();
  st.forwarder_up = s.session.up();
  std::lock_guard lock(s.mutex);
  st.in_flight = s.in_flight;
  return st;
}

}  // namespace ferry
