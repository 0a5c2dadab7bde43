#include "ferry/producer.hpp"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "detail/counter.hpp"
#include "detail/forwarder_protocol.hpp"
#include "detail/forwarder_session.hpp"
#include "detail/id_map.hpp"
#include "detail/log.hpp"
#include "detail/wakeup.hpp"
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
  struct unconfirmed {
    std::string queue;
    zmq::message_t envelope;
    zmq::message_t payload;
    steady::time_point sent_at;
  };
  detail::id_map<unconfirmed> waiting{1024};
  std::deque<std::pair<steady::time_point, message_id>> resend_order;
  // What to transmit now, per queue (few queues per producer: a vector beats a map).
  struct batch {
    std::string queue;
    std::vector<std::pair<message_id, unconfirmed*>> items;
  };
  std::vector<batch> batches;
  std::size_t last_batch = 0;
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
  }

  void settle(std::uint64_t n) {
    if (n == 0) return;
    std::lock_guard lock(mutex);
    in_flight -= n;
    room.notify_all();
    if (in_flight == 0) settled.notify_all();
  }

  // Queues `u` (the entry of `id` in `waiting`) for the next transmit().
  void enqueue(const std::string& queue, const message_id& id, unconfirmed* u) {
    if (last_batch >= batches.size() || batches[last_batch].queue != queue) {
      last_batch = 0;
      while (last_batch < batches.size() && batches[last_batch].queue != queue) ++last_batch;
      if (last_batch == batches.size()) batches.push_back(batch{queue, {}});
    }
    batches[last_batch].items.emplace_back(id, u);
  }

  void transmit(steady::time_point now) {
    for (auto& b : batches) {
      auto& items = b.items;
      for (std::size_t start = 0; start < items.size(); start += options.max_batch) {
        const std::size_t end = std::min(items.size(), start + options.max_batch);
        std::vector<zmq::message_t> frames;
        frames.reserve(2 + 2 * (end - start));
        frames.emplace_back(fwd::send.data(), fwd::send.size());
        frames.emplace_back(b.queue.data(), b.queue.size());
        for (std::size_t i = start; i < end; ++i) {
          unconfirmed& u = *items[i].second;
          zmq::message_t env, payload;
          env.copy(u.envelope);
          payload.copy(u.payload);  // shares the buffer; nothing is copied for large payloads
          frames.push_back(std::move(env));
          frames.push_back(std::move(payload));
          u.sent_at = now;
          resend_order.emplace_back(now, items[i].first);
        }
        if (frames.size() == 2) continue;
        session.send(frames);  // a lost SEND is resent (reconnect, restart or confirm_timeout)
      }
    }
    for (auto& b : batches) b.items.clear();  // keep the vectors' memory
  }

  void take_outbox(steady::time_point now) {
    std::vector<outgoing> items;
    {
      std::lock_guard lock(mutex);
      items.swap(outbox);
    }
    for (auto& item : items) {
      auto [u, fresh] = waiting.try_emplace(
          item.id,
          unconfirmed{std::move(item.queue), std::move(item.envelope), std::move(item.payload), now});
      if (!fresh) {  // the same id sent again while the first copy is in flight: it rides on that one
        settle(1);
        continue;
      }
      enqueue(u->queue, item.id, u);
    }
  }

  void resend_everything(steady::time_point now) {
    resend_order.clear();
    waiting.for_each([&](const message_id& id, unconfirmed& u) {
      enqueue(u.queue, id, &u);
      resent.add();
    });
    transmit(now);
  }

  void check_resends(steady::time_point now) {
    if (!session.up()) return;  // resent all at once when it is back
    while (!resend_order.empty() && resend_order.front().first + options.confirm_timeout <= now) {
      const auto [at, id] = resend_order.front();
      resend_order.pop_front();
      unconfirmed* u = waiting.find(id);
      if (u == nullptr || u->sent_at != at) continue;
      enqueue(u->queue, id, u);
      resent.add();
    }
  }

  void handle(std::vector<zmq::message_t>& frames, steady::time_point now) {
    if (session.handle(frames, now) != detail::forwarder_session::event::other) {
      // Only a new instance loses what it had not stored. A silence alone loses nothing (the connection
      // held), and a reconnect is seen through the socket monitor; a reconnect since the last PONG already
      // resent everything, to this new instance.
      if (session.instance_changed() && !resent_on_reconnect) {
        detail::logger().info("producer: ferryd restarted; resending {} unconfirmed message(s)",
                              waiting.size());
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
        if (!waiting.erase(id)) continue;  // a duplicate confirm for a resent copy
        ++n;
        if (on_confirm) on_confirm(id);
      }
      confirmed.add(n);
      settle(n);  // one lock and wake-up per CONFIRM, not per message
    } else if (verb == fwd::refuse && frames.size() >= 4) {
      const auto id = message_id::from_bytes(frames[1].to_string_view());
      if (!id || !waiting.erase(*id)) {
        detail::logger().warn("producer: ferryd refused a message: {}: {}", frames[2].to_string_view(),
                              frames[3].to_string_view());
        return;
      }
      refused.add();
      if (on_refuse)
        on_refuse(
            refusal{*id, std::string(frames[2].to_string_view()), std::string(frames[3].to_string_view())});
      settle(1);
    } else if (verb == fwd::error && frames.size() >= 3) {
      detail::logger().warn("producer: ferryd says {}: {}", frames[1].to_string_view(),
                            frames[2].to_string_view());
    }
  }

  void run() {
    std::vector<zmq::message_t> frames;
    for (;;) {
      auto now = steady::now();
      if (session.check_reconnect() && !waiting.empty()) {
        detail::logger().info("producer: reconnected to ferryd; resending {} unconfirmed message(s)",
                              waiting.size());
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
