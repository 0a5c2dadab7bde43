// The durable producer. send() encodes each message straight into the block of the next SEND of its queue
// (in the sending thread: one copy of the payload, no allocation per message); the I/O thread ships those
// blocks, keeps each until every message in it is confirmed or refused, and resends what is unconfirmed
// after a reconnect, a ferryd restart or confirm_timeout.
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

// A payload this large travels on its own, in v1 form, its frame shared rather than copied into a block (see
// wire_options::split_payload).
constexpr std::size_t large_payload = 32 * 1024;
// A block stops growing past this many bytes.
constexpr std::size_t max_block_bytes = 1 << 20;

// Messages of one queue waiting for the I/O thread, in send order: a packed block (entries, each an envelope
// and a bin payload) or one large message.
struct pending_block {
  std::string bytes;  // block entries without the header; empty for a large message
  struct item {
    message_id id;
    std::uint32_t offset = 0;  // of the entry in `bytes`
    std::uint32_t size = 0;
  };
  std::vector<item> items;
  zmq::message_t envelope, payload;  // a large message
};

}  // namespace

struct producer::impl {
  producer_options options;
  confirm_handler on_confirm;
  refuse_handler on_refuse;
  detail::forwarder_session session;
  detail::wakeup wake;

  // Shared with senders, under `mutex`.
  mutable std::mutex mutex;
  std::condition_variable room;                     // in_flight dropped below the window
  std::condition_variable settled;                  // in_flight reached zero
  std::vector<std::string> queue_names;             // index = queue number, shared by both sides
  std::vector<std::vector<pending_block>> pending;  // per queue
  std::size_t last_queue = 0;
  std::uint64_t in_flight = 0;
  bool has_pending = false;
  bool closing = false;

  // Counters (written by one thread each).
  detail::counter sent, confirmed, refused, resent, send_retries;

  // I/O thread only.
  //
  // Blocks are kept, numbered, until every message in them is settled. Unsettled messages wait in one FIFO
  // in send order. ferryd confirms the messages of one queue in the order it stored them, so a confirm is
  // nearly always for the oldest unsettled message of its queue: each queue keeps the number of that entry
  // and every entry the number of the next one of its queue. Only answers out of that order (after resends,
  // refusals) search the FIFO. No hash map: its lookups missed the cache once the window outgrew it.
  struct block {
    std::uint32_t queue = 0;
    std::string bytes;
    zmq::message_t envelope, payload;
    std::size_t count = 0;  // messages in it
    std::size_t unsettled = 0;
  };
  struct entry {
    message_id id;
    std::uint32_t queue = 0;
    std::uint64_t block = 0;
    std::uint32_t offset = 0, size = 0;  // in the block's bytes (0, 0 for a large message)
    std::uint64_t next_of_queue = 0;     // number of the next entry of the same queue (0: none yet)
    steady::time_point sent_at{};
    bool settled = false;
  };
  struct queue_state {
    std::uint64_t oldest = 0;  // number of the oldest unsettled entry (0: none)
    std::uint64_t newest = 0;
    std::vector<std::uint64_t> to_send;  // entries to (re)send; fresh blocks are sent as they are
  };
  std::deque<block> blocks;
  std::uint64_t front_block = 1;
  std::deque<entry> fifo;
  std::uint64_t front_number = 1;  // number of fifo.front()
  std::uint64_t next_number = 1;
  std::vector<queue_state> queues;
  std::vector<std::uint64_t> fresh_blocks;                                // taken, not sent yet
  std::deque<std::pair<steady::time_point, std::uint64_t>> resend_order;  // (sent at, entry number)
  std::uint64_t unsettled = 0;
  bool resent_on_reconnect = false;
  std::vector<message> decoded;  // v1 form of a block (scratch)
  std::vector<detail::payload_span> spans;
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

  // ---- sending side (under `mutex`) ----------------------------------------------------------------------

  // A destination is a queue's name, or '#' and a topic's (no queue name starts with '#').
  static bool is_destination(const std::string& destination, const std::string& name, bool to_topic) {
    if (!to_topic) return destination == name;
    return destination.size() == name.size() + 1 && destination.front() == '#' &&
           destination.compare(1, std::string::npos, name) == 0;
  }
  std::size_t queue_of(const std::string& name, bool to_topic) {
    if (last_queue < queue_names.size() && is_destination(queue_names[last_queue], name, to_topic))
      return last_queue;
    for (std::size_t i = 0; i < queue_names.size(); ++i)
      if (is_destination(queue_names[i], name, to_topic)) return last_queue = i;
    queue_names.push_back(to_topic ? "#" + name : name);
    pending.emplace_back();
    return last_queue = queue_names.size() - 1;
  }

