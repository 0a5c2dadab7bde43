#pragma once
// The forwarder protocol (versions 1 and 2), shared by the client classes (producer, consumer, admin) and
// ferryd. Version 2 carries the messages of a SEND or a DELIVER in one block frame (detail/wire.hpp);
// version 1 in envelope and payload frame pairs. A client says in HELLO the highest version it speaks and
// WELCOME answers the one both speak; ferryd takes either form of SEND at any time.
// docs/protocol.md ("The forwarder protocol") is the specification; this file names its constants.
//
// Clients use a DEALER socket, ferryd a ROUTER. Every message starts with a verb frame (ASCII).

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ferry::detail::fwd {

inline constexpr std::uint32_t protocol_version = 2;      // the highest this code speaks
inline constexpr std::uint32_t min_protocol_version = 1;  // the lowest it still speaks

// Client -> ferryd
inline constexpr std::string_view hello = "HELLO";      // | msgpack map
inline constexpr std::string_view send = "SEND";        // | queue | block (v2), or (envelope | payload) x n
inline constexpr std::string_view consume = "CONSUME";  // | queue | msgpack map {prefetch}
inline constexpr std::string_view cancel = "CANCEL";    // | queue
inline constexpr std::string_view ack = "ACK";          // | queue | tokens (8 bytes each)
inline constexpr std::string_view nack = "NACK";        // | queue | token | reason [| delay_ms]
inline constexpr std::string_view reject = "REJECT";    // | queue | token | reason
inline constexpr std::string_view extend = "EXTEND";    // | queue | tokens (8 bytes each) | lease_ms
inline constexpr std::string_view ping = "PING";        // [| queue]
inline constexpr std::string_view stats = "STATS";      //
inline constexpr std::string_view dlq = "DLQ";          // | queue | op | msgpack map
inline constexpr std::string_view publish = "PUBLISH";  // | topic | block (v2), or (envelope | payload) x n
inline constexpr std::string_view subscribe = "SUBSCRIBE";  // | topic | msgpack map {name, from, ...}
inline constexpr std::string_view fetch = "FETCH";          // | topic | msgpack map {from, count, origin}

// ferryd -> client
inline constexpr std::string_view welcome = "WELCOME";      // | msgpack map
inline constexpr std::string_view confirm = "CONFIRM";      // | ids (16 bytes each)
inline constexpr std::string_view refuse = "REFUSE";        // | id | code | text
inline constexpr std::string_view consuming = "CONSUMING";  // | queue | msgpack map
inline constexpr std::string_view cancelled = "CANCELLED";  // | queue
inline constexpr std::string_view deliver =
    "DELIVER";                                    // | queue | tokens | block (v2), or (env | payload) x n
inline constexpr std::string_view pong = "PONG";  // | instance (8 bytes)
inline constexpr std::string_view stats_reply = "STATS";  // | msgpack map
inline constexpr std::string_view dlq_reply = "DLQ";      // | msgpack map
inline constexpr std::string_view error = "ERROR";        // | code | text
inline constexpr std::string_view fetched = "FETCHED";    // | topic | msgpack map | block

// Refusal and error codes (ASCII, stable).
namespace code {
inline constexpr std::string_view queue_full = "queue_full";
inline constexpr std::string_view disk_full = "disk_full";
inline constexpr std::string_view too_large = "too_large";
inline constexpr std::string_view malformed = "malformed";
inline constexpr std::string_view bad_queue = "bad_queue";
inline constexpr std::string_view io_error = "io_error";
inline constexpr std::string_view unknown_verb = "unknown_verb";
inline constexpr std::string_view bad_frames = "bad_frames";
inline constexpr std::string_view not_consuming = "not_consuming";
inline constexpr std::string_view no_topic = "no_topic";          // FETCH: no such stored topic
inline constexpr std::string_view other_origin = "other_origin";  // FETCH: not the topic's stream
}  // namespace code

inline constexpr std::size_t max_batch = 4096;    // messages per SEND
inline constexpr std::size_t max_deliver = 1024;  // messages per DELIVER
inline constexpr std::size_t max_deliver_bytes = 4u
                                                 << 20;  // a DELIVER's block: more only for one message alone
inline constexpr std::size_t token_size = 8;
inline constexpr std::size_t id_size = 16;
inline constexpr std::size_t max_queue_name = 200;
inline constexpr std::string_view dlq_suffix = ".dlq";
/// The longest `reason` a DLQ request may filter on.
inline constexpr std::size_t max_dlq_reason_filter = 1024;

/// A queue name is 1..200 bytes of [A-Za-z0-9._-], not starting with '.'. It names a directory on disk,
/// so nothing else is allowed.
inline bool valid_queue_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > max_queue_name || name.front() == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

inline bool is_dlq_name(std::string_view name) noexcept {
  return name.size() > dlq_suffix.size() && name.substr(name.size() - dlq_suffix.size()) == dlq_suffix;
}

/// A subscription's name: a queue name that is not a dead-letter queue's, or '~' and one (an ephemeral
/// subscription, gone with its connection).
inline bool valid_subscription_name(std::string_view name) noexcept {
  if (!name.empty() && name.front() == '~') name.remove_prefix(1);
  return valid_queue_name(name) && !is_dlq_name(name);
}

inline constexpr char subscription_separator = '@';

/// The name under which a topic's subscription is consumed, answered and cancelled: "topic@name".
inline std::string subscription_queue(std::string_view topic, std::string_view name) {
  std::string out(topic);
  out += subscription_separator;
  out += name;
  return out;
}

/// True for "topic@name" (at most 200 bytes in all, like a queue name) and its dead-letter queue
/// "topic@name.dlq".
inline bool is_subscription_queue(std::string_view name) noexcept {
  const auto at = name.find(subscription_separator);
  if (at == std::string_view::npos) return false;
  if (name.size() > max_queue_name + (is_dlq_name(name) ? dlq_suffix.size() : 0)) return false;
  std::string_view sub = name.substr(at + 1);
  if (is_dlq_name(sub)) sub.remove_suffix(dlq_suffix.size());
  return valid_queue_name(name.substr(0, at)) && valid_subscription_name(sub);
}

/// What CONSUME, CANCEL and the answers may name: a queue, a topic's subscription, or a dead-letter queue.
inline bool valid_destination(std::string_view name) noexcept {
  return valid_queue_name(name) || is_subscription_queue(name);
}

/// A NACK's optional delay frame: 8 bytes, big-endian milliseconds, at most this (24 hours).
inline constexpr std::uint64_t max_nack_delay_ms = 86'400'000;

inline void put_u64(char* p, std::uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i) *p++ = static_cast<char>(v >> (8 * i));
}

inline std::uint64_t get_u64(const char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace ferry::detail::fwd
