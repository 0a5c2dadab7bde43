// Durable topics: PUBLISH stores a message once in the topic's stream (the commit pipeline of produce.cpp);
// SUBSCRIBE opens a named subscription, a consumer store of its own over that stream, consumed, answered and
// cancelled under the name "topic@subscription" like a queue. Subscriptions whose names start with '~' are
// ephemeral: they end with their last consumer. With --feed, every stored message is also published on a
// PUB socket (the live feed), and FETCH reads a range of a topic back for a subscriber that saw a gap.
#include <fmt/format.h>
#include <algorithm>
#include <cstring>
#include <optional>
#include <system_error>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "ferry/error.hpp"
#include "forwarder.hpp"
#include "protocol_helpers.hpp"
#include "record.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
namespace fwd = ferry::detail::fwd;
using detail::logger;

namespace {

constexpr std::string_view journal_suffix = ".journal";

bool ephemeral(std::string_view subscription) {
  return !subscription.empty() && subscription.front() == '~';
}

// SUBSCRIBE's options, read without trusting them.
struct subscribe_options {
  std::string name;
  std::string from = "new";
  std::uint64_t seq = 0;
  std::int64_t time_us = 0;
  std::uint64_t prefetch = 64;
  std::uint64_t version = 1;
};

// Fills `out` from the map in `bytes`; returns an empty string or what is wrong, for an ERROR's text.
std::string parse_subscribe_options(std::string_view bytes, subscribe_options& out) {
  msgpack::object_handle oh;
  try {
    oh = unpack_untrusted(bytes);
  } catch (const std::exception&) {
    return "the options frame is not MessagePack";
  }
  const msgpack::object& o = oh.get();
  if (o.type != msgpack::type::MAP) return "the options frame is not a MessagePack map";
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) continue;
    const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
    const msgpack::object& v = kv.val;
    auto as_str = [&](std::string& to) {
      if (v.type != msgpack::type::STR) return fmt::format("\"{}\" must be a string", key);
      to.assign(v.via.str.ptr, v.via.str.size);
      return std::string();
    };
    auto as_uint = [&](std::uint64_t& to) {
      if (v.type != msgpack::type::POSITIVE_INTEGER)
        return fmt::format("\"{}\" must be an unsigned integer", key);
      to = v.via.u64;
      return std::string();
    };
    std::string problem;
    if (key == "name") {
      problem = as_str(out.name);
    } else if (key == "from") {
      problem = as_str(out.from);
    } else if (key == "seq") {
      problem = as_uint(out.seq);
    } else if (key == "time_us") {
      if (v.type == msgpack::type::POSITIVE_INTEGER) {
        out.time_us = v.via.u64 > static_cast<std::uint64_t>(INT64_MAX)
                          ? INT64_MAX
                          : static_cast<std::int64_t>(v.via.u64);
      } else if (v.type == msgpack::type::NEGATIVE_INTEGER) {
        out.time_us = v.via.i64;
      } else {
        problem = "\"time_us\" must be an integer (Unix microseconds)";
      }
    } else if (key == "prefetch") {
      problem = as_uint(out.prefetch);
    } else if (key == "version") {
      problem = as_uint(out.version);
    }
    if (!problem.empty()) return problem;
  }
  return {};
}

}  // namespace

forwarder::queue_slot* forwarder::find_topic(std::string_view name) {
  const auto it = topic_index_.find(std::string(name));
  return it == topic_index_.end() ? nullptr : &queues_[it->second];
}

forwarder::queue_slot& forwarder::open_topic(const std::string& name) {
  if (auto* slot = find_topic(name)) return *slot;
  // A topic that cannot be opened (its files unreadable) is not registered: the request that asked for it
  // fails, and a later one tries again from disk instead of using a topic that was never recovered.
  const std::size_t slots_before = queues_.size();
  try {
    return open_topic_from_disk(name);
  } catch (...) {
    while (queues_.size() > slots_before) {
      const auto& q = queues_.back().q;
      if (q && q->kind() == queue_kind::subscription) queue_index_.erase(q->name());
      queues_.pop_back();
    }
    topic_index_.erase(name);
    throw;
  }
}

