#include "queue.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cstring>

#include "detail/log.hpp"
#include "detail/wire.hpp"
#include "ferry/envelope.hpp"
#include "ferry/error.hpp"
#include "ferry/message.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;

namespace {
constexpr std::uint64_t journal_compact_bytes = 16ull << 20;
}  // namespace

queue::queue(std::string name, std::uint32_t index, fs::path dir, queue_config config,
             std::uint64_t token_prefix, queue_kind kind)
    : name_(std::move(name)),
      index_(index),
      dir_(std::move(dir)),
      config_(config),
      kind_(kind),
      stream_(std::make_shared<storage::stream>(
          dir_, storage::stream_config{.segment_bytes = config_.segment_bytes,
                                       .dedup = config_.dedup,
                                       .dedup_retain_bytes = config_.dedup_retain_bytes})),
      store_(dir_ / "journal"),
      cursor_(stream_->log()),
      token_prefix_(token_prefix) {
  if (kind_ == queue_kind::topic) origin_ = storage::key_hash("topic:" + name_);
}

queue::queue(std::string name, std::uint32_t index, queue& topic, fs::path journal_file, queue_config config,
             std::uint64_t token_prefix)
    : name_(std::move(name)),
      index_(index),
      dir_(journal_file.parent_path()),
      config_(config),
      kind_(queue_kind::subscription),
      stream_(topic.stream_),
      store_(std::move(journal_file)),
      topic_(&topic),
      cursor_(stream_->log()),
      token_prefix_(token_prefix) {}

void queue::attach(queue& sub) {
  subscriptions_.push_back(&sub);
}

void queue::detach(queue& sub) {
  std::erase(subscriptions_, &sub);
}

void queue::ensure_on_disk() {
  if (stream_->on_disk()) return;
  stream_->create_on_disk();
  if (kind_ == queue_kind::queue) store_.open();
}

void queue::start_at(std::uint64_t first_seq) {
  storage::create_directories_durably(dir_);
  store_.start_at(first_seq, stream_->log().segments());
  position_cursor();
}

void queue::position_cursor() {
  // Read from the oldest segment holding unsettled messages (or the end of the newest one).
  const auto& segs = stream_->log().segments();
  if (segs.empty()) return;
  const auto& last = segs.rbegin()->second;
  cursor_.seek(last.base, last.committed);
  if (const std::uint64_t first = store_.first_unsettled_segment(); first != 0) cursor_.seek(first, 0);
}

std::uint64_t queue::first_retained() const noexcept {
  for (const auto& [base, seg] : stream_->log().segments())
    if (seg.records > 0) return std::max(base, seg.last_seq + 1 - seg.records);
  return stream_->committed_through() + 1;
}

std::uint64_t queue::stream_messages() const noexcept {
  std::uint64_t n = 0;
  for (const auto& [base, seg] : stream_->log().segments()) n += seg.records;
  return n;
}

std::size_t queue::fetch(std::uint64_t from, std::size_t max_count, std::size_t max_bytes,
                         std::string& entries, std::uint64_t& next) const {
  next = std::max(from, first_retained());
  if (next > stream_->committed_through() || max_count == 0) return 0;
  const auto& segments = stream_->log().segments();
  auto it = segments.upper_bound(next);  // the segment holding `next`: the last one based at or before it
  if (it == segments.begin()) return 0;
  --it;
  storage::log_cursor c(stream_->log());
  c.seek(it->first, 0);
  storage::log_cursor::entry e;
  std::size_t n = 0;
  std::size_t bytes = 0;
  while (n < max_count && c.peek(e)) {
    if (e.record.seq >= next) {
      const std::size_t size = detail::block_entry_size(e.record.envelope.size(), e.record.payload.size());
      if (n > 0 && bytes + size > max_bytes) break;
      const std::size_t at = entries.size();
      entries.resize(at + size);
      detail::write_block_entry(entries.data() + at, e.record.envelope, e.record.payload);
      bytes += size;
      ++n;
      next = e.record.seq + 1;
    }
    c.advance();
  }
  return n;
}

