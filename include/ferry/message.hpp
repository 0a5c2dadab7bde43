#pragma once
/// @file ferry::message, the unit every pattern moves.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "ferry/message_id.hpp"

namespace ferry {

/// The header that gives a message its own time to live in ferryd: decimal milliseconds from when ferryd
/// stored it, 1 to max_ttl. Past it the message is not delivered (docs/protocol.md, Expiry).
inline constexpr std::string_view ttl_header = "ferry-ttl-ms";
inline constexpr std::chrono::milliseconds max_ttl{315'360'000'000};  // ten years
/// The headers that hold a message back in ferryd: ferry-delay-ms, decimal milliseconds after ferryd stored
/// it (0 to max_delay), which ferryd turns into ferry-not-before, decimal Unix milliseconds (at most
/// max_delay ahead of ferryd's clock). Not delivered before then (docs/protocol.md, Delayed messages).
inline constexpr std::string_view delay_header = "ferry-delay-ms";
inline constexpr std::string_view not_before_header = "ferry-not-before";
inline constexpr std::chrono::milliseconds max_delay{31'536'000'000};  // a year (365 days)

/// Header names and values; ordered, so a message's headers encode the same way every time.
using headers = std::map<std::string, std::string, std::less<>>;

/// One message: id, topic (the queue name for work queues), optional key, headers, timestamp, attempt
/// number, stream position and payload. On the wire (v2) it is one ZeroMQ frame, possibly shared with other
/// messages of a batch: topic, 0x00, envelope, payload (see docs/protocol.md).
///
/// The payload lives in a zmq::message_t, so a large payload built as a frame is sent without another copy,
/// and a received payload is handed to the handler where it arrived: a slice of the received frame (shared
/// by every message of a batch), not a copy.
///
/// Ownership: move-only. A successful send consumes the payload; a failed send leaves the message with the
/// caller, unchanged.
/// Thread safety: a value type; not safe to modify from two threads at once.
class message {
 public:
  message() = default;
  /// A new message with a fresh id and the current time.
  message(std::string topic, std::string_view payload);
  /// A new message whose payload frame is taken as is (no copy).
  message(std::string topic, zmq::message_t&& payload);

  message(message&&) noexcept = default;
  message& operator=(message&&) noexcept = default;
  message(const message&) = delete;
  message& operator=(const message&) = delete;

  /// A deep copy (the payload is shared by reference count when libzmq allows it, else copied).
  [[nodiscard]] message clone() const;

  [[nodiscard]] const message_id& id() const noexcept { return id_; }
  void set_id(const message_id& id) noexcept { id_ = id; }

  [[nodiscard]] const std::string& topic() const noexcept { return topic_; }
  void set_topic(std::string topic) { topic_ = std::move(topic); }

  /// The key groups related messages (for example all events of one order). Empty means "no key".
  [[nodiscard]] const std::string& key() const noexcept { return key_; }
  [[nodiscard]] bool has_key() const noexcept { return !key_.empty(); }
  void set_key(std::string key) { key_ = std::move(key); }

  [[nodiscard]] const ferry::headers& headers() const noexcept { return headers_; }
  [[nodiscard]] ferry::headers& headers() noexcept { return headers_; }
  /// The value of header `name`, or an empty view when it is absent.
  [[nodiscard]] std::string_view header(std::string_view name) const noexcept;
  void set_header(std::string name, std::string value) { headers_[std::move(name)] = std::move(value); }

  /// Time to live in ferryd (the ferry-ttl-ms header): once `ttl` has passed since ferryd stored the
  /// message, it is not delivered, and goes to the dead-letter queue with reason "expired: ..." (or is
  /// dropped, as ferryd is told with --expired). Throws ferry::error unless 1 ms <= ttl <= max_ttl.
  void set_ttl(std::chrono::milliseconds ttl);
  /// The ferry-ttl-ms header's value; nullopt when absent or not a valid time to live.
  [[nodiscard]] std::optional<std::chrono::milliseconds> ttl() const noexcept;

  /// Delayed delivery through ferryd: not delivered until `delay` after ferryd stored it (the
  /// ferry-delay-ms header). Confirmed as soon as it is stored. Throws ferry::error unless
  /// 0 <= delay <= max_delay.
  void set_delay(std::chrono::milliseconds delay);
  /// Scheduled delivery through ferryd: not delivered before `at` (the ferry-not-before header, Unix
  /// milliseconds). A time in the past delivers at once; ferryd refuses one more than max_delay ahead of its
  /// clock. Throws ferry::error for a time before 1970.
  void set_not_before(std::chrono::system_clock::time_point at);
  /// The ferry-delay-ms header's value; nullopt when absent or out of range.
  [[nodiscard]] std::optional<std::chrono::milliseconds> delay() const noexcept;
  /// The ferry-not-before header's value in Unix milliseconds; nullopt when absent or not a number >= 0.
  [[nodiscard]] std::optional<std::int64_t> not_before_ms() const noexcept;

  /// Creation time, Unix microseconds.
  [[nodiscard]] std::int64_t timestamp_us() const noexcept { return timestamp_us_; }
  void set_timestamp_us(std::int64_t us) noexcept { timestamp_us_ = us; }

  /// Delivery attempt: 1 on the first delivery through the forwarder, 2 on the first redelivery, and so on.
  /// 0 for a message that never went through the forwarder.
  [[nodiscard]] std::uint32_t attempt() const noexcept { return attempt_; }
  void set_attempt(std::uint32_t attempt) noexcept { attempt_ = attempt; }

  /// Publisher stream: `origin` names one publisher instance, `sequence` counts its messages per topic from
  /// 1. Both are 0 for messages that are not part of a stream (work queues).
  [[nodiscard]] std::uint64_t origin() const noexcept { return origin_; }
  [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }
  void set_stream(std::uint64_t origin, std::uint64_t sequence) noexcept {
    origin_ = origin;
    sequence_ = sequence;
  }

  [[nodiscard]] std::string_view payload() const noexcept;
  /// The payload as a frame of its own, e.g. to send it on without a copy. A received payload that is a
  /// slice of a larger frame is copied out into its own frame by the first call.
  [[nodiscard]] zmq::message_t& payload_frame();
  /// Copies `bytes` into a new payload frame.
  void set_payload(std::string_view bytes);
  /// Takes `frame` as the payload without copying it.
  void set_payload(zmq::message_t&& frame) noexcept;
  /// Takes `frame` and uses its bytes [offset, offset + size) as the payload, without copying. Receivers
  /// use it; `offset + size` must not exceed the frame's size.
  void set_payload_slice(zmq::message_t&& frame, std::size_t offset, std::size_t size) noexcept;
  /// The same over a frame shared with other messages (a received batch); it lives while any of them does.
  void set_payload_slice(std::shared_ptr<const zmq::message_t> frame, std::size_t offset,
                         std::size_t size) noexcept;

  /// Gives the message an id and a timestamp if it has none. Senders call this; users rarely need to.
  void stamp() noexcept;

 private:
  message_id id_;
  std::string topic_;
  std::string key_;
  ferry::headers headers_;
  std::int64_t timestamp_us_ = 0;
  std::uint32_t attempt_ = 0;
  std::uint64_t origin_ = 0;
  std::uint64_t sequence_ = 0;
  // The payload is payload_ whole, or (slice_) the bytes [slice_offset_, + slice_size_) of payload_ or, when
  // set, of *shared_.
  zmq::message_t payload_;
  std::shared_ptr<const zmq::message_t> shared_;
  std::size_t slice_offset_ = 0;
  std::size_t slice_size_ = 0;
  bool slice_ = false;
};

/// Called once per received message, on a receiving thread. An exception thrown by the handler is caught,
/// counted as `failed` and logged; the receiver keeps running.
using message_handler = std::function<void(message&)>;

/// Current Unix time in microseconds (vDSO clock read, no system call).
[[nodiscard]] std::int64_t unix_now_us() noexcept;

}  // namespace ferry
