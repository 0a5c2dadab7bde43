#include "queue.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cstring>

#include "detail/log.hpp"
#include "ferry/envelope.hpp"
#include "ferry/error.hpp"
#include "ferry/message.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;

namespace {
constexpr std::size_t read_ahead = 1 << 20;
constexpr std::uint64_t journal_compact_bytes = 16ull << 20;
}  // namespace

queue::queue(std::string name, std::uint32_t index, fs::path dir, queue_config config,
             std::uint64_t token_prefix)
    : name_(std::move(name)),
      index_(index),
      dir_(std::move(dir)),
      config_(config),
      log_(dir_),
      journal_(dir_ / "journal"),
      writer_(std::make_shared<segment_writer>(dir_, config_.segment_bytes)),
      dedup_(config_.dedup),
      low_watermark_(1),
      token_prefix_(token_prefix) {}

void queue::create_on_disk() {
  if (on_disk_) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw error(fmt::format("cannot create queue directory {}: {}", dir_.string(), ec.message()));
  sync_directory(dir_.parent_path());
  recovery_report ignored;
  journal_.recover(ignored, [](const journal_record&) {});
  on_disk_ = true;
}

void queue::recover(recovery_report& log_report, recovery_report& journal_report) {
  // A queue that was only consumed from or asked about has no directory: nothing to recover, nothing
  // left behind by a typo.
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return;
  on_disk_ = true;

  // The journal first: the log scan needs to know what is settled.
  std::uint64_t watermark = 1;
  journal_.recover(journal_report, [&](const journal_record& r) {
    switch (r.type) {
      case record_type::watermark:
        watermark = std::max(watermark, r.seq);
        break;
      case record_type::settle:
        settled_.insert(r.seq);
        attempts_.erase(r.seq);
        break;
      case record_type::attempts:
        attempts_[r.seq] = r.value;
        break;
      default:
        break;
    }
  });

  const std::int64_t now_us = unix_now_us();
  const auto now = steady::now();
  const std::int64_t window_us =
      std::chrono::duration_cast<std::chrono::microseconds>(config_.dedup.max_age).count();
  std::uint64_t lowest_unsettled = 0;
  std::uint64_t last_seq = 0;
  std::vector<std::uint64_t> gaps;
  log_.recover(log_report, [&](const message_record& rec, const record_location&) {
    // Sequence numbers are dense: a missing one was never durable or was lost to damage; it counts as
    // settled.
    if (last_seq != 0)
      for (std::uint64_t s = last_seq + 1; s < rec.seq && gaps.size() < 10'000'000; ++s) gaps.push_back(s);
    last_seq = rec.seq;
    next_seq_ = std::max(next_seq_, rec.seq + 1);
    if (now_us - rec.stored_at_us < window_us)
      dedup_.check_and_insert(rec.id, now - std::chrono::microseconds(now_us - rec.stored_at_us), rec.seq);
    if (rec.seq < watermark || settled_.count(rec.seq) != 0) return false;
    ++unsettled_;
    if (lowest_unsettled == 0) lowest_unsettled = rec.seq;
    return true;
  });
  // Never hand out a sequence number the journal already settled (the log keeps its newest segment, so
  // this only matters if that was lost).
  next_seq_ = std::max(next_seq_, watermark);
  if (!settled_.empty()) next_seq_ = std::max(next_seq_, *settled_.rbegin() + 1);
  low_watermark_ = lowest_unsettled != 0 ? lowest_unsettled : next_seq_;
  committed_through_ = next_seq_ - 1;
  for (const std::uint64_t s : gaps)
    if (s > low_watermark_) settled_.insert(s);
  std::erase_if(settled_, [&](std::uint64_t s) { return s < low_watermark_; });
  std::erase_if(attempts_,
                [&](const auto& kv) { return kv.first < low_watermark_ || settled_.count(kv.first); });

  // Resume appending to the newest segment; read from the oldest one holding unsettled messages.
  auto& segs = log_.segments();
  if (!segs.empty()) {
    const auto& last = segs.rbegin()->second;
    writer_->resume(last.base, last.committed);
    cursor_.segment = segs.rbegin()->first;
    cursor_.offset = last.committed;
    for (const auto& [base, seg] : segs) {
      if (seg.unsettled > 0) {
        cursor_.segment = base;
        cursor_.offset = 0;
        break;
      }
    }
  }
}

// ---- producing ------------------------------------------------------------------------------------------

std::optional<std::uint64_t> queue::admit(const message_id& id, steady::time_point now) {
  std::uint64_t first = 0;
  if (dedup_.check_and_insert(id, now, next_seq_, &first)) return first;
  return std::nullopt;
}

