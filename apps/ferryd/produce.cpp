// The commit pipeline: SEND is checked and gathered per queue, handed to the commit thread when it is idle
// (with the journals that are due a sync), and confirmed or refused when the commit reports back.
#include <sys/statvfs.h>

#include <fmt/format.h>
#include <algorithm>
#include <cstring>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "detail/wire.hpp"
#include "ferry/envelope.hpp"
#include "forwarder.hpp"
#include "protocol_helpers.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

bool forwarder::disk_full(steady::time_point now) {
  return low_disk_ || now < disk_full_until_;
}

void forwarder::on_send(const std::string& identity, std::vector<zmq::message_t>& frames) {
  // SEND | queue | block                          protocol v2: every message in one frame
  // SEND | queue | (envelope | payload) x n       protocol v1
  // PUBLISH | topic | ...                          the same, to a topic
  const bool topic = view(frames[1]) == fwd::publish;
  const std::string_view verb = topic ? fwd::publish : fwd::send;
  const bool packed = frames.size() == 4;
  if (!packed && (frames.size() < 5 || (frames.size() - 3) % 2 != 0)) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      fmt::format("{} needs: {}, then one block of messages (protocol v2) or envelope and "
                                  "payload frames in pairs (protocol v1)",
                                  verb, topic ? "topic" : "queue"));
  }
  // Whole-request checks first: a request that fails them changes nothing (no queue is created).
  std::size_t count = (frames.size() - 3) / 2;
  if (packed) {
    const decode_error e = detail::decode_block(view(frames[3]), send_batch_, send_payloads_, count, {});
    if (e != decode_error::none) {
      ++malformed_frames_;
      return send_error(identity, fwd::code::bad_frames,
                        fmt::format("{}: the block of messages does not decode: {}", verb, to_string(e)));
    }
  }
  if (count > fwd::max_batch) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      fmt::format("{}: {} messages; at most {} per {}, nothing was stored: send them in "
                                  "smaller batches",
                                  verb, count, fwd::max_batch, verb));
  }
  const std::string_view name = view(frames[2]);
  const char* queue_problem = nullptr;
  if (!fwd::valid_queue_name(name)) {
    queue_problem = topic ? "topic names are 1-200 characters of A-Z a-z 0-9 . _ - and do not start with '.'"
                          : "queue names are 1-200 characters of A-Z a-z 0-9 . _ - and do not start with '.'";
  } else if (fwd::is_dlq_name(name)) {
    queue_problem =
        topic ? "names ending in .dlq are for dead-letter queues, not topics"
              : "dead-letter queues are written by ferryd only (use DLQ replay to move messages back)";
  }
  send_context ctx{identity,      topic,         topic ? find_topic(name) : find_queue(name),
                   steady::now(), unix_now_us(), disk_full(steady::now())};
  if (packed && ctx.slot != nullptr && queue_problem == nullptr) {
    // The dedup window is probed for the whole block at once: its table does not fit the cache.
    batch_ids_.clear();
    for (std::size_t i = 0; i < count; ++i) batch_ids_.push_back(send_batch_[i].id());
    ctx.slot->q->prefetch(batch_ids_.data(), batch_ids_.size());
  }
  for (std::size_t i = 0; i < count; ++i) {
    decode_error err = decode_error::none;
    message* m = nullptr;
    std::string_view payload;
    message_id id;
    if (packed) {
      m = &send_batch_[i];
      payload = view(frames[3]).substr(send_payloads_[i].offset, send_payloads_[i].size);
      id = m->id();
    } else {
      const std::string_view env = view(frames[3 + 2 * i]);
      err = decode_envelope(env, scratch_);
      m = &scratch_;
      payload = view(frames[4 + 2 * i]);
      id = err == decode_error::none ? scratch_.id() : readable_id(env);
    }
    if (queue_problem != nullptr) {
      refuse(identity, id, fwd::code::bad_queue, queue_problem, name);
      continue;
    }
    store_one(ctx, name, *m, err, id, payload);
  }
}