  send_status submit(message& msg, bool to_topic);

  void enqueue(message& msg, bool to_topic) {
    auto& blocks_of_queue = pending[queue_of(msg.topic(), to_topic)];
    const std::size_t payload = msg.payload().size();
    if (payload >= large_payload) {
      pending_block& b = blocks_of_queue.emplace_back();
      b.items.push_back({msg.id(), 0, 0});
      // The compact form fits libzmq's inline frame (no allocation); ferryd re-encodes it for storage.
      b.envelope = encode_envelope(msg);
      b.payload = std::move(msg.payload_frame());
    } else {
      if (blocks_of_queue.empty() || blocks_of_queue.back().bytes.empty() ||
          blocks_of_queue.back().items.size() >= options.max_batch ||
          blocks_of_queue.back().bytes.size() >= max_block_bytes)
        blocks_of_queue.emplace_back();
      pending_block& b = blocks_of_queue.back();
      const std::size_t at = b.bytes.size();
      b.bytes.resize(at + detail::block_entry_size(msg));
      char* end = detail::write_block_entry(b.bytes.data() + at, msg);
      b.items.push_back({msg.id(), static_cast<std::uint32_t>(at),
                         static_cast<std::uint32_t>(end - (b.bytes.data() + at))});
    }
    has_pending = true;
  }

  // ---- I/O thread ----------------------------------------------------------------------------------------

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
  block* block_at(std::uint64_t number) {
    if (number < front_block || number - front_block >= blocks.size()) return nullptr;
    return &blocks[number - front_block];
  }

  void take_pending() {
    std::vector<std::vector<pending_block>> taken;
    {
      std::lock_guard lock(mutex);
      if (!has_pending) return;
      has_pending = false;
      taken.resize(pending.size());
      for (std::size_t q = 0; q < pending.size(); ++q) taken[q].swap(pending[q]);
    }
    if (queues.size() < taken.size()) queues.resize(taken.size());
    for (std::uint32_t q = 0; q < taken.size(); ++q) {
      for (pending_block& p : taken[q]) {
        const std::uint64_t number_of_block = front_block + blocks.size();
        block& b = blocks.emplace_back();
        b.queue = q;
        b.bytes = std::move(p.bytes);
        b.envelope = std::move(p.envelope);
        b.payload = std::move(p.payload);
        b.count = b.unsettled = p.items.size();
        for (const auto& item : p.items) {
          const std::uint64_t number = next_number++;
          fifo.push_back(entry{item.id, q, number_of_block, item.offset, item.size, 0, {}, false});
          queue_state& qs = queues[q];
          if (entry* prev = at(qs.newest)) prev->next_of_queue = number;
          qs.newest = number;
          if (qs.oldest == 0) qs.oldest = number;
          ++unsettled;
        }
        fresh_blocks.push_back(number_of_block);
      }
    }
  }

