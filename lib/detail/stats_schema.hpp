#pragma once
// The fields of ferryd's STATS reply (docs/protocol.md, STATS), in one table each for the forwarder and a
// queue. The table drives the admin client's decoding, `ferry stats` (text and JSON) and encode_stats(),
// which ferryd's encoder and a metrics endpoint can share, so a new field is one line here (plus its
// member in ferry/admin.hpp).

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "ferry/admin.hpp"

namespace ferry::detail::stats_schema {

/// counter: only grows while ferryd runs (rates come from two samples). gauge: a current value.
/// info: identifies the process, measures nothing (a label on a metrics endpoint).
enum class field_kind { info, counter, gauge };

struct forwarder_field {
  std::string_view name;   // the key in STATS
  std::string_view label;  // the row in `ferry stats`
  std::string_view help;
  field_kind kind;
  std::string_view unit;
  std::variant<std::string forwarder_stats::*, std::uint64_t forwarder_stats::*, double forwarder_stats::*>
      member;
  std::string_view old_name = {};  // what an older ferryd called it, read when `name` is absent
};

struct queue_field {
  std::string_view name;
  std::string_view label;
  std::string_view help;
  field_kind kind;
  std::string_view unit;
  std::uint64_t queue_stats::*member;
};

// In the order `ferry stats` shows them. The STATS map also has "queues": queue name -> queue fields.
inline constexpr std::array<forwarder_field, 8> forwarder_fields{{
    {"server", "server", "ferryd and its version, \"ferryd <version>\"", field_kind::info, "text",
     &forwarder_stats::server},
    {"instance", "instance", "random number drawn at each start; a change means ferryd restarted",
     field_kind::info, "id", &forwarder_stats::instance},
    {"uptime_s", "uptime", "seconds since ferryd started", field_kind::gauge, "seconds",
     &forwarder_stats::uptime_s},
    {"commits", "commits", "group commits done (each makes a batch of messages durable at once)",
     field_kind::counter, "commits", &forwarder_stats::commits},
    {"fsyncs", "fsyncs", "fdatasync calls made by the commit thread", field_kind::counter, "calls",
     &forwarder_stats::fsyncs},
    {"fsync_seconds", "fsync seconds", "total time the commit thread spent in fdatasync", field_kind::counter,
     "seconds", &forwarder_stats::fsync_seconds},
    {"malformed_frames", "malformed frames",
     "malformed input dropped: bad envelopes, wrong frame counts or sizes, unknown verbs, bad option maps",
     field_kind::counter, "frames", &forwarder_stats::malformed_frames, "rejected_frames"},
    {"disk_full", "disk full",
     "1 while producers are refused with disk_full (free space under --min-free-mb, or a "
     "failed write); else 0",
     field_kind::gauge, "flag", &forwarder_stats::disk_full},
}};

inline constexpr std::array<queue_field, 23> queue_fields{{
    {"depth", "depth", "stored messages not yet settled (waiting, in flight, parked or being dead-lettered)",
     field_kind::gauge, "messages", &queue_stats::depth},
    {"in_flight", "in flight", "deliveries with a live lease", field_kind::gauge, "messages",
     &queue_stats::in_flight},
    {"parked", "parked", "messages held back behind a busy key", field_kind::gauge, "messages",
     &queue_stats::parked},
    {"consumers", "consumers", "subscribed connections", field_kind::gauge, "connections",
     &queue_stats::consumers},
    {"confirmed", "confirmed", "messages stored and confirmed (resent copies not included)",
     field_kind::counter, "messages", &queue_stats::confirmed},
    {"delivered", "delivered", "deliveries, redeliveries included", field_kind::counter, "deliveries",
     &queue_stats::delivered},
    {"acked", "acked", "messages settled by ACK", field_kind::counter, "messages", &queue_stats::acked},
    {"nacked", "nacked", "NACKs that took effect (handler failures)", field_kind::counter, "messages",
     &queue_stats::nacked},
    {"redelivered", "redelivered", "deliveries with attempt > 1", field_kind::counter, "deliveries",
     &queue_stats::redelivered},
    {"expired", "expired", "leases that expired", field_kind::counter, "leases", &queue_stats::expired},
    {"dead_lettered", "dead-lettered", "messages moved from this queue to its dead-letter queue",
     field_kind::counter, "messages", &queue_stats::dead_lettered},
    {"deduplicated", "deduplicated", "resent copies confirmed without being stored again",
     field_kind::counter, "messages", &queue_stats::deduplicated},
    {"refused", "refused", "REFUSEs for this queue (disk_full, queue_full, too_large, ...)",
     field_kind::counter, "messages", &queue_stats::refused},
    {"rejected", "rejected", "REJECTs that took effect: messages a handler sent to the dead-letter queue",
     field_kind::counter, "messages", &queue_stats::rejected},
    {"stale_acks", "stale acks", "ACK, NACK or REJECT tokens that settled nothing", field_kind::counter,
     "tokens", &queue_stats::stale_acks},
    {"disk_bytes", "disk bytes", "bytes of the queue's log segments", field_kind::gauge, "bytes",
     &queue_stats::disk_bytes},
    {"delayed", "delayed", "messages waiting out a redelivery delay (back-off or a NACK's delay)",
     field_kind::gauge, "messages", &queue_stats::delayed},
    {"next_due_ms", "next due in ms", "milliseconds until the first delayed message is due; 0 when none",
     field_kind::gauge, "milliseconds", &queue_stats::next_due_ms},
    {"extended", "extended", "lease extensions that took effect (EXTEND: consumers still working)",
     field_kind::counter, "extensions", &queue_stats::extended},
    {"ttl_expired", "ttl expired",
     "messages past their time to live, not delivered (dead-lettered, or dropped with --expired drop)",
     field_kind::counter, "messages", &queue_stats::ttl_expired},
    {"position", "position", "a topic's subscription: the first seq of the topic it has not settled",
     field_kind::gauge, "seq", &queue_stats::position},
    {"retention_skipped", "retention loss",
     "a topic's subscription: messages the topic's retention deleted before it settled them",
     field_kind::counter, "messages", &queue_stats::retention_skipped},
    {"truncated_starts", "late starts",
     "a topic's subscription: subscribes whose start lay before the oldest retained message",
     field_kind::counter, "subscribes", &queue_stats::truncated_starts},
}};

struct topic_field {
  std::string_view name;
  std::string_view label;
  std::string_view help;
  field_kind kind;
  std::string_view unit;
  std::uint64_t topic_stats::*member;
};

// The STATS map also has "topics": topic name -> these fields.
inline constexpr std::array<topic_field, 11> topic_fields{{
    {"first_seq", "first seq", "sequence number of the oldest retained message", field_kind::gauge, "seq",
     &topic_stats::first_seq},
    {"last_seq", "last seq", "sequence number of the newest stored message", field_kind::gauge, "seq",
     &topic_stats::last_seq},
    {"messages", "messages", "messages retained", field_kind::gauge, "messages", &topic_stats::messages},
    {"disk_bytes", "disk bytes", "bytes of the topic's log segments", field_kind::gauge, "bytes",
     &topic_stats::disk_bytes},
    {"published", "published", "messages stored and confirmed (resent copies not included)",
     field_kind::counter, "messages", &topic_stats::published},
    {"deduplicated", "deduplicated", "resent copies confirmed without being stored again",
     field_kind::counter, "messages", &topic_stats::deduplicated},
    {"refused", "refused", "REFUSEs for this topic", field_kind::counter, "messages", &topic_stats::refused},
    {"subscriptions", "subscriptions", "subscriptions of the topic, durable and ephemeral", field_kind::gauge,
     "subscriptions", &topic_stats::subscriptions},
    {"fed", "fed", "messages published on the live feed (--feed)", field_kind::counter, "messages",
     &topic_stats::fed},
    {"fetches", "fetches", "FETCH requests answered (gap repair)", field_kind::counter, "requests",
     &topic_stats::fetches},
    {"fetched", "fetched", "messages FETCH read back", field_kind::counter, "messages",
     &topic_stats::fetched},
}};

/// The STATS map (MessagePack) for `stats`: every field of both tables, under its name.
[[nodiscard]] std::string encode_stats(const forwarder_stats& stats);

/// Reads a STATS map. Missing fields stay 0, unknown fields and queue entries that are not maps are
/// ignored, a field of the wrong type counts as missing. Returns std::nullopt when `bytes` is not one
/// MessagePack map.
[[nodiscard]] std::optional<forwarder_stats> decode_stats(std::string_view bytes);

}  // namespace ferry::detail::stats_schema