void forwarder::store_one(send_context& ctx, std::string_view name, message& m, decode_error err,
                          const message_id& id, std::string_view payload) {
  // Refusals of a message that never reached a queue (malformed, too large) count where the queue exists.
  auto count_refusal = [&] {
    if (ctx.slot != nullptr) ++ctx.slot->q->counters().refused;
  };
  if (err != decode_error::none) {
    ++malformed_frames_;
    count_refusal();
    return refuse(ctx.identity, id, fwd::code::malformed,
                  fmt::format("envelope rejected: {}", to_string(err)), name);
  }
  const bool has_ttl = m.headers().find(ttl_header) != m.headers().end();
  if (has_ttl && !m.ttl()) {
    count_refusal();
    return refuse(ctx.identity, id, fwd::code::malformed,
                  fmt::format("header {} is '{}': give whole milliseconds from 1 to {} (ten years)",
                              ttl_header, printable(m.header(ttl_header)), max_ttl.count()),
                  name);
  }
  // A delay or a not-before time: stored as one not-before time on ferryd's clock.
  const bool has_delay = m.headers().find(delay_header) != m.headers().end();
  const bool has_not_before = m.headers().find(not_before_header) != m.headers().end();
  std::int64_t not_before_ms = -1;
  if (has_delay || has_not_before) {
    const std::int64_t now_ms = ctx.now_us / 1000;
    std::string problem;
    if (ctx.topic) {
      problem = fmt::format(
          "headers {} and {} are for queues: a topic's messages go to its subscribers as "
          "they are stored",
          delay_header, not_before_header);
    } else if (has_delay && !m.delay()) {
      problem = fmt::format("header {} is '{}': give whole milliseconds from 0 to {} (a year)", delay_header,
                            printable(m.header(delay_header)), max_delay.count());
    } else if (has_not_before && (!m.not_before_ms() || *m.not_before_ms() > now_ms + max_delay.count())) {
      problem = fmt::format(
          "header {} is '{}': give Unix milliseconds, at most a year ahead of ferryd's "
          "clock ({} now)",
          not_before_header, printable(m.header(not_before_header)), now_ms);
    }
    if (!problem.empty()) {
      count_refusal();
      return refuse(ctx.identity, id, fwd::code::malformed, problem, name);
    }
    if (has_delay) not_before_ms = now_ms + m.delay()->count();
    if (has_not_before) not_before_ms = std::max(not_before_ms, *m.not_before_ms());
  }
  if (payload.size() > options_.max_message_bytes) {
    count_refusal();
    return refuse(ctx.identity, id, fwd::code::too_large,
                  fmt::format("payload of {} bytes is over the limit of {} bytes", payload.size(),
                              options_.max_message_bytes),
                  name);
  }
  if (ctx.slot == nullptr)  // the first message it will hold
    ctx.slot = ctx.topic ? &open_topic(std::string(name)) : &open_queue(std::string(name));
  queue_slot& slot = *ctx.slot;
  queue& q = *slot.q;
  if (const auto first = q.admit(id, ctx.now)) {
    // A resend. Confirm it now if the first copy is durable, or together with it if still in a batch.
    ++q.counters().deduplicated;
    if (q.commit_finished(*first)) {
      queue_confirm(ctx.identity, id);
    } else {
      slot.extra_waiters.emplace(id, ctx.identity);
    }
    return;
  }
  if (not_before_ms >= 0) {
    m.headers().erase(std::string(delay_header));
    m.set_header(std::string(not_before_header), std::to_string(not_before_ms));
  }
  const std::uint64_t record_bytes =
      storage::message_record_size(envelope_size(m, envelope_form::storage), payload.size());
  if (ctx.no_space || !reserve_space(record_bytes)) {
    q.append_failed_admission(id);
    ++q.counters().refused;
    return refuse(ctx.identity, id, fwd::code::disk_full,
                  "the data directory is out of space; the message was not stored (retry later)", name);
  }
  if (q.full()) {
    q.append_failed_admission(id);
    ++q.counters().refused;
    return refuse(ctx.identity, id, fwd::code::queue_full,
                  fmt::format("queue {} holds its maximum of {} messages", q.name(), q.config().max_messages),
                  name);
  }
  m.set_attempt(0);
  // A topic's messages carry their place in it: origin names the topic, sequence is its seq.
  if (ctx.topic) m.set_stream(q.origin(), q.next_seq());
  envelope_buffer_.resize(envelope_size(m, envelope_form::storage));
  encode_envelope(m, envelope_buffer_.data(), envelope_form::storage);
  const std::uint64_t seq =
      q.append(id, key_hash(m.key()), envelope_buffer_, payload, ctx.now_us,
               static_cast<std::uint8_t>((has_ttl ? storage::record_flag_ttl : 0) |
                                         (not_before_ms >= 0 ? storage::record_flag_not_before : 0)));
  slot.gathering.push_back(pending_append{seq, id, ctx.identity});
}