std::uint64_t queue::first_seq_at(std::int64_t time_us) const {
  for (const auto& [base, seg] : stream_->log().segments()) {
    if (seg.records == 0 || seg.last_stored_at_us < time_us) continue;
    storage::log_cursor c(stream_->log());
    c.seek(base, 0);
    storage::log_cursor::entry e;
    while (c.peek(e)) {
      if (e.record.stored_at_us >= time_us) return e.record.seq;
      c.advance();
    }
    return seg.last_seq;
  }
  return stream_->committed_through() + 1;
}

void queue::recover(recovery_report& log_report, recovery_report& journal_report) {
  // A subscription is recovered by its topic, which owns the stream.
  if (kind_ == queue_kind::subscription) return;
  // A queue that was only consumed from or asked about has no directory: nothing to recover, nothing
  // left behind by a typo.
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return;
  if (kind_ == queue_kind::topic) {
    // Each subscription's journal was replayed (replay_journal); the log scan tells each of them what is
    // stored, and each positions its own cursor.
    stream_->recover(log_report, unix_now_us(), [&](const message_record& rec, const record_location& where) {
      for (queue* sub : subscriptions_) sub->store_.recovered(rec, where);
    });
    for (queue* sub : subscriptions_) {
      stream_->continue_at(sub->store_.finish_recovery(stream_->next_seq()));
      sub->position_cursor();
    }
    return;
  }
  // The journal first: the log scan needs to know what is settled.
  store_.replay(journal_report);
  stream_->recover(log_report, unix_now_us(), [&](const message_record& rec, const record_location& where) {
    store_.recovered(rec, where);
  });
  stream_->continue_at(store_.finish_recovery(stream_->next_seq()));
  position_cursor();
}

// ---- producing ------------------------------------------------------------------------------------------

bool queue::full(std::size_t n) const noexcept {
  return config_.max_messages != 0 && store_.unsettled() + stream_->unwritten() + n > config_.max_messages;
}

std::uint64_t queue::append(const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                            std::string_view payload, std::int64_t stored_at_us, std::uint8_t flags) {
  ensure_on_disk();
  return stream_->append(id, key_hash, envelope, payload, stored_at_us, flags);
}

void queue::committed(const segment_writer::outcome& out) {
  stream_->committed(out);
  if (kind_ == queue_kind::topic) {
    for (queue* sub : subscriptions_)
      for (const auto& u : out.segments) sub->store_.stored(u.base, u.records, u.last_seq);
    return;
  }
  for (const auto& u : out.segments) store_.stored(u.base, u.records, u.last_seq);
}

void queue::append_failed(const message_id& id, std::uint64_t seq) {
  stream_->forget(id);
  if (kind_ == queue_kind::topic) {
    for (queue* sub : subscriptions_) sub->store_.skip(seq);
    return;
  }
  store_.skip(seq);
}

// ---- settlement -----------------------------------------------------------------------------------------

void queue::settle(std::uint64_t seq, std::uint64_t segment, settle_reason reason) {
  store_.settle(seq, segment, reason);
  last_error_.erase(seq);
}

// The journal always gets the count; the store's recovered counts only matter for messages the delivery
// structures do not hold (recovered ahead of the cursor), which the cursor reads back from there.
void queue::record_attempts(std::uint64_t seq, std::uint32_t attempts) {
  store_.record_attempts(seq, attempts);
}

// ---- consuming ------------------------------------------------------------------------------------------

subscription& queue::subscribe(const std::string& identity, std::uint32_t prefetch, std::uint32_t version) {
  auto& slot = subs_[identity];
  if (!slot) {
    slot = std::make_unique<subscription>();
    slot->identity = identity;
  }
  slot->prefetch = std::max<std::uint32_t>(1, prefetch);
  slot->version = version;
  return *slot;
}