forwarder::queue_slot& forwarder::open_topic_from_disk(const std::string& name) {
  const fs::path dir = options_.data_dir / "topics" / name;
  const auto index = static_cast<std::uint32_t>(queues_.size());
  queues_.push_back({});
  queue_slot& slot = queues_.back();
  slot.q = std::make_unique<queue>(name, index, dir, options_.queue, (random_u64() & 0xffffffull) << 40,
                                   queue_kind::topic);
  topic_index_.emplace(name, index);
  queue& topic = *slot.q;

  // The durable subscriptions stored with it; ephemeral ones ended with the last run.
  std::vector<std::string> subs;
  std::error_code ec;
  const fs::path sub_dir = dir / "subscriptions";
  if (fs::is_directory(sub_dir, ec)) {
    for (const auto& entry : fs::directory_iterator(sub_dir)) {
      const std::string file = entry.path().filename().string();
      if (!entry.is_regular_file() || !file.ends_with(journal_suffix)) continue;
      const std::string sub = file.substr(0, file.size() - journal_suffix.size());
      if (ephemeral(sub)) {
        fs::remove(entry.path(), ec);
      } else if (fwd::valid_subscription_name(sub)) {
        subs.push_back(sub);
      }
    }
  }
  std::sort(subs.begin(), subs.end());
  const auto t0 = steady::now();
  recovery_report journals;
  for (const auto& sub : subs) {
    const std::string qname = fwd::subscription_queue(name, sub);
    const auto sub_index = static_cast<std::uint32_t>(queues_.size());
    queues_.push_back({});
    queue_slot& s = queues_.back();
    s.q = std::make_unique<queue>(qname, sub_index, topic, sub_dir / (sub + std::string(journal_suffix)),
                                  options_.queue, (random_u64() & 0xffffffull) << 40);
    s.q->replay_journal(journals);
    topic.attach(*s.q);
    queue_index_.emplace(qname, sub_index);
  }
  recovery_report log_report;
  recovery_report ignored;
  topic.recover(log_report, ignored);
  if (log_report.records > 0 || !subs.empty() || !log_report.problems.empty()) {
    logger().info(
        "topic {}: recovered {} record(s) in {} segment(s) ({} bytes) and {} subscription(s) in {:.3f} s, "
        "{} torn-tail bytes truncated, {} damaged region(s) skipped",
        name, log_report.records, log_report.segments, log_report.bytes, subs.size(),
        std::chrono::duration<double>(steady::now() - t0).count(),
        log_report.truncated_bytes + journals.truncated_bytes,
        log_report.corrupt_regions + journals.corrupt_regions);
    for (const auto& p : log_report.problems) logger().warn("topic {}: {}", name, p);
    for (const auto& p : journals.problems) logger().warn("topic {}: subscription journal: {}", name, p);
  }
  return slot;
}

forwarder::queue_slot& forwarder::create_subscription(queue_slot& topic_slot, const std::string& name,
                                                      std::uint64_t first_seq) {
  queue& topic = *topic_slot.q;
  const std::string qname = fwd::subscription_queue(topic.name(), name);
  const fs::path journal_file =
      options_.data_dir / "topics" / topic.name() / "subscriptions" / (name + std::string(journal_suffix));
  auto q = std::make_unique<queue>(qname, static_cast<std::uint32_t>(queues_.size()), topic, journal_file,
                                   options_.queue, (random_u64() & 0xffffffull) << 40);
  q->start_at(first_seq);  // throws before anything is registered
  const auto index = static_cast<std::uint32_t>(queues_.size());
  queues_.push_back({});
  queue_slot& slot = queues_.back();
  slot.q = std::move(q);
  topic.attach(*slot.q);
  queue_index_.emplace(qname, index);
  logger().info("topic {}: subscription {} created at seq {}", topic.name(), name, first_seq);
  return slot;
}

void forwarder::retire_if_ephemeral(queue_slot& slot) {
  queue& q = *slot.q;
  if (slot.retired || q.kind() != queue_kind::subscription || q.subscribers() != 0) return;
  const auto at = q.name().find(fwd::subscription_separator);
  if (at == std::string::npos || !ephemeral(std::string_view(q.name()).substr(at + 1))) return;
  q.topic()->detach(q);
  queue_index_.erase(q.name());
  std::error_code ec;
  fs::remove(q.state_journal_path(), ec);
  slot.retired = true;
  logger().info("subscription {} ended with its last consumer", q.name());
}

