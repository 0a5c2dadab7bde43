// Sessions: HELLO, PING, CONSUME, CANCEL and the answers (ACK, NACK, REJECT) of consumers, the peers whose
// heartbeats ferryd watches, and delivery: DELIVERs assembled by the queues and sent once their attempt
// counts are journaled.
#include <fmt/format.h>
#include <algorithm>
#include <cstring>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "detail/wire.hpp"
#include "forwarder.hpp"
#include "protocol_helpers.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

void forwarder::on_ping(const std::string& identity, std::vector<zmq::message_t>& frames) {
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
}

void forwarder::expire_silent_consumers(steady::time_point now) {
  peers_.expire(now, options_.heartbeat_timeout, [&](const std::string& identity, std::uint32_t index) {
    queue& q = *queues_[index].q;
    logger().warn("consumer {} on queue {} silent for over {} ms: its {} delivery(ies) go back to the queue",
                  peer_name(identity), q.name(), options_.heartbeat_timeout.count(),
                  q.subs().count(identity) ? q.subs().at(identity)->unacked : 0u);
    q.unsubscribe(identity, true);
    retire_if_ephemeral(queues_[index]);
  });
}

void forwarder::on_hello(const std::string& identity, std::vector<zmq::message_t>& frames) {
  std::uint64_t version = 1;
  if (frames.size() >= 3 && !map_uint(view(frames[2]), "version", version, 1)) {
    ++malformed_frames_;
    return send_error(
        identity, fwd::code::bad_frames,
        "HELLO: the second frame must be a MessagePack map whose \"version\" is an unsigned integer");
  }
  // The client names the highest version it speaks; WELCOME answers the highest both speak.
  if (version < fwd::min_protocol_version) {
    ++malformed_frames_;
    return send_error(
        identity, fwd::code::bad_frames,
        fmt::format("protocol version {} is not supported; this ferryd speaks versions {} to {}", version,
                    fwd::min_protocol_version, fwd::protocol_version));
  }
  const std::uint64_t agreed = std::min<std::uint64_t>(version, fwd::protocol_version);
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::welcome));
  reply.push_back(frame(packed([&](auto& pk) {
    pk.pack_map(7);
    pk.pack("version");
    pk.pack(agreed);
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

void forwarder::on_consume(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 3) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "CONSUME needs a queue frame");
  }
  const std::string_view name = view(frames[2]);
  if (fwd::is_subscription_queue(name) && !fwd::is_dlq_name(name))
    return send_error(
        identity, fwd::code::bad_queue,
        fmt::format("'{}' is a topic's subscription: consume it with SUBSCRIBE", printable(name)));
  if (!fwd::valid_destination(name))
    return send_error(identity, fwd::code::bad_queue,
                      fmt::format("'{}' is not a valid queue name", printable(name)));
  std::uint64_t prefetch = 64;
  std::string problem;
  if (frames.size() >= 4 && !map_uint(view(frames[3]), "prefetch", prefetch, 64, &problem)) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      "CONSUME options: " + problem + " (\"prefetch\" takes 1 to 100000)");
  }
  // A consumer that speaks protocol v2 asks for DELIVERs as one block ("version": 2); others get v1's frames.
  std::uint64_t version = 1;
  if (frames.size() >= 4 && !map_uint(view(frames[3]), "version", version, 1, &problem)) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "CONSUME options: " + problem);
  }
  version = std::clamp<std::uint64_t>(version, fwd::min_protocol_version, fwd::protocol_version);
  prefetch = std::clamp<std::uint64_t>(prefetch, 1, 100'000);
  queue_slot& slot = open_queue(std::string(name));
  slot.q->subscribe(identity, static_cast<std::uint32_t>(prefetch), static_cast<std::uint32_t>(version));
  peers_.consuming(identity, slot.q->index(), steady::now());
  logger().info("consumer {} on queue {} (prefetch {})", peer_name(identity), name, prefetch);
  send_consuming(identity, name, prefetch, 0, {});
}

void forwarder::send_consuming(const std::string& identity, std::string_view name, std::uint64_t prefetch,
                               std::uint32_t extra_fields,
                               const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& extra) {
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::consuming));
  reply.push_back(frame(name));
  reply.push_back(frame(packed([&](auto& pk) {
    pk.pack_map(5 + extra_fields);
    pk.pack("prefetch");
    pk.pack(prefetch);
    pk.pack("lease_ms");
    pk.pack(static_cast<std::uint64_t>(options_.queue.lease.count()));
    pk.pack("max_lease_ms");  // EXTEND is understood, up to this long from a delivery
    pk.pack(static_cast<std::uint64_t>(std::max(options_.queue.lease, options_.queue.max_lease).count()));
    pk.pack("heartbeat_ms");
    pk.pack(static_cast<std::uint64_t>(options_.heartbeat_interval.count()));
    pk.pack("instance");
    pk.pack(instance_);
    if (extra) extra(pk);
  })));
  send_frames(identity, reply);
}

void forwarder::on_cancel(const std::string& identity, std::vector<zmq::message_t>& frames) {
  if (frames.size() < 3) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "CANCEL needs a queue frame");
  }
  if (!fwd::valid_destination(view(frames[2])))
    return send_error(identity, fwd::code::bad_queue,
                      fmt::format("'{}' is not a valid queue name", printable(view(frames[2]))));
  if (queue_slot* slot = find_queue(view(frames[2]))) {
    slot->q->unsubscribe(identity, false);
    peers_.cancelled(identity, slot->q->index());
    retire_if_ephemeral(*slot);
  }
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::cancelled));
  reply.push_back(frame(view(frames[2])));
  send_frames(identity, reply);
}