void queue::unsubscribe(const std::string& identity, bool penalty) {
  const auto it = subs_.find(identity);
  if (it == subs_.end()) return;
  subscription& sub = *it->second;
  // Its deliveries, in seq order so they go back in the order they left.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> held;  // seq, token
  for (const auto& [token, d] : in_flight_)
    if (d.sub == &sub) held.emplace_back(d.msg.seq, token);
  std::sort(held.begin(), held.end());
  const auto now = steady::now();
  for (const auto& [seq, token] : held) {
    const auto d = in_flight_.find(token);
    waiting w = d->second.msg;
    in_flight_.erase(d);
    if (!penalty && w.attempts > 0) {
      --w.attempts;  // handed back untouched: this delivery does not count
      record_attempts(w.seq, w.attempts);
      return_to_ready(w);
    } else {
      last_error_[w.seq] = "consumer went away (heartbeat timeout)";
      return_after_failure(w, std::nullopt, !config_.backoff_nack_only, now);
    }
  }
  subs_.erase(it);
}

void queue::return_to_ready(waiting w) {
  if (w.attempts >= config_.max_attempts) {
    // No attempt left: dead-letter it now rather than when a consumer next has credit. Its key stays busy.
    if (w.key_hash != 0) keys_[w.key_hash].busy = true;
    dead_lettering_[w.seq] = w;
    const auto e = last_error_.find(w.seq);
    dead_letters_.push_back({w.seq, w.where, w.attempts,
                             fmt::format("{} attempts failed; last error: {}", w.attempts,
                                         e == last_error_.end() ? "unknown" : e->second)});
    return;
  }
  if (w.key_hash != 0) {
    auto& ks = keys_[w.key_hash];
    ks.busy = false;
    ++ks.ready;
  }
  ready_[w.seq] = w;
}

void queue::return_after_failure(waiting w, std::optional<std::chrono::milliseconds> delay, bool scheduled,
                                 steady::time_point now) {
  if (!delay && scheduled && !config_.backoff.empty() && w.attempts > 0)
    delay = config_.backoff[std::min<std::size_t>(w.attempts, config_.backoff.size()) - 1];
  // No attempt left, or no delay: at once (return_to_ready dead-letters what has no attempt left).
  if (!delay || delay->count() <= 0 || w.attempts >= config_.max_attempts) return return_to_ready(w);
  if (w.key_hash != 0) keys_[w.key_hash].busy = true;  // it was in flight: its key stays taken
  delayed_.emplace(now + *delay, w);
}

void queue::release_due(steady::time_point now) {
  while (!delayed_.empty() && delayed_.begin()->first <= now) {
    const waiting w = delayed_.begin()->second;
    delayed_.erase(delayed_.begin());
    return_to_ready(w);
  }
}

void queue::release_key(std::uint64_t key_hash) {
  if (key_hash == 0) return;
  const auto it = keys_.find(key_hash);
  if (it == keys_.end()) return;
  key_state& ks = it->second;
  ks.busy = false;
  if (ks.ready == 0 && !ks.parked.empty()) {
    const waiting next = ks.parked.front();
    ks.parked.pop_front();
    --parked_total_;
    ready_[next.seq] = next;
    ++ks.ready;
  }
  if (!ks.busy && ks.ready == 0 && ks.parked.empty()) keys_.erase(it);
}

queue::answer queue::ack(const std::string& identity, std::uint64_t token) {
  const auto s = subs_.find(identity);
  if (s == subs_.end()) return answer::unknown;
  subscription& sub = *s->second;
  const auto d = in_flight_.find(token);
  if (d != in_flight_.end() && d->second.sub == &sub) {
    const waiting w = d->second.msg;
    in_flight_.erase(d);
    --sub.unacked;
    settle(w.seq, w.where.segment, settle_reason::acked);
    ++counters_.acked;
    release_key(w.key_hash);
    return answer::settled;
  }
  if (sub.expired.erase(token) != 0) {
    --sub.unacked;
    ++counters_.stale_acks;
    return answer::stale;
  }
  ++counters_.stale_acks;
  return answer::unknown;
}