void forwarder::on_subscribe(const std::string& identity, std::vector<zmq::message_t>& frames) {
  // SUBSCRIBE | topic | {name, from, seq, time_us, prefetch, version}
  if (frames.size() < 4) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      "SUBSCRIBE needs: topic, then a MessagePack map with at least \"name\"");
  }
  const std::string topic_name(view(frames[2]));
  if (!fwd::valid_queue_name(topic_name) || fwd::is_dlq_name(topic_name))
    return send_error(identity, fwd::code::bad_queue,
                      fmt::format("'{}' is not a valid topic name: 1-200 characters of A-Z a-z 0-9 . _ -, "
                                  "not starting with '.', not ending in .dlq",
                                  printable(topic_name)));
  subscribe_options o;
  if (const std::string problem = parse_subscribe_options(view(frames[3]), o); !problem.empty()) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "SUBSCRIBE options: " + problem);
  }
  if (!fwd::valid_subscription_name(o.name))
    return send_error(
        identity, fwd::code::bad_queue,
        fmt::format("'{}' is not a valid subscription name: 1-200 characters of A-Z a-z 0-9 . _ "
                    "-, not starting with '.', not ending in .dlq; a leading '~' makes it "
                    "ephemeral",
                    printable(o.name)));
  if (topic_name.size() + 1 + o.name.size() > fwd::max_queue_name)
    return send_error(
        identity, fwd::code::bad_queue,
        fmt::format("'{}@{}' is too long: a topic's name and its subscription's together take at "
                    "most {} bytes with the '@'",
                    printable(topic_name), printable(o.name), fwd::max_queue_name));
  if (o.from != "new" && o.from != "first" && o.from != "seq" && o.from != "time") {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      fmt::format("SUBSCRIBE options: \"from\" is '{}'; it takes new, first, seq or time",
                                  printable(o.from)));
  }
  if (o.from == "seq" && o.seq == 0) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      "SUBSCRIBE options: \"from\": \"seq\" needs \"seq\", a sequence number from 1");
  }
  queue_slot& topic_slot = open_topic(topic_name);
  queue& topic = *topic_slot.q;
  const std::string qname = fwd::subscription_queue(topic_name, o.name);
  queue_slot* slot = find_queue(qname);
  const bool created = slot == nullptr;
  std::uint64_t first = 0;
  bool truncated = false;
  std::uint64_t skipped = 0;
  if (created) {
    const std::uint64_t oldest = topic.first_retained();
    if (o.from == "first") {
      first = oldest;
    } else if (o.from == "seq") {
      first = std::max(o.seq, oldest);
      truncated = o.seq < oldest;
    } else if (o.from == "time") {
      first = topic.first_seq_at(o.time_us);
    } else {
      first = topic.committed_through() + 1;
    }
    try {
      slot = &create_subscription(topic_slot, o.name, first);
    } catch (const std::exception& e) {
      logger().error("topic {}: cannot create subscription {}: {}", topic_name, o.name, e.what());
      return send_error(identity, fwd::code::io_error,
                        fmt::format("cannot create subscription {}: {}", qname, e.what()));
    }
  } else {
    skipped = slot->q->take_skipped_unseen();
    truncated = skipped > 0;
  }
  queue& q = *slot->q;
  if (truncated) ++q.counters().truncated_starts;
  const std::uint64_t version =
      std::clamp<std::uint64_t>(o.version, fwd::min_protocol_version, fwd::protocol_version);
  const std::uint64_t prefetch = std::clamp<std::uint64_t>(o.prefetch, 1, 100'000);
  q.subscribe(identity, static_cast<std::uint32_t>(prefetch), static_cast<std::uint32_t>(version));
  peers_.consuming(identity, q.index(), steady::now());
  logger().info("consumer {} on subscription {} (prefetch {}{})", peer_name(identity), qname, prefetch,
                created ? fmt::format(", created at seq {}", first) : std::string());
  send_consuming(identity, qname, prefetch, 5, [&](msgpack::packer<msgpack::sbuffer>& pk) {
    pk.pack("created");
    pk.pack(created);
    pk.pack("position");  // the first seq this subscription has not settled
    pk.pack(q.low_watermark());
    pk.pack("first_retained");
    pk.pack(topic.first_retained());
    pk.pack("truncated");  // its start (or unsettled messages) lay before the oldest retained message
    pk.pack(truncated);
    pk.pack("skipped");  // messages retention deleted before it settled them, since it was last here
    pk.pack(skipped);
  });
}

namespace {

// FETCH's options, read without trusting them.
struct fetch_options {
  std::uint64_t from = 0;
  std::uint64_t count = fwd::max_deliver;
  std::optional<std::uint64_t> origin;
};

std::string parse_fetch_options(std::string_view bytes, fetch_options& out) {
  msgpack::object_handle oh;
  try {
    oh = unpack_untrusted(bytes);
  } catch (const std::exception&) {
    return "the options frame is not MessagePack";
  }
  const msgpack::object& o = oh.get();
  if (o.type != msgpack::type::MAP) return "the options frame is not a MessagePack map";
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) continue;
    const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
    if (key != "from" && key != "count" && key != "origin") continue;
    if (kv.val.type != msgpack::type::POSITIVE_INTEGER)
      return fmt::format("\"{}\" must be an unsigned integer", key);
    const std::uint64_t v = kv.val.via.u64;
    if (key == "from") out.from = v;
    if (key == "count") out.count = v;
    if (key == "origin") out.origin = v;
  }
  if (out.from == 0) return "\"from\" must be given, a sequence number from 1";
  return {};
}

}  // namespace

