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

std::uint64_t forwarder::purge_dead_letters(queue_slot& dlq, std::uint64_t limit) {
  std::uint64_t done = 0;
  for (const auto& l : dlq.q->list(static_cast<std::size_t>(std::min<std::uint64_t>(limit, 1'000'000))))
    if (dlq.q->settle_waiting(l.seq, settle_reason::purged)) ++done;
  return done;
}

std::uint64_t forwarder::replay_dead_letters(const std::string& name, queue_slot& dlq, std::uint64_t limit) {
  std::uint64_t done = 0;
  const auto listed = dlq.q->list(static_cast<std::size_t>(std::min<std::uint64_t>(limit, 1'000'000)));
  queue_slot& target = open_queue(name);
  std::string buf;
  for (const auto& l : listed) {
    message_record rec;
    message m;
    if (!dlq.q->read(l.where, buf, rec) || decode_envelope(rec.envelope, m) != decode_error::none) continue;
    for (const char* h : {"ferry-dead-letter-reason", "ferry-attempts", "ferry-source-queue"})
      m.headers().erase(h);
    m.set_attempt(0);
    envelope_buffer_.resize(envelope_size(m, envelope_form::storage));
    encode_envelope(m, envelope_buffer_.data(), envelope_form::storage);
    // A deliberate move: the dedup window, which still remembers this id from its first trip, is not asked.
    (void)target.q->admit(m.id(), steady::now());
    const std::uint64_t seq =
        target.q->append(m.id(), key_hash(m.key()), envelope_buffer_, rec.payload, unix_now_us());
    pending_append p;
    p.seq = seq;
    p.id = m.id();
    p.source_queue = dlq.q->index();
    p.source_seq = l.seq;
    p.replay = true;
    target.gathering.push_back(std::move(p));
    ++done;
  }
  return done;
}

}  // namespace ferry::ferryd