queue::answer queue::nack(const std::string& identity, std::uint64_t token, std::string reason,
                          std::optional<std::chrono::milliseconds> delay) {
  const auto s = subs_.find(identity);
  if (s == subs_.end()) return answer::unknown;
  subscription& sub = *s->second;
  const auto d = in_flight_.find(token);
  if (d != in_flight_.end() && d->second.sub == &sub) {
    const waiting w = d->second.msg;
    in_flight_.erase(d);
    --sub.unacked;
    last_error_[w.seq] = std::move(reason);
    ++counters_.nacked;
    return_after_failure(w, delay, true, steady::now());
    return answer::settled;
  }
  if (sub.expired.erase(token) != 0) {
    --sub.unacked;
    ++counters_.stale_acks;
    return answer::stale;
  }
  ++counters_.stale_acks;
  return answer::unknown;
}

queue::answer queue::reject(const std::string& identity, std::uint64_t token, std::string reason) {
  const auto s = subs_.find(identity);
  if (s == subs_.end()) return answer::unknown;
  subscription& sub = *s->second;
  const auto d = in_flight_.find(token);
  if (d != in_flight_.end() && d->second.sub == &sub) {
    const waiting w = d->second.msg;
    in_flight_.erase(d);
    --sub.unacked;
    dead_lettering_[w.seq] = w;  // the key stays busy until the dead-letter copy is durable
    dead_letters_.push_back({w.seq, w.where, w.attempts, "rejected by the handler: " + reason});
    ++counters_.rejected;
    return answer::settled;
  }
  if (sub.expired.erase(token) != 0) {
    --sub.unacked;
    ++counters_.stale_acks;
    return answer::stale;
  }
  ++counters_.stale_acks;
  return answer::unknown;
}

queue::answer queue::extend(const std::string& identity, std::uint64_t token, std::chrono::milliseconds by,
                            steady::time_point now) {
  const auto s = subs_.find(identity);
  if (s == subs_.end()) return answer::unknown;
  const auto d = in_flight_.find(token);
  if (d == in_flight_.end() || d->second.sub != s->second.get()) {
    // Its lease expired already (the message went back to the queue), or not this connection's. Not a
    // stale ack: the consumer's answer for it comes later and is counted then.
    return answer::stale;
  }
  delivery& del = d->second;
  const auto deadline = std::min(now + by, del.limit);
  if (deadline > del.deadline) {
    del.deadline = deadline;
    leases_.emplace(deadline, token);  // the earlier entry is skipped: its deadline no longer matches
  }
  ++counters_.extended;
  return answer::settled;
}

void queue::expire_leases(steady::time_point now) {
  while (!leases_.empty() && leases_.top().first <= now) {
    const auto [deadline, token] = leases_.top();
    leases_.pop();
    const auto d = in_flight_.find(token);
    if (d == in_flight_.end() || d->second.deadline != deadline) continue;
    const waiting w = d->second.msg;
    subscription* sub = d->second.sub;
    in_flight_.erase(d);
    sub->expired.insert(token);  // its credit stays taken until the consumer answers
    last_error_[w.seq] = fmt::format("lease of {} ms expired", config_.lease.count());
    ++counters_.expired;
    return_after_failure(w, std::nullopt, !config_.backoff_nack_only, now);
  }
}

void queue::extend_leases(steady::duration by) {
  decltype(leases_) moved;
  while (!leases_.empty()) {
    auto [deadline, token] = leases_.top();
    leases_.pop();
    moved.emplace(deadline + by, token);
  }
  leases_ = std::move(moved);
  for (auto& [token, d] : in_flight_) {
    d.deadline += by;
    d.limit += by;
  }
}

subscription* queue::best_subscription() {
  subscription* best = nullptr;
  std::uint32_t best_credit = 0;
  // Most free credit wins; the rotating start breaks ties fairly.
  const std::size_t n = subs_.size();
  if (n == 0) return nullptr;
  std::size_t i = 0;
  const std::size_t start = static_cast<std::size_t>(rr_++ % n);
  auto it = subs_.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(start));
  for (; i < n; ++i, ++it) {
    if (it == subs_.end()) it = subs_.begin();
    const std::uint32_t c = it->second->credit();
    if (c > best_credit) {
      best_credit = c;
      best = it->second.get();
    }
  }
  return best;
}