bool queue::full(std::size_t n) const noexcept {
  return config_.max_messages != 0 &&
         unsettled_ + pending_count_ + committing_count_ + n > config_.max_messages;
}

std::uint64_t queue::append(const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                            std::string_view payload, std::int64_t stored_at_us) {
  create_on_disk();
  const std::uint64_t seq = next_seq_++;
  append_message_record(pending_, seq, stored_at_us, id, key_hash, envelope, payload);
  ++pending_count_;
  return seq;
}

std::string queue::take_pending() {
  committing_through_ = next_seq_ - 1;
  committing_count_ = pending_count_;
  pending_count_ = 0;
  std::string batch = std::move(pending_);
  pending_ = std::move(spare_);
  pending_.clear();
  spare_ = std::string();
  return batch;
}

void queue::committed(const segment_writer::outcome& out) {
  committing_count_ = 0;
  committed_through_ = committing_through_;
  for (const auto& u : out.segments) {
    log_.committed(u.base, u.committed, u.records, u.last_seq, u.last_stored_at_us);
    unsettled_ += u.records;
  }
}

void queue::append_failed(const message_id& id, std::uint64_t seq) {
  dedup_.erase(id);
  mark_gap(seq);
}

void queue::mark_gap(std::uint64_t seq) {
  // Settled seqs above the watermark wait in settled_ until everything below them is settled too.
  if (seq < low_watermark_) return;
  if (seq == low_watermark_) {
    ++low_watermark_;  // in order, the common case: nothing to remember
  } else {
    settled_.insert(seq);
  }
  while (!settled_.empty() && *settled_.begin() == low_watermark_) {
    settled_.erase(settled_.begin());
    ++low_watermark_;
  }
}

// ---- settlement -----------------------------------------------------------------------------------------

void queue::settle(std::uint64_t seq, settle_reason reason) {
  journal_.append({record_type::settle, static_cast<std::uint8_t>(reason), 0, seq});
  attempts_.erase(seq);
  last_error_.erase(seq);
  if (auto* seg = log_.segment_for(seq); seg != nullptr && seg->unsettled > 0) --seg->unsettled;
  if (unsettled_ > 0) --unsettled_;
  mark_gap(seq);
}

// The journal always gets the count; attempts_ only needs it for messages the delivery structures do not
// hold (recovered ahead of the cursor), which the cursor reads back from there.
void queue::record_attempts(std::uint64_t seq, std::uint32_t attempts) {
  journal_.append({record_type::attempts, 0, attempts, seq});
}

// ---- consuming ------------------------------------------------------------------------------------------

