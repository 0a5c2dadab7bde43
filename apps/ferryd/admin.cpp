// Admin verbs: STATS and DLQ (list, replay, purge).
#include <fmt/format.h>
#include <map>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "ferry/envelope.hpp"
#include "forwarder.hpp"
#include "protocol_helpers.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

void forwarder::on_stats(const std::string& identity, std::vector<zmq::message_t>&) {
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
    pk.pack(malformed_frames_);
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
    ++malformed_frames_;
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
  send_error(identity, fwd::code::bad_frames, "DLQ operations are list, replay and purge");
}

}  // namespace ferry::ferryd