bool queue::peek(peeked& out) {
  storage::log_cursor::entry e;
  while (cursor_.peek(e)) {
    if (store_.settled(e.record.seq)) {  // settled before a restart: skip
      cursor_.advance();
      continue;
    }
    out.msg.seq = e.record.seq;
    out.msg.where = e.where;
    out.msg.attempts = store_.recovered_attempts(e.record.seq);
    out.msg.key_hash = e.record.key_hash;
    out.stored_at_us = e.record.stored_at_us;
    out.flags = e.record.flags;
    out.envelope = e.record.envelope;
    out.payload = e.record.payload;
    return true;
  }
  return false;
}

void queue::advance(const peeked&) {
  cursor_.advance();
}

bool queue::has_work() const noexcept {
  return !ready_.empty() || cursor_.has_more();
}

void queue::deliver(subscription& sub, const waiting& msg, std::string_view envelope,
                    std::string_view payload, steady::time_point now) {
  const std::uint64_t token = token_prefix_ | (next_token_++ & ((std::uint64_t{1} << 40) - 1));
  waiting w = msg;
  ++w.attempts;
  record_attempts(w.seq, w.attempts);
  if (w.attempts > 1) ++counters_.redelivered;
  ++counters_.delivered;
  char t[8];
  for (int i = 0; i < 8; ++i) t[i] = static_cast<char>(token >> (8 * (7 - i)));
  sub.out_tokens.append(t, 8);
  subscription::entry_span span;
  span.begin = sub.out_entries.size();
  span.envelope = envelope.size();
  span.payload = payload.size();
  sub.out_entries.resize(span.begin + detail::block_entry_size(envelope.size(), payload.size()));
  char* at = sub.out_entries.data() + span.begin;
  char* end = detail::write_block_entry(at, envelope, payload);
  patch_envelope_attempt(at, envelope.size(), w.attempts);
  span.end = static_cast<std::size_t>(end - sub.out_entries.data());
  span.payload_at = span.end - payload.size();
  sub.out_spans.push_back(span);
  const auto deadline = now + config_.lease;
  in_flight_.emplace(token, delivery{w, &sub, deadline, now + std::max(config_.lease, config_.max_lease)});
  leases_.emplace(deadline, token);
  ++sub.unacked;
  if (w.key_hash != 0) keys_[w.key_hash].busy = true;
}