  // Marks entry `number` answered; its queue's oldest moves past settled entries, and settled entries and
  // blocks leave the front of their FIFOs.
  void mark_settled(std::uint64_t number) {
    entry& e = *at(number);
    e.settled = true;
    --unsettled;
    if (block* b = block_at(e.block); b != nullptr && --b->unsettled == 0) {
      b->bytes = std::string();
      b->envelope = zmq::message_t();
      b->payload = zmq::message_t();
    }
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
    while (!blocks.empty() && blocks.front().unsettled == 0) {
      blocks.pop_front();
      ++front_block;
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

  std::string_view entry_bytes(const entry& e) {
    const block& b = *block_at(e.block);
    return std::string_view(b.bytes).substr(e.offset, e.size);
  }

  void send_frames(std::vector<zmq::message_t>& frames) {
    // A SEND libzmq cannot take (socket.immediate, no connection) is dropped and counted: the reconnect
    // resends everything unconfirmed. One lost later is resent too (reconnect, restart, confirm_timeout).
    if (!session.send(frames)) send_retries.add();
  }

  std::vector<zmq::message_t> send_head(std::uint32_t queue) {
    std::vector<zmq::message_t> frames;
    const std::string& name = queue_names_copy(queue);
    if (!name.empty() && name.front() == '#') {  // a topic
      frames.emplace_back(fwd::publish.data(), fwd::publish.size());
      frames.emplace_back(name.data() + 1, name.size() - 1);
    } else {
      frames.emplace_back(fwd::send.data(), fwd::send.size());
      frames.emplace_back(name.data(), name.size());
    }
    return frames;
  }

  const std::string& queue_names_copy(std::uint32_t queue) {
    // Names are only appended (under the mutex) and never change: the I/O thread reads a stable copy.
    while (names.size() <= queue) {
      std::lock_guard lock(mutex);
      names.assign(queue_names.begin(), queue_names.end());
    }
    return names[queue];
  }
  std::vector<std::string> names;

  // Sends a large message on its own: SEND | queue | envelope | payload (its frame shared, not copied).
  void send_large(const block& b) {
    auto frames = send_head(b.queue);
    zmq::message_t env, payload;
    env.copy(const_cast<zmq::message_t&>(b.envelope));
    payload.copy(const_cast<zmq::message_t&>(b.payload));
    frames.push_back(std::move(env));
    frames.push_back(std::move(payload));
    send_frames(frames);
  }

  // Sends `count` entries whose bytes are `entries` (one after the other) to `queue`, in the negotiated form.
  void send_entries(std::uint32_t queue, std::string_view entries, std::size_t count) {
    auto frames = send_head(queue);
    if (session.welcome().version >= 2) {  // SEND | queue | block
      zmq::message_t packed(detail::block_header_size(count) + entries.size());
      char* p = detail::write_block_header(static_cast<char*>(packed.data()), count);
      std::memcpy(p, entries.data(), entries.size());
      frames.push_back(std::move(packed));
    } else {  // protocol v1: SEND | queue | (envelope | payload) x n
      std::string whole(detail::block_header_size(count), '\0');
      detail::write_block_header(whole.data(), count);
      whole.append(entries);
      std::size_t n = 0;
      if (detail::decode_block(whole, decoded, spans, n, {}) != decode_error::none) return;  // cannot happen
      for (std::size_t i = 0; i < n; ++i) {
        frames.push_back(encode_envelope(decoded[i]));
        frames.emplace_back(whole.data() + spans[i].offset, spans[i].size);
      }
    }
    send_frames(frames);
  }

  void record_sent(std::uint64_t number, steady::time_point now) {
    if (entry* e = at(number)) {
      e->sent_at = now;
      resend_order.emplace_back(now, number);
    }
  }

  void transmit(steady::time_point now) {
    if (session.welcome().version == 0) return;  // nothing before WELCOME says which protocol to speak
    // Fresh blocks go as they were encoded.
    for (const std::uint64_t number : fresh_blocks) {
      const block* b = block_at(number);
      if (b == nullptr || b->unsettled == 0) continue;
      if (b->bytes.empty()) {
        send_large(*b);
      } else {
        send_entries(b->queue, b->bytes, b->count);
      }
    }
    // Their entries are all the entries after those already sent; note when they left.
    if (!fresh_blocks.empty()) {
      for (std::uint64_t n = first_unsent; n < next_number; ++n) record_sent(n, now);
      first_unsent = next_number;
      fresh_blocks.clear();
    }
    // Resends: the unsettled entries picked, copied into new blocks per queue.
    for (std::uint32_t q = 0; q < queues.size(); ++q) {
      auto& items = queues[q].to_send;
      std::string bytes;
      std::size_t count = 0;
      auto flush = [&] {
        if (count > 0) send_entries(q, bytes, count);
        bytes.clear();
        count = 0;
      };
      for (const std::uint64_t number : items) {
        const entry* e = at(number);
        if (e == nullptr || e->settled) continue;
        if (e->size == 0) {  // a large message
          flush();
          send_large(*block_at(e->block));
        } else {
          bytes.append(entry_bytes(*e));
          ++count;
          if (count >= options.max_batch || bytes.size() >= max_block_bytes) flush();
        }
        record_sent(number, now);
      }
      flush();
      items.clear();
    }
  }
  std::uint64_t first_unsent = 1;

  void resend_everything(steady::time_point now) {
    resend_order.clear();
    for (queue_state& qs : queues) qs.to_send.clear();
    fresh_blocks.clear();
    first_unsent = next_number;
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
        mark_settled(number);
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
      mark_settled(number);
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
      take_pending();
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
        if (has_pending) {
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
  return impl_->submit(msg, false);
}

send_status producer::publish(message& msg) {
  return impl_->submit(msg, true);
}

send_status producer::impl::submit(message& msg, bool to_topic) {
  impl& s = *this;
  // ferryd would refuse it (bad_queue) only once it arrived; a consumer throws at construction for the name.
  if (!fwd::valid_queue_name(msg.topic()) || fwd::is_dlq_name(msg.topic())) return send_status::invalid;
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
    s.enqueue(msg, to_topic);
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
  st.send_retries = s.send_retries.get();
  st.forwarder_up = s.session.up();
  std::lock_guard lock(s.mutex);
  st.in_flight = s.in_flight;
  return st;
}

}  // namespace ferry