void forwarder::on_answer(const std::string& identity, std::vector<zmq::message_t>& frames) {
  const std::string_view verb = view(frames[1]);
  const bool is_ack = verb == fwd::ack;
  if (frames.size() < 4 || (is_ack && frames[3].size() % fwd::token_size != 0) ||
      (!is_ack && frames[3].size() != fwd::token_size)) {
    ++malformed_frames_;
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
    std::optional<std::chrono::milliseconds> delay;
    if (frames.size() >= 6) {
      const std::uint64_t ms = frames[5].size() == 8
                                   ? fwd::get_u64(static_cast<const char*>(frames[5].data()))
                                   : fwd::max_nack_delay_ms + 1;
      if (verb != fwd::nack || ms > fwd::max_nack_delay_ms) {
        ++malformed_frames_;
        return send_error(identity, fwd::code::bad_frames,
                          verb != fwd::nack
                              ? std::string("REJECT takes a token and a reason, no delay")
                              : fmt::format("a NACK's delay is 8 bytes, big-endian milliseconds, at most {} "
                                            "(24 h); the message stays in flight",
                                            fwd::max_nack_delay_ms));
      }
      delay = std::chrono::milliseconds(ms);
    }
    // A dead letter rejected again stays where it is: there is no dead-letter queue of a dead-letter queue.
    if (verb == fwd::nack || fwd::is_dlq_name(q.name())) {
      (void)q.nack(identity, fwd::get_u64(tokens), std::move(reason), delay);
    } else {
      (void)q.reject(identity, fwd::get_u64(tokens), std::move(reason));
    }
  }
}

void forwarder::on_extend(const std::string& identity, std::vector<zmq::message_t>& frames) {
  // EXTEND | queue | tokens (8 bytes each) | lease_ms (8 bytes, big-endian)
  if (frames.size() != 5 || frames[3].size() % fwd::token_size != 0 || frames[4].size() != 8 ||
      fwd::get_u64(static_cast<const char*>(frames[4].data())) > fwd::max_nack_delay_ms) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      "EXTEND needs: queue, tokens (8 bytes each), and the lease wanted from now in "
                      "milliseconds (8 bytes, big-endian, at most 86400000)");
  }
  queue_slot* slot = find_queue(view(frames[2]));
  if (slot == nullptr || !slot->q->has_subscriber(identity)) {
    return send_error(identity, fwd::code::not_consuming,
                      fmt::format("this connection is not consuming queue '{}'; send CONSUME again",
                                  printable(view(frames[2]))));
  }
  const std::chrono::milliseconds by(fwd::get_u64(static_cast<const char*>(frames[4].data())));
  const char* tokens = static_cast<const char*>(frames[3].data());
  const auto now = steady::now();
  for (std::size_t i = 0; i < frames[3].size(); i += fwd::token_size)
    (void)slot->q->extend(identity, fwd::get_u64(tokens + i), by, now);
}

void forwarder::dispatch_all(steady::time_point now) {
  for (auto& slot : queues_) {
    queue& q = *slot.q;
    if (q.subscribers() == 0 || !q.has_work()) continue;
    if (q.dispatch(now) == 0) continue;
    for (auto& [identity, sub] : q.subs()) {
      const std::size_t messages = sub->out_spans.size();
      // DELIVERs of at most max_deliver messages and, past the first message, max_deliver_bytes: a consumer
      // refuses (drops the connection on) a frame over its ZMQ_MAXMSGSIZE.
      for (std::size_t first = 0; first < messages;) {
        const auto* spans = sub->out_spans.data();
        std::size_t n = 1;
        while (first + n < messages && n < fwd::max_deliver &&
               spans[first + n].end - spans[first].begin <= fwd::max_deliver_bytes)
          ++n;
        std::vector<zmq::message_t> out;
        out.push_back(frame(fwd::deliver));
        out.push_back(frame(q.name()));
        out.push_back(
            frame(std::string_view(sub->out_tokens).substr(first * fwd::token_size, n * fwd::token_size)));
        const char* entries = sub->out_entries.data();
        if (sub->version >= 2) {  // DELIVER | queue | tokens | block
          const std::size_t begin = spans[first].begin, end = spans[first + n - 1].end;
          zmq::message_t block(detail::block_header_size(n) + (end - begin));
          char* p = detail::write_block_header(static_cast<char*>(block.data()), n);
          std::memcpy(p, entries + begin, end - begin);
          out.push_back(std::move(block));
        } else {  // DELIVER | queue | tokens | (envelope | payload) x n
          out.reserve(3 + 2 * n);
          for (std::size_t i = first; i < first + n; ++i) {
            out.emplace_back(entries + spans[i].begin, spans[i].envelope);
            out.emplace_back(entries + spans[i].payload_at, spans[i].payload);
          }
        }
        // Sent after the journal is flushed (see run()); kept here until then.
        pending_delivers_.push_back({identity, std::move(out)});
        first += n;
      }
      sub->out_spans.clear();
      sub->out_entries.clear();
      sub->out_tokens.clear();
    }
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

}  // namespace ferry::ferryd
