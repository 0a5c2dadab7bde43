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

void forwarder::on_dlq(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 4) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "DLQ needs: queue, operation (list, replay or purge)");
  }
  const std::string name(view(frames[2]));
  const std::string_view op = view(frames[3]);
  std::uint64_t limit = 100;
  if (frames.size() >= 5 && !map_uint(view(frames[4]), "limit", limit, 100)) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "DLQ options must be a MessagePack map");
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
    if (dlq_slot != nullptr)
      done =
          op == "purge" ? purge_dead_letters(*dlq_slot, limit) : replay_dead_letters(name, *dlq_slot, limit);
    logger().info("DLQ {} of queue {}: {} message(s)", op, name, done);
    reply.push_back(frame(packed([&](auto& pk) {
      pk.pack_map(1);
      pk.pack(op == "purge" ? "purged" : "replayed");
      pk.pack(done);
    })));
    return send_frames(identity, reply);
  }
  ++malformed_frames_;
  send_error(identity, fwd::code::bad_frames, "DLQ operations are list, replay and purge");
}

}  // namespace ferry::ferryd