std::size_t queue::dispatch(steady::time_point now) {
  std::size_t delivered = 0;
  peeked pk;
  for (;;) {
    subscription* sub = best_subscription();
    if (sub == nullptr) break;
    const bool have_cursor = peek(pk);
    const bool have_ready = !ready_.empty();
    if (!have_cursor && !have_ready) break;
    if (have_ready && (!have_cursor || ready_.begin()->first < pk.msg.seq)) {
      const waiting w = ready_.begin()->second;
      ready_.erase(ready_.begin());
      if (w.key_hash != 0) {
        auto& ks = keys_[w.key_hash];
        if (ks.ready > 0) --ks.ready;
        ks.busy = true;
      }
      if (w.attempts >= config_.max_attempts) {
        dead_lettering_[w.seq] = w;
        const auto e = last_error_.find(w.seq);
        dead_letters_.push_back({w.seq, w.where, w.attempts,
                                 fmt::format("{} attempts failed; last error: {}", w.attempts,
                                             e == last_error_.end() ? "unknown" : e->second)});
        continue;
      }
      message_record rec;
      if (!stream_->log().read(w.where, read_buffer_, rec)) {
        // The stored copy is unreadable (damaged after start-up): nothing can be delivered; say so.
        detail::logger().error("queue {}: message seq {} cannot be read back; it is dropped", name_, w.seq);
        settle(w.seq, w.where.segment, settle_reason::purged);
        release_key(w.key_hash);
        continue;
      }
      if (const auto t = timing_of(rec.stored_at_us, rec.flags, rec.envelope); t.expired) {
        expire(w, *t.expired);
        continue;
      }
      deliver(*sub, w, rec.envelope, rec.payload, now);
      ++delivered;
      continue;
    }
    waiting w = pk.msg;
    if (w.key_hash != 0) {
      auto it = keys_.find(w.key_hash);
      if (it != keys_.end() && (it->second.busy || it->second.ready > 0 || !it->second.parked.empty())) {
        if (parked_total_ >= config_.max_parked) break;  // head-of-line: wait for keys to free up
        it->second.parked.push_back(w);
        ++parked_total_;
        advance(pk);
        continue;
      }
    }
    if (w.attempts >= config_.max_attempts) {
      advance(pk);
      if (w.key_hash != 0) keys_[w.key_hash].busy = true;
      dead_lettering_[w.seq] = w;
      dead_letters_.push_back(
          {w.seq, w.where, w.attempts, fmt::format("{} attempts failed before a restart", w.attempts)});
      continue;
    }
    if (const auto t = timing_of(pk.stored_at_us, pk.flags, pk.envelope); t.expired || t.not_before_ms != 0) {
      const std::int64_t wait_us = t.not_before_ms * 1000 - unix_now_us();
      if (t.expired || wait_us > 0) {
        advance(pk);
        if (w.key_hash != 0) keys_[w.key_hash].busy = true;  // a later message of its key waits for it
        if (t.expired) {
          expire(w, *t.expired);
        } else {
          // Held back until its time, in memory; after a restart the log is read again and so is its time.
          // Both clocks read afresh (one dispatch may read a long run of records after its `now`), the
          // wall clock first, so the deadline errs late, never early.
          const std::int64_t left_us = t.not_before_ms * 1000 - unix_now_us();
          delayed_.emplace(steady::now() + std::chrono::microseconds(left_us), w);
        }
        continue;
      }
    }
    deliver(*sub, w, pk.envelope, pk.payload, now);
    advance(pk);
    ++delivered;
  }
  return delivered;
}

// ---- expiry ---------------------------------------------------------------------------------------------

queue::timing queue::timing_of(std::int64_t stored_at_us, std::uint8_t flags,
                               std::string_view envelope) const {
  timing t;
  std::chrono::milliseconds ttl = config_.message_ttl;
  if ((flags & (storage::record_flag_ttl | storage::record_flag_not_before)) != 0) {
    message m;
    if (decode_envelope(envelope, m) == decode_error::none) {
      if (const auto own = m.ttl()) ttl = *own;
      if ((flags & storage::record_flag_not_before) != 0) t.not_before_ms = m.not_before_ms().value_or(0);
    }
  }
  if (ttl.count() > 0 &&
      unix_now_us() - stored_at_us >= std::chrono::duration_cast<std::chrono::microseconds>(ttl).count())
    t.expired = ttl;
  return t;
}

void queue::expire(const waiting& w, std::chrono::milliseconds ttl) {
  ++counters_.ttl_expired;
  if (config_.drop_expired) {
    settle(w.seq, w.where.segment, settle_reason::expired);
    release_key(w.key_hash);
    return;
  }
  dead_lettering_[w.seq] = w;  // the key stays busy until the dead-letter copy is durable
  dead_letters_.push_back(
      {w.seq, w.where, w.attempts, fmt::format("expired: its time to live of {} ms passed", ttl.count())});
}

// ---- dead letters ---------------------------------------------------------------------------------------

void queue::dead_lettered(std::uint64_t seq) {
  const auto it = dead_lettering_.find(seq);
  if (it == dead_lettering_.end()) return;
  const std::uint64_t key = it->second.key_hash;
  const std::uint64_t segment = it->second.where.segment;
  dead_lettering_.erase(it);
  settle(seq, segment, settle_reason::dead_lettered);
  ++counters_.dead_lettered;
  release_key(key);
}

void queue::dead_letter_failed(dead_letter_request req, std::chrono::milliseconds delay) {
  req.not_before = steady::now() + delay;
  dead_letters_.push_back(std::move(req));
}

