// Admin verbs: STATS and DLQ (list, replay, purge).
#include <fmt/format.h>
#include <map>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "detail/stats_schema.hpp"
#include "ferry/admin.hpp"
#include "ferry/envelope.hpp"
#include "forwarder.hpp"
#include "protocol_helpers.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

void forwarder::on_stats(const std::string& identity, std::vector<zmq::message_t>&) {
  forwarder_stats st;
  st.server = std::string("ferryd ") + FERRY_VERSION;
  st.instance = instance_;
  st.uptime_s = std::chrono::duration<double>(steady::now() - started_).count();
  st.commits = commits_;
  const storage::commit_counters cc = commit_->counters();
  st.fsyncs = cc.syncs;
  st.fsync_seconds = static_cast<double>(cc.sync_ns) / 1e9;
  st.malformed_frames = malformed_frames_;
  st.disk_full = disk_full(steady::now()) ? 1 : 0;
  for (auto& slot : queues_) {
    const queue& q = *slot.q;
    if (slot.retired) continue;
    if (q.kind() == queue_kind::topic) {
      topic_stats& ts = st.topics[q.name()];
      ts.first_seq = q.first_retained();
      ts.last_seq = q.committed_through();
      ts.messages = q.stream_messages();
      ts.disk_bytes = q.disk_bytes();
      ts.published = q.counters().confirmed;
      ts.deduplicated = q.counters().deduplicated;
      ts.refused = q.counters().refused;
      ts.subscriptions = q.subscriptions().size();
      ts.fed = q.counters().fed;
      ts.fetches = q.counters().fetches;
      ts.fetched = q.counters().fetched;
      continue;
    }
    const queue_counters& c = q.counters();
    queue_stats& qs = st.queues[q.name()];
    qs.depth = q.depth();
    qs.in_flight = q.in_flight();
    qs.parked = q.parked();
    qs.consumers = q.subscribers();
    qs.disk_bytes = q.disk_bytes();
    qs.delayed = q.delayed();
    qs.extended = c.extended;
    qs.ttl_expired = c.ttl_expired;
    if (const auto due = q.next_due()) {
      // At least 1 while one waits, so 0 means none.
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*due - steady::now()).count();
      qs.next_due_ms = static_cast<std::uint64_t>(std::max<std::int64_t>(1, left));
    }
    qs.confirmed = c.confirmed;
    qs.delivered = c.delivered;
    qs.acked = c.acked;
    qs.nacked = c.nacked;
    qs.redelivered = c.redelivered;
    qs.expired = c.expired;
    qs.dead_lettered = c.dead_lettered;
    qs.deduplicated = c.deduplicated;
    qs.refused = c.refused;
    qs.stale_acks = c.stale_acks;
    qs.rejected = c.rejected;
    if (q.kind() == queue_kind::subscription) {
      qs.position = q.low_watermark();
      qs.retention_skipped = c.retention_skipped;
      qs.truncated_starts = c.truncated_starts;
    }
  }
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::stats_reply));
  reply.push_back(frame(detail::stats_schema::encode_stats(st)));
  send_frames(identity, reply);
}

namespace {

// The DLQ options frame: {limit, from, before, reason}; unknown keys are ignored. Returns a problem, or "".
std::string parse_dlq_options(std::string_view bytes, dlq_selection& out) {
  msgpack::object_handle oh;
  try {
    oh = unpack_untrusted(bytes);
  } catch (const std::exception&) {
    return "DLQ options must be a MessagePack map";
  }
  const msgpack::object& o = oh.get();
  if (o.type != msgpack::type::MAP) return "DLQ options must be a MessagePack map";
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) continue;
    const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
    const msgpack::object& v = kv.val;
    std::uint64_t* number = key == "limit"    ? &out.limit
                            : key == "from"   ? &out.from
                            : key == "before" ? &out.before
                                              : nullptr;
    if (number != nullptr) {
      if (v.type != msgpack::type::POSITIVE_INTEGER)
        return fmt::format("DLQ options: \"{}\" must be an unsigned integer", key);
      *number = v.via.u64;
    } else if (key == "reason") {
      if (v.type != msgpack::type::STR) return "DLQ options: \"reason\" must be a string";
      if (v.via.str.size > fwd::max_dlq_reason_filter)
        return fmt::format("DLQ options: \"reason\" is {} bytes; at most {}", v.via.str.size,
                           fwd::max_dlq_reason_filter);
      out.reason.assign(v.via.str.ptr, v.via.str.size);
    }
  }
  return {};
}

}  // namespace