subscription& queue::subscribe(const std::string& identity, std::uint32_t prefetch) {
  auto& slot = subs_[identity];
  if (!slot) {
    slot = std::make_unique<subscription>();
    slot->identity = identity;
  }
  slot->prefetch = std::max<std::uint32_t>(1, prefetch);
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
  for (const auto& [seq, token] : held) {
    const auto d = in_flight_.find(token);
    waiting w = d->second.msg;
    in_flight_.erase(d);
    if (!penalty && w.attempts > 0) {
      --w.attempts;  // handed back untouched: this delivery does not count
      record_attempts(w.seq, w.attempts);
    } else {
      last_error_[w.seq] = "consumer went away (heartbeat timeout)";
    }
    return_to_ready(w);
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
    settle(w.seq, settle_reason::acked);
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

queue::answer queue::nack(const std::string& identity, std::uint64_t token, std::string reason) {
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
    return_to_ready(w);
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
    return_to_ready(w);
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
  auto& segs = log_.segments();
  if (segs.empty()) return false;
  if (cursor_.segment == 0 || segs.find(cursor_.segment) == segs.end()) {
    // First use, or the segment under the cursor was removed: start at the first segment still present.
    const auto first = segs.lower_bound(cursor_.segment);
    if (first == segs.end()) return false;
    cursor_ = cursor_state{};
    cursor_.segment = first->first;
  }
  for (;;) {
    if (cursor_.pos < cursor_.buffer.size()) {
      std::string_view body;
      std::size_t total = 0;
      const frame_status st =
          check_frame(cursor_.buffer.data() + cursor_.pos, cursor_.buffer.size() - cursor_.pos, body, total);
      if (st == frame_status::ok) {
        const auto rec = parse_message(body);
        if (rec && rec->seq >= low_watermark_ && settled_.count(rec->seq) == 0) {
          out.msg.seq = rec->seq;
          out.msg.where = {cursor_.segment, cursor_.offset + cursor_.pos, static_cast<std::uint32_t>(total)};
          const auto a = attempts_.find(rec->seq);
          out.msg.attempts = a == attempts_.end() ? 0 : a->second;
          out.msg.key_hash = rec->key_hash;
          out.envelope = rec->envelope;
          out.payload = rec->payload;
          out.total = total;
          return true;
        }
        cursor_.pos += total;  // settled before a restart, or not a message: skip
        continue;
      }
      // A frame that is damaged, or that claims to run past what is committed, is stepped over to the
      // next valid one (recovery reported the damage already; this also covers damage found later).
      bool damaged = st == frame_status::bad;
      if (st == frame_status::incomplete && cursor_.buffer.size() - cursor_.pos >= record_header_size) {
        std::uint32_t len = 0;
        std::memcpy(&len, cursor_.buffer.data() + cursor_.pos + 4, 4);
        damaged = cursor_.offset + cursor_.pos + record_header_size + len > segs[cursor_.segment].committed;
      }
      if (damaged) {
        const std::uint64_t at = cursor_.offset + cursor_.pos;
        const std::uint64_t next = log_.next_valid_frame(cursor_.segment, at);
        detail::logger().warn("queue {}: damaged record in segment {} at offset {}: {} bytes skipped", name_,
                              segment_file_name(cursor_.segment), at, next - at);
        cursor_.offset = next;
        cursor_.buffer.clear();
        cursor_.pos = 0;
        continue;
      }
    }
    // Refill from where parsing stopped.
    cursor_.offset += cursor_.pos;
    cursor_.buffer.erase(0, cursor_.pos);
    cursor_.pos = 0;
    const std::size_t got = log_.read_chunk(cursor_.segment, cursor_.offset + cursor_.buffer.size(),
                                            std::max(read_ahead, cursor_.buffer.size() + 64), cursor_.buffer);
    if (got > 0) continue;
    // Nothing more committed here: move on only when a newer segment exists (the writer moved on).
    const auto next = segs.upper_bound(cursor_.segment);
    if (next == segs.end()) return false;
    cursor_ = cursor_state{};
    cursor_.segment = next->first;
  }
}

void queue::advance(const peeked& p) {
  cursor_.pos += p.total;
}

bool queue::has_work() const noexcept {
  if (!ready_.empty()) return true;
  const auto& segs = log_.segments();
  if (segs.empty()) return false;
  const auto& last = *segs.rbegin();
  if (cursor_.segment < last.first) return true;
  return cursor_.offset + cursor_.pos < last.second.committed;
}

void queue::deliver(subscription& sub, const waiting& msg, std::string_view envelope,
                    std::string_view payload, steady::time_point now) {
  const std::uint64_t token = token_prefix_ | (next_token_++ & ((std::uint64_t{1} << 40) - 1));
  waiting w = msg;
  ++w.attempts;
  record_attempts(w.seq, w.attempts);
  if (w.attempts > 1) ++counters_.redelivered;
  ++counters_.delivered;
  zmq::message_t env(envelope.data(), envelope.size());
  patch_envelope_attempt(static_cast<char*>(env.data()), env.size(), w.attempts);
  char t[8];
  for (int i = 0; i < 8; ++i) t[i] = static_cast<char>(token >> (8 * (7 - i)));
  sub.out_tokens.append(t, 8);
  sub.out_frames.push_back(std::move(env));
  sub.out_frames.emplace_back(payload.data(), payload.size());
  const auto deadline = now + config_.lease;
  in_flight_.emplace(token, delivery{w, &sub, deadline});
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
      if (!log_.read(w.where, read_buffer_, rec)) {
        // The stored copy is unreadable (damaged after start-up): nothing can be delivered; say so.
        detail::logger().error("queue {}: message seq {} cannot be read back; it is dropped", name_, w.seq);
        settle(w.seq, settle_reason::purged);
        release_key(w.key_hash);
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
    deliver(*sub, w, pk.envelope, pk.payload, now);
    advance(pk);
    ++delivered;
  }
  return delivered;
}

// ---- dead letters ---------------------------------------------------------------------------------------

void queue::dead_lettered(std::uint64_t seq) {
  const auto it = dead_lettering_.find(seq);
  if (it == dead_lettering_.end()) return;
  const std::uint64_t key = it->second.key_hash;
  dead_lettering_.erase(it);
  settle(seq, settle_reason::dead_lettered);
  ++counters_.dead_lettered;
  release_key(key);
}

void queue::dead_letter_failed(dead_letter_request req, std::chrono::milliseconds delay) {
  req.not_before = steady::now() + delay;
  dead_letters_.push_back(std::move(req));
}

std::vector<queue::listed> queue::list(std::size_t limit) const {
  std::vector<listed> out;
  for (const auto& [seq, w] : ready_) out.push_back({seq, w.where});
  for (const auto& [key, ks] : keys_)
    for (const auto& w : ks.parked) out.push_back({w.seq, w.where});
  // Then what the cursor has not reached, read without moving it.
  const auto& segs = log_.segments();
  std::uint64_t segment = cursor_.segment;
  std::uint64_t offset = cursor_.offset + cursor_.pos;
  std::string buf;
  for (auto it = segs.lower_bound(segment); it != segs.end() && out.size() < limit + ready_.size(); ++it) {
    if (it->first != segment) offset = 0;
    while (offset < it->second.committed && out.size() < limit + ready_.size() + parked_total_) {
      buf.clear();
      if (log_.read_chunk(it->first, offset, read_ahead, buf) == 0) break;
      std::size_t pos = 0;
      std::string_view body;
      std::size_t total = 0;
      while (check_frame(buf.data() + pos, buf.size() - pos, body, total) == frame_status::ok) {
        if (auto r = parse_message(body); r && r->seq >= low_watermark_ && settled_.count(r->seq) == 0)
          out.push_back({r->seq, {it->first, offset + pos, static_cast<std::uint32_t>(total)}});
        pos += total;
      }
      if (pos == 0) break;
      offset += pos;
    }
  }
  std::sort(out.begin(), out.end(), [](const listed& a, const listed& b) { return a.seq < b.seq; });
  if (out.size() > limit) out.resize(limit);
  return out;
}

bool queue::settle_waiting(std::uint64_t seq, settle_reason reason) {
  if (seq < low_watermark_ || settled_.count(seq) != 0 || seq >= next_seq_) return false;
  for (const auto& [token, d] : in_flight_)
    if (d.msg.seq == seq) return false;
  if (dead_lettering_.count(seq) != 0) return false;
  if (const auto r = ready_.find(seq); r != ready_.end()) {
    const std::uint64_t key = r->second.key_hash;
    ready_.erase(r);
    if (key != 0) {
      auto& ks = keys_[key];
      if (ks.ready > 0) --ks.ready;
    }
    settle(seq, reason);
    release_key(key);
    return true;
  }
  for (auto& [key, ks] : keys_) {
    const auto p =
        std::find_if(ks.parked.begin(), ks.parked.end(), [&](const waiting& w) { return w.seq == seq; });
    if (p != ks.parked.end()) {
      ks.parked.erase(p);
      --parked_total_;
      settle(seq, reason);
      return true;
    }
  }
  settle(seq, reason);  // not reached by the cursor yet: it will skip it
  return true;
}

// ---- housekeeping ---------------------------------------------------------------------------------------

std::string queue::snapshot() const {
  std::string out;
  append_journal_record(out, {record_type::watermark, 0, 0, low_watermark_});
  for (const std::uint64_t s : settled_) append_journal_record(out, {record_type::settle, 0, 0, s});
  for (const auto& [seq, n] : attempts_) append_journal_record(out, {record_type::attempts, 0, n, seq});
  auto held = [&](const waiting& w) {
    if (w.attempts > 0) append_journal_record(out, {record_type::attempts, 0, w.attempts, w.seq});
  };
  for (const auto& [token, d] : in_flight_) held(d.msg);
  for (const auto& [seq, w] : ready_) held(w);
  for (const auto& [seq, w] : dead_lettering_) held(w);
  for (const auto& [key, ks] : keys_)
    for (const auto& w : ks.parked) held(w);
  return out;
}

void queue::housekeeping(std::int64_t now_us) {
  auto& segs = log_.segments();
  if (segs.size() > 1) {
    const std::int64_t window_us =
        std::chrono::duration_cast<std::chrono::microseconds>(config_.dedup.max_age).count();
    // Settled segments behind the cursor, newest first; the newest ones are kept a while so a restart can
    // rebuild the dedup window from them.
    std::vector<std::uint64_t> doomed;
    std::uint64_t kept_bytes = 0;
    const std::uint64_t active = segs.rbegin()->first;
    for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
      const segment_info& s = it->second;
      if (s.base == active || s.base >= cursor_.segment || s.unsettled > 0) continue;
      const bool recent = now_us - s.last_stored_at_us < window_us;
      if (recent && kept_bytes + s.committed <= config_.dedup_retain_bytes) {
        kept_bytes += s.committed;
        continue;
      }
      doomed.push_back(s.base);
    }
    for (const std::uint64_t base : doomed) log_.remove(base);
  }
  if (journal_.file_bytes() > journal_compact_bytes) {
    const std::string snap = snapshot();
    if (journal_.file_bytes() > 4 * snap.size()) {
      try {
        journal_.rewrite(snap);
      } catch (const std::exception& e) {
        detail::logger().warn("queue {}: journal compaction failed (the old journal stays in use): {}", name_,
                              e.what());
      }
    }
  }
}

}  // namespace ferry::ferryd