std::vector<queue::listed> queue::list(std::size_t limit, std::uint64_t from, std::uint64_t before) const {
  // The `limit` lowest of each source, then the `limit` lowest of them all.
  std::vector<listed> out;
  const auto wanted = [&](std::uint64_t seq) { return seq >= from && seq < before; };
  for (auto r = ready_.lower_bound(from); r != ready_.end() && r->first < before && out.size() < limit; ++r)
    out.push_back({r->first, r->second.where});
  for (const auto& [due, w] : delayed_)
    if (wanted(w.seq)) out.push_back({w.seq, w.where});
  for (const auto& [key, ks] : keys_)
    for (const auto& w : ks.parked)
      if (wanted(w.seq)) out.push_back({w.seq, w.where});
  // Then what the cursor has not reached, read by a cursor of its own, from the segment holding `from`
  // when that lies beyond the cursor's.
  storage::log_cursor ahead(stream_->log());
  ahead.seek(cursor_.segment(), cursor_.offset());
  const auto& segs = stream_->log().segments();
  if (auto s = segs.upper_bound(from); s != segs.begin() && std::prev(s)->first > cursor_.segment())
    ahead.seek(std::prev(s)->first, 0);
  const std::size_t before_scan = out.size();
  storage::log_cursor::entry e;
  while (out.size() - before_scan < limit && ahead.peek(e) && e.record.seq < before) {
    if (e.record.seq >= from && !store_.settled(e.record.seq)) out.push_back({e.record.seq, e.where});
    ahead.advance();
  }
  std::sort(out.begin(), out.end(), [](const listed& a, const listed& b) { return a.seq < b.seq; });
  if (out.size() > limit) out.resize(limit);
  return out;
}

bool queue::settle_waiting(std::uint64_t seq, settle_reason reason) {
  if (store_.settled(seq) || seq >= stream_->next_seq()) return false;
  for (const auto& [token, d] : in_flight_)
    if (d.msg.seq == seq) return false;
  if (dead_lettering_.count(seq) != 0) return false;
  if (const auto r = ready_.find(seq); r != ready_.end()) {
    const waiting w = r->second;
    ready_.erase(r);
    if (w.key_hash != 0) {
      auto& ks = keys_[w.key_hash];
      if (ks.ready > 0) --ks.ready;
    }
    settle(seq, w.where.segment, reason);
    release_key(w.key_hash);
    return true;
  }
  for (auto d = delayed_.begin(); d != delayed_.end(); ++d) {
    if (d->second.seq != seq) continue;
    const waiting w = d->second;
    delayed_.erase(d);
    settle(seq, w.where.segment, reason);
    release_key(w.key_hash);
    return true;
  }
  for (auto& [key, ks] : keys_) {
    const auto p =
        std::find_if(ks.parked.begin(), ks.parked.end(), [&](const waiting& w) { return w.seq == seq; });
    if (p != ks.parked.end()) {
      const std::uint64_t segment = p->where.segment;
      ks.parked.erase(p);
      --parked_total_;
      settle(seq, segment, reason);
      return true;
    }
  }
  // Not reached by the cursor yet: it will skip it.
  const segment_info* seg = stream_->log().segment_for(seq);
  settle(seq, seg != nullptr ? seg->base : 0, reason);
  return true;
}

// ---- housekeeping ---------------------------------------------------------------------------------------

void queue::housekeeping(std::int64_t now_us) {
  if (kind_ == queue_kind::topic) return retain(now_us);
  // Settled segments behind the cursor go (recent ones are kept a while for the dedup window). A
  // subscription's segments belong to its topic, whose retention removes them.
  if (kind_ == queue_kind::queue)
    stream_->remove_segments(now_us, [&](const segment_info& s) {
      return s.base < cursor_.segment() && store_.unsettled_in(s.base) == 0;
    });
  store_.compact(journal_compact_bytes, [&](const auto& emit) {
    for (const auto& [token, d] : in_flight_) emit(d.msg.seq, d.msg.attempts);
    for (const auto& [seq, w] : ready_) emit(w.seq, w.attempts);
    for (const auto& [due, w] : delayed_) emit(w.seq, w.attempts);
    for (const auto& [seq, w] : dead_lettering_) emit(w.seq, w.attempts);
    for (const auto& [key, ks] : keys_)
      for (const auto& w : ks.parked) emit(w.seq, w.attempts);
  });
}