void forwarder::queue_confirm(const std::string& identity, const message_id& id) {
  // Confirms come in runs for one producer: remember where the last one went.
  if (last_confirm_ == nullptr || last_confirm_identity_ != identity) {
    last_confirm_ = &confirms_out_[identity];
    last_confirm_identity_ = identity;
  }
  last_confirm_->append(id.view());
}

void forwarder::refuse(const std::string& identity, const message_id& id, std::string_view code,
                       const std::string& text, std::string_view queue_name) {
  std::uint64_t held = 0;
  static detail::log_limiter limiter(10);
  if (limiter.allow(held))
    logger().warn("queue {}: refused message {}: {}: {}{}", printable(queue_name), id.to_hex(), code, text,
                  held ? fmt::format(" ({} more refusals not logged)", held) : std::string());
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::refuse));
  reply.emplace_back(id.view().data(), id.view().size());
  reply.push_back(frame(code));
  reply.push_back(frame(text));
  send_frames(identity, reply);
}

void forwarder::flush_journals() {
  for (auto& slot : queues_) {
    journal& j = slot.q->state_journal();
    if (!j.has_buffered()) continue;
    if (const int err = j.flush(); err != 0) {
      static detail::log_limiter limiter(1);
      std::uint64_t held = 0;
      if (limiter.allow(held))
        logger().error("queue {}: cannot write its journal: {} (kept in memory, retried)", slot.q->name(),
                       std::strerror(err));
    }
    slot.journal_dirty = true;
  }
}

void forwarder::maybe_submit() {
  if (commit_->busy()) return;
  commit_batch batch;
  for (auto& slot : queues_) {
    if (!slot.q->has_pending()) continue;
    batch.appends.push_back({slot.q->writer(), slot.q->index(), slot.q->take_pending()});
    // Swapped, not moved: the emptied vector of the last commit keeps its capacity for the next batch
    // (moving left `gathering` without any, to regrow on every batch).
    std::swap(slot.committing, slot.gathering);
    slot.gathering.clear();
  }
  // Settlements and attempt counts are written to the journal every loop iteration (so a killed ferryd
  // loses none) but synced only with the first batch after 200 ms have passed (with `--fsync interval`,
  // on its interval): a machine crash can bring back what was acknowledged meanwhile, to be delivered
  // again, and never loses a confirmed message. Syncing them with every batch would put a second
  // fdatasync on the path of every confirm; this way one batch in 200 ms carries it.
  // The same batch carries each log's checkpoint of its durable end (with `--fsync always`, where everything
  // reported committed is synced), so recovery can tell a torn write from corruption of confirmed data.
  const auto now = steady::now();
  if (now - last_journal_sync_ >= std::chrono::milliseconds(200)) {
    for (auto& slot : queues_) {
      if (slot.journal_dirty) {
        batch.sync_fds.push_back(slot.q->state_journal().fd());
        slot.journal_dirty = false;
      }
      if (options_.fsync == fsync_policy::always)
        if (const int fd = slot.q->checkpoint(); fd >= 0) batch.sync_fds.push_back(fd);
    }
    if (!batch.sync_fds.empty()) last_journal_sync_ = now;
  }
  if (batch.appends.empty() && batch.sync_fds.empty()) return;
  batch.number = ++batch_number_;
  commit_->submit(std::move(batch));
}

void forwarder::fail_sync(int err) {
  // After a failed fdatasync nothing can be called durable, and retrying may report success for data that
  // never reached the disk (the kernel may have dropped the dirty pages). Stop without confirming more; a
  // restart recovers from what is really on disk. The same for a batch's sync and for the background
  // syncs of --fsync interval.
  logger().critical("fdatasync failed: {}; ferryd stops without confirming the batch. Restart it to recover.",
                    std::strerror(err));
  std::_Exit(exit_runtime);
}

