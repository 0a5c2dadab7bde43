// Dead letters: messages a queue gives up on move to `<queue>.dlq` (a durable copy first, then the
// original is settled), and DLQ replay moves them back.
#include <fmt/format.h>
#include <algorithm>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "ferry/envelope.hpp"
#include "forwarder.hpp"
#include "protocol_helpers.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

void forwarder::move_dead_letters() {
  for (std::uint32_t i = 0; i < queues_.size(); ++i) {
    queue& source = *queues_[i].q;
    auto requests = source.take_dead_letters();
    const auto now = steady::now();
    for (auto& req : requests) {
      if (req.not_before > now) {
        source.dead_letter_failed(
            std::move(req), std::chrono::duration_cast<std::chrono::milliseconds>(req.not_before - now));
        continue;
      }
      message_record rec;
      if (!source.read(req.where, read_buffer_, rec)) {
        logger().error("queue {}: cannot read message seq {} to dead-letter it; it is dropped", source.name(),
                       req.seq);
        source.dead_lettered(req.seq);
        continue;
      }
      queue_slot& dlq = open_queue(source.name() + std::string(fwd::dlq_suffix));
      message m;
      if (decode_envelope(rec.envelope, m) != decode_error::none) {
        logger().error("queue {}: stored envelope of seq {} does not decode; dead-lettering it as is",
                       source.name(), req.seq);
        m.set_id(rec.id);
      }
      if (const auto first = dlq.q->admit(m.id(), now)) {
        if (!dlq.q->commit_finished(*first)) {
          source.dead_letter_failed(std::move(req), std::chrono::milliseconds(50));  // its copy is on the way
          continue;
        }
        if (dlq.q->unsettled(*first)) {
          source.dead_lettered(req.seq);  // moved before a restart: finish the move
          continue;
        }
        dlq.q->readmit(m.id(), now);  // an earlier copy was replayed or purged: this is a new dead letter
      }
      m.set_header("ferry-dead-letter-reason", req.reason);
      m.set_header("ferry-attempts", std::to_string(req.attempts));
      m.set_header("ferry-source-queue", source.name());
      m.set_attempt(0);
      envelope_buffer_.resize(envelope_size(m, envelope_form::storage));
      encode_envelope(m, envelope_buffer_.data(), envelope_form::storage);
      const std::uint64_t seq =
          dlq.q->append(m.id(), key_hash(m.key()), envelope_buffer_, rec.payload, unix_now_us());
      pending_append p;
      p.seq = seq;
      p.id = m.id();
      p.source_queue = i;
      p.source_seq = req.seq;
      logger().info("queue {}: message {} goes to {} ({})", source.name(), m.id().to_hex(), dlq.q->name(),
                    req.reason);
      p.request = std::make_unique<dead_letter_request>(std::move(req));
      dlq.gathering.push_back(std::move(p));
    }
  }
}

dlq_walk forwarder::walk_dead_letters(
    queue& dlq, const dlq_selection& sel, std::uint64_t cap,
    const std::function<bool(const queue::listed&, const message_record*, message*)>& act) {
  constexpr std::uint64_t max_looked = 1'000'000;
  constexpr std::size_t batch = 65'536;
  const std::uint64_t limit = std::min(sel.limit, cap);
  dlq_walk walk;
  walk.next = sel.from;
  std::uint64_t looked = 0;
  std::string buf;
  while (walk.done < limit && looked < max_looked) {
    // Without a reason filter every listed one is acted on: list no more than the limit.
    const std::size_t n = static_cast<std::size_t>(
        std::min<std::uint64_t>(sel.reason.empty() ? limit - walk.done : batch, max_looked - looked));
    const auto listed = dlq.list(n, walk.next, sel.before);
    if (listed.empty()) return walk;
    for (const auto& l : listed) {
      ++looked;
      walk.next = l.seq + 1;
      message_record rec;
      message m;
      const bool read = dlq.read(l.where, buf, rec);
      const bool decoded = read && decode_envelope(rec.envelope, m) == decode_error::none;
      if (!sel.reason.empty()) {
        if (!decoded) continue;
        const auto reason = m.headers().find("ferry-dead-letter-reason");
        if (reason == m.headers().end() || reason->second.find(sel.reason) == std::string::npos) continue;
      }
      if (act(l, read ? &rec : nullptr, decoded ? &m : nullptr)) ++walk.done;
      if (walk.done == limit || looked == max_looked) break;
    }
  }
  walk.more = true;
  return walk;
}

dlq_walk forwarder::purge_dead_letters(queue_slot& dlq, const dlq_selection& sel) {
  return walk_dead_letters(*dlq.q, sel, 1'000'000,
                           [&](const queue::listed& l, const message_record*, message*) {
                             return dlq.q->settle_waiting(l.seq, settle_reason::purged);
                           });
}

dlq_walk forwarder::replay_dead_letters(const std::string& name, queue_slot& dlq, const dlq_selection& sel) {
  queue_slot& target = open_queue(name);
  return walk_dead_letters(
      *dlq.q, sel, 1'000'000, [&](const queue::listed& l, const message_record* rec, message* decoded) {
        if (decoded == nullptr) return false;  // an unreadable dead letter stays where it is
        message& m = *decoded;
        // One replay at a time per dead letter: a second request before the first copy is durable skips it.
        if (!dlq.replaying.insert(l.seq).second) return false;
        for (const char* h : {"ferry-dead-letter-reason", "ferry-attempts", "ferry-source-queue"})
          m.headers().erase(h);
        m.set_attempt(0);
        envelope_buffer_.resize(envelope_size(m, envelope_form::storage));
        encode_envelope(m, envelope_buffer_.data(), envelope_form::storage);
        // A deliberate move: the dedup window, which still remembers this id from its first trip, is not
        // asked.
        (void)target.q->admit(m.id(), steady::now());
        const std::uint64_t seq =
            target.q->append(m.id(), key_hash(m.key()), envelope_buffer_, rec->payload, unix_now_us(),
                             m.ttl() ? storage::record_flag_ttl : 0);  // its time to live counts afresh
        pending_append p;
        p.seq = seq;
        p.id = m.id();
        p.source_queue = dlq.q->index();
        p.source_seq = l.seq;
        p.replay = true;
        target.gathering.push_back(std::move(p));
        return true;
      });
}

}  // namespace ferry::ferryd