void forwarder::on_fetch(const std::string& identity, std::vector<zmq::message_t>& frames) {
  // FETCH | topic | {from, count, origin}  ->  FETCHED | topic | {from, next, count, first_retained, last}
  //                                                    | block
  if (frames.size() < 4) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames,
                      "FETCH needs: topic, then a MessagePack map with at least \"from\"");
  }
  const std::string topic_name(view(frames[2]));
  if (!fwd::valid_queue_name(topic_name) || fwd::is_dlq_name(topic_name))
    return send_error(identity, fwd::code::bad_queue,
                      fmt::format("'{}' is not a valid topic name", printable(topic_name)));
  fetch_options o;
  if (const std::string problem = parse_fetch_options(view(frames[3]), o); !problem.empty()) {
    ++malformed_frames_;
    return send_error(identity, fwd::code::bad_frames, "FETCH options: " + problem);
  }
  queue_slot* slot = find_topic(topic_name);
  std::error_code ec;
  if (slot == nullptr && fs::is_directory(options_.data_dir / "topics" / topic_name, ec))
    slot = &open_topic(topic_name);
  if (slot == nullptr)
    return send_error(identity, fwd::code::no_topic,
                      fmt::format("no topic named '{}' is stored here", printable(topic_name)));
  queue& topic = *slot->q;
  if (o.origin && *o.origin != topic.origin())
    return send_error(identity, fwd::code::other_origin,
                      fmt::format("origin {:016x} is not topic {}'s stream here (its origin is {:016x}): "
                                  "only messages ferryd stored can be fetched",
                                  *o.origin, topic_name, topic.origin()));
  read_buffer_.clear();
  std::uint64_t next = 0;
  const std::size_t n = topic.fetch(o.from, std::clamp<std::uint64_t>(o.count, 1, fwd::max_deliver),
                                    fwd::max_deliver_bytes, read_buffer_, next);
  ++topic.counters().fetches;
  topic.counters().fetched += n;
  msgpack::sbuffer meta;
  msgpack::packer<msgpack::sbuffer> pk(meta);
  pk.pack_map(5);
  pk.pack("from");
  pk.pack(o.from);
  pk.pack("next");  // the seq after the last one in the block: where the next FETCH goes on
  pk.pack(next);
  pk.pack("count");
  pk.pack(static_cast<std::uint64_t>(n));
  pk.pack("first_retained");  // a `from` before it was deleted by retention: the block starts here
  pk.pack(topic.first_retained());
  pk.pack("last");  // the newest stored seq
  pk.pack(topic.committed_through());
  zmq::message_t block(detail::block_header_size(n) + read_buffer_.size());
  char* p = detail::write_block_header(static_cast<char*>(block.data()), n);
  if (!read_buffer_.empty()) std::memcpy(p, read_buffer_.data(), read_buffer_.size());
  std::vector<zmq::message_t> reply;
  reply.push_back(frame(fwd::fetched));
  reply.push_back(frame(topic_name));
  reply.push_back(zmq::message_t(meta.data(), meta.size()));
  reply.push_back(std::move(block));
  send_frames(identity, reply);
}

void forwarder::publish_feed(queue& topic, std::string_view records, std::uint64_t through) {
  // The batch was framed by this process a moment ago; it is parsed back (checksums and all, cheap next
  // to the fsync it waited for) rather than kept twice.
  const std::string& name = topic.name();
  std::size_t bytes = 0;
  auto flush = [&] {
    if (feed_entries_.empty()) return;
    zmq::message_t out(name.size() + 1 + detail::block_header_size(feed_entries_.size()) + bytes);
    char* p = static_cast<char*>(out.data());
    std::memcpy(p, name.data(), name.size());
    p += name.size();
    *p++ = detail::topic_separator;
    p = detail::write_block_header(p, feed_entries_.size());
    for (const auto& [envelope, payload] : feed_entries_) p = detail::write_block_entry(p, envelope, payload);
    try {
      if (feed_->send(out, zmq::send_flags::dontwait)) topic.counters().fed += feed_entries_.size();
    } catch (const zmq::error_t& e) {
      logger().warn("topic {}: live feed send failed: {}", name, e.what());
    }
    feed_entries_.clear();
    bytes = 0;
  };
  std::size_t pos = 0;
  while (pos < records.size()) {
    std::string_view body;
    std::size_t total = 0;
    if (storage::check_frame(records.data() + pos, records.size() - pos, body, total) !=
        storage::frame_status::ok)
      break;
    pos += total;
    const auto rec = storage::parse_message(body);
    if (!rec) continue;
    if (rec->seq > through) break;
    const std::size_t size = detail::block_entry_size(rec->envelope.size(), rec->payload.size());
    if (!feed_entries_.empty() &&
        (feed_entries_.size() == fwd::max_deliver || bytes + size > fwd::max_deliver_bytes))
      flush();
    feed_entries_.emplace_back(rec->envelope, rec->payload);
    bytes += size;
  }
  flush();
}

}  // namespace ferry::ferryd