void forwarder::on_dlq(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 4) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "DLQ needs: queue, operation (list, replay or purge)");
  }
  const std::string name(view(frames[2]));
  const std::string_view op = view(frames[3]);
  dlq_selection sel;
  if (frames.size() >= 5) {
    if (const std::string problem = parse_dlq_options(view(frames[4]), sel); !problem.empty()) {
      ++malformed_frames_;
      return send_error(identity, fwd::code::bad_frames, problem);
    }
  }
  if (!fwd::valid_destination(name) || fwd::is_dlq_name(name))
    return send_error(identity, fwd::code::bad_queue,
                      "DLQ takes the name of the queue (or topic@subscription) whose dead letters to use");
  if (op == "replay" && fwd::is_subscription_queue(name))
    return send_error(identity, fwd::code::bad_queue,
                      "DLQ replay to a topic's subscription is not supported (it would publish the messages "
                      "to every subscription again); list or purge them");
  queue_slot* dlq_slot = find_queue(name + std::string(fwd::dlq_suffix));
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::dlq_reply));
  const auto pack_walk = [](auto& pk, const dlq_walk& walk) {
    pk.pack("next");
    pk.pack(walk.next);
    pk.pack("more");
    pk.pack(walk.more);
  };
  if (op == "list") {
    struct item {
      std::uint64_t seq;
      message m;
      std::int64_t stored_at_us;
      std::string payload;
    };
    std::vector<item> items;
    dlq_walk walk;
    walk.next = sel.from;
    if (dlq_slot != nullptr)
      walk = walk_dead_letters(
          *dlq_slot->q, sel, 10'000, [&](const queue::listed& l, const message_record* rec, message* m) {
            // One that cannot be read or decoded is listed with empty fields.
            items.push_back({l.seq, m ? std::move(*m) : message(), m ? rec->stored_at_us : 0,
                             m ? std::string(rec->payload) : std::string()});
            return true;
          });
    reply.push_back(frame(packed([&](auto& pk) {
      pk.pack_map(5);
      pk.pack("queue");
      pk.pack(name + std::string(fwd::dlq_suffix));
      pk.pack("depth");
      pk.pack(dlq_slot ? dlq_slot->q->depth() : 0);
      pack_walk(pk, walk);
      pk.pack("messages");
      pk.pack_array(static_cast<std::uint32_t>(items.size()));
      for (const auto& it : items) {
        pk.pack_map(7);
        pk.pack("seq");
        pk.pack(it.seq);
        pk.pack("id");
        const std::string_view id_bytes = it.m.id().is_nil() ? std::string_view() : it.m.id().view();
        pk.pack_bin(static_cast<std::uint32_t>(id_bytes.size()));
        pk.pack_bin_body(id_bytes.data(), static_cast<std::uint32_t>(id_bytes.size()));
        pk.pack("timestamp_us");
        pk.pack(it.m.timestamp_us());
        pk.pack("key");
        pk.pack(it.m.key());
        pk.pack("headers");
        pk.pack(std::map<std::string, std::string>(it.m.headers().begin(), it.m.headers().end()));
        pk.pack("stored_at_us");
        pk.pack(it.stored_at_us);
        pk.pack("payload");
        pk.pack_bin(static_cast<std::uint32_t>(it.payload.size()));
        pk.pack_bin_body(it.payload.data(), static_cast<std::uint32_t>(it.payload.size()));
      }
    })));
    return send_frames(identity, reply);
  }
  if (op == "purge" || op == "replay") {
    dlq_walk walk;
    walk.next = sel.from;
    if (dlq_slot != nullptr)
      walk = op == "purge" ? purge_dead_letters(*dlq_slot, sel) : replay_dead_letters(name, *dlq_slot, sel);
    if (walk.done > 0 || dlq_slot == nullptr)
      logger().info("DLQ {} of queue {}: {} message(s){}", op, name, walk.done,
                    sel.reason.empty() ? std::string()
                                       : fmt::format(" (reason containing '{}')", printable(sel.reason)));
    reply.push_back(frame(packed([&](auto& pk) {
      pk.pack_map(5);
      pk.pack(op == "purge" ? "purged" : "replayed");
      pk.pack(walk.done);
      pk.pack("depth");
      pk.pack(dlq_slot ? dlq_slot->q->depth() : 0);
      pk.pack("end");
      pk.pack(dlq_slot ? dlq_slot->q->next_seq() : 1);
      pack_walk(pk, walk);
    })));
    return send_frames(identity, reply);
  }
  ++malformed_frames_;
  send_error(identity, fwd::code::bad_frames, "DLQ operations are list, replay and purge");
}

}  // namespace ferry::ferryd