void queue::retain(std::int64_t now_us) {
  const auto& segs = stream_->log().segments();
  std::uint64_t bytes = 0, messages = 0;
  for (const auto& [base, seg] : segs) {
    bytes += seg.committed;
    messages += seg.records;
  }
  const std::int64_t max_age_us =
      std::chrono::duration_cast<std::chrono::microseconds>(config_.retain_age).count();
  while (segs.size() > 1) {
    const segment_info& oldest = segs.begin()->second;
    const bool too_old =
        max_age_us > 0 && storage::stored_age_us(now_us, oldest.last_stored_at_us) > max_age_us;
    // By size and count, a segment goes only when what remains still holds the limit (as Kafka does): the
    // topic keeps at least retain_bytes / retain_messages, and less than a segment more.
    const bool too_big = config_.retain_bytes > 0 && bytes - oldest.committed >= config_.retain_bytes;
    const bool too_many = config_.retain_messages > 0 && messages - oldest.records >= config_.retain_messages;
    if (!too_old && !too_big && !too_many) break;
    const std::uint64_t base = oldest.base, last = oldest.last_seq;
    bytes -= oldest.committed;
    messages -= oldest.records;
    for (queue* sub : subscriptions_) sub->skip_through(last, base);
    stream_->remove_segment(base);
  }
}

void queue::skip_through(std::uint64_t last_seq, std::uint64_t base) {
  if (const std::uint64_t n = store_.skip_before(base, last_seq + 1); n > 0) {
    counters_.retention_skipped += n;
    skipped_unseen_ += n;
    detail::logger().warn(
        "subscription {}: retention deleted {} message(s) it had not settled (through seq {}); it goes on "
        "with the oldest retained message",
        name_, n, last_seq);
  }
  std::erase_if(ready_, [&](const auto& kv) { return kv.first <= last_seq; });
  for (auto it = keys_.begin(); it != keys_.end();) {
    auto& ks = it->second;
    const auto before = ks.parked.size();
    std::erase_if(ks.parked, [&](const waiting& w) { return w.seq <= last_seq; });
    parked_total_ -= before - ks.parked.size();
    ks.ready = 0;
    for (const auto& [seq, w] : ready_)
      if (w.key_hash == it->first) ++ks.ready;
    it = (!ks.busy && ks.ready == 0 && ks.parked.empty()) ? keys_.erase(it) : std::next(it);
  }
  // Dead letters of deleted messages cannot be moved any more: they are gone with the rest.
  for (auto it = dead_lettering_.begin(); it != dead_lettering_.end();) {
    if (it->first > last_seq) {
      ++it;
      continue;
    }
    release_key(it->second.key_hash);
    it = dead_lettering_.erase(it);
  }
  std::erase_if(dead_letters_, [&](const dead_letter_request& r) { return r.seq <= last_seq; });
  for (auto it = delayed_.begin(); it != delayed_.end();) {
    if (it->second.seq > last_seq) {
      ++it;
      continue;
    }
    release_key(it->second.key_hash);
    it = delayed_.erase(it);
  }
  // Deliveries of deleted messages: their tokens become stale (the answer still frees the credit).
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    if (it->second.msg.seq > last_seq) {
      ++it;
      continue;
    }
    it->second.sub->expired.insert(it->first);
    release_key(it->second.msg.key_hash);
    it = in_flight_.erase(it);
  }
  if (cursor_.segment() <= base) {
    const auto& segs = stream_->log().segments();
    const auto next = segs.upper_bound(base);
    if (next != segs.end()) cursor_.seek(next->first, 0);
  }
}

}  // namespace ferry::ferryd