void forwarder::handle_commit(commit_result& result) {
  if (result.sync_error != 0) fail_sync(result.sync_error);
  ++commits_;
  for (std::size_t n = 0; n < result.outcomes.size(); ++n) {
    auto& [index, outcome] = result.outcomes[n];
    queue_slot& slot = queues_[index];
    queue& q = *slot.q;
    q.committed(outcome);
    const bool failed = outcome.error != 0;
    if (feed_ && q.kind() == queue_kind::topic && n < result.buffers.size() &&
        (!failed || outcome.durable_through != 0))
      publish_feed(q, result.buffers[n], failed ? outcome.durable_through : ~0ull);
    if (n < result.buffers.size()) q.recycle(std::move(result.buffers[n]));
    if (failed) {
      if (is_space_error(outcome.error)) {
        disk_full_until_ = steady::now() + std::chrono::seconds(1);
        logger().error(
            "queue {}: write failed: {}; producers are refused with disk_full for a second, then "
            "writes are tried again",
            q.name(), std::strerror(outcome.error));
      } else {
        logger().error("queue {}: write failed: {}; the batch is refused with io_error", q.name(),
                       std::strerror(outcome.error));
      }
    }
    for (auto& p : slot.committing) {
      const bool ok = !failed || (outcome.durable_through != 0 && p.seq <= outcome.durable_through);
      auto waiters = slot.extra_waiters.equal_range(p.id);
      if (ok) {
        ++committed_records_;
        if (!p.identity.empty()) {
          ++q.counters().confirmed;
          queue_confirm(p.identity, p.id);
        }
        for (auto w = waiters.first; w != waiters.second; ++w) queue_confirm(w->second, p.id);
        if (p.source_queue != ~0u) {
          queue& source = *queues_[p.source_queue].q;
          if (p.replay) {
            queues_[p.source_queue].replaying.erase(p.source_seq);
            source.settle_waiting(p.source_seq, settle_reason::replayed);
          } else {
            source.dead_lettered(p.source_seq);
          }
        }
      } else {
        q.append_failed(p.id, p.seq);
        const std::string_view code =
            is_space_error(outcome.error) ? fwd::code::disk_full : fwd::code::io_error;
        const std::string text = fmt::format("not stored: {}", std::strerror(outcome.error));
        if (!p.identity.empty()) {
          ++q.counters().refused;
          refuse(p.identity, p.id, code, text, q.name());
        }
        for (auto w = waiters.first; w != waiters.second; ++w) refuse(w->second, p.id, code, text, q.name());
        if (p.source_queue != ~0u && p.replay) queues_[p.source_queue].replaying.erase(p.source_seq);
        if (p.source_queue != ~0u && !p.replay && p.request)
          queues_[p.source_queue].q->dead_letter_failed(std::move(*p.request), std::chrono::seconds(1));
      }
      slot.extra_waiters.erase(p.id);
    }
    slot.committing.clear();
  }
}

bool forwarder::reserve_space(std::uint64_t bytes) {
  // --min-free-mb holds per message, not once a second: what is about to be written counts against the free
  // space last measured, which is measured again whenever the writes since come near it.
  if (options_.min_free_bytes == 0 || !free_known_) return true;
  if (written_since_check_ + bytes + options_.min_free_bytes > free_at_check_ ||
      written_since_check_ > (free_at_check_ - std::min(free_at_check_, options_.min_free_bytes)) / 4)
    check_free_space(steady::now(), true);
  if (written_since_check_ + bytes + options_.min_free_bytes > free_at_check_) {
    if (!low_disk_)
      logger().warn("free space in {} would drop under --min-free-mb: producers are refused (disk_full)",
                    options_.data_dir.string());
    low_disk_ = true;
    return false;
  }
  written_since_check_ += bytes;
  return true;
}

void forwarder::check_free_space(steady::time_point now, bool at_once) {
  if (!at_once && now < next_disk_check_) return;
  next_disk_check_ = now + std::chrono::seconds(1);
  struct statvfs st {};
  if (::statvfs(options_.data_dir.c_str(), &st) != 0) return;
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  free_known_ = true;
  free_at_check_ = free_bytes;
  written_since_check_ = 0;  // what is accepted but not written yet still counts against it
  for (const auto& slot : queues_) written_since_check_ += slot.q->unwritten_bytes();
  const bool low = free_bytes < options_.min_free_bytes;
  if (low && !low_disk_)
    logger().warn("free space in {} is {} bytes, under --min-free-mb: producers are refused (disk_full)",
                  options_.data_dir.string(), free_bytes);
  if (!low && low_disk_)
    logger().info("free space in {} is back to {} bytes: accepting messages again",
                  options_.data_dir.string(), free_bytes);
  low_disk_ = low;
}

}  // namespace ferry::ferryd
