#include "ferry/message.hpp"

#include <fmt/format.h>
#include <charconv>
#include <limits>

#include "ferry/error.hpp"

namespace ferry {

std::int64_t unix_now_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void message::set_ttl(std::chrono::milliseconds ttl) {
  if (ttl.count() < 1 || ttl > max_ttl)
    throw error(fmt::format("a time to live of {} ms is out of range: 1 ms to {} ms (ten years)", ttl.count(),
                            max_ttl.count()));
  set_header(std::string(ttl_header), std::to_string(ttl.count()));
}

namespace {

// A header of ASCII digits only, from `min` to `max`.
std::optional<std::int64_t> decimal(std::string_view text, std::int64_t min, std::int64_t max) noexcept {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || text.front() == '-' || ec != std::errc() || end != text.data() + text.size() ||
      v < min || v > max)
    return std::nullopt;
  return v;
}

}  // namespace

std::optional<std::chrono::milliseconds> message::ttl() const noexcept {
  const auto ms = decimal(header(ttl_header), 1, max_ttl.count());
  if (!ms) return std::nullopt;
  return std::chrono::milliseconds(*ms);
}

void message::set_delay(std::chrono::milliseconds delay) {
  if (delay.count() < 0 || delay > max_delay)
    throw error(fmt::format("a delay of {} ms is out of range: 0 to {} ms (a year)", delay.count(),
                            max_delay.count()));
  set_header(std::string(delay_header), std::to_string(delay.count()));
}

void message::set_not_before(std::chrono::system_clock::time_point at) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
  if (ms < 0) throw error(fmt::format("a not-before time of {} ms since 1970 is before 1970", ms));
  set_header(std::string(not_before_header), std::to_string(ms));
}

std::optional<std::chrono::milliseconds> message::delay() const noexcept {
  const auto ms = decimal(header(delay_header), 0, max_delay.count());
  if (!ms) return std::nullopt;
  return std::chrono::milliseconds(*ms);
}

std::optional<std::int64_t> message::not_before_ms() const noexcept {
  return decimal(header(not_before_header), 0, std::numeric_limits<std::int64_t>::max());
}

// One clock read gives both the id's milliseconds and the timestamp.
message::message(std::string topic, std::string_view payload)
    : topic_(std::move(topic)), timestamp_us_(unix_now_us()), payload_(payload.data(), payload.size()) {
  id_ = message_id::generate(static_cast<std::uint64_t>(timestamp_us_ / 1000));
}

message::message(std::string topic, zmq::message_t&& payload)
    : topic_(std::move(topic)), timestamp_us_(unix_now_us()), payload_(std::move(payload)) {
  id_ = message_id::generate(static_cast<std::uint64_t>(timestamp_us_ / 1000));
}

message message::clone() const {
  message m;
  m.id_ = id_;
  m.topic_ = topic_;
  m.key_ = key_;
  m.headers_ = headers_;
  m.timestamp_us_ = timestamp_us_;
  m.attempt_ = attempt_;
  m.origin_ = origin_;
  m.sequence_ = sequence_;
  m.payload_.copy(const_cast<zmq::message_t&>(payload_));  // zmq_msg_copy shares, it does not modify
  m.shared_ = shared_;
  m.slice_offset_ = slice_offset_;
  m.slice_size_ = slice_size_;
  m.slice_ = slice_;
  return m;
}

std::string_view message::payload() const noexcept {
  if (!slice_) return payload_.to_string_view();
  const zmq::message_t& frame = shared_ ? *shared_ : payload_;
  return {static_cast<const char*>(frame.data()) + slice_offset_, slice_size_};
}

zmq::message_t& message::payload_frame() {
  if (slice_) {
    zmq::message_t own(payload().data(), payload().size());
    set_payload(std::move(own));
  }
  return payload_;
}

void message::set_payload(std::string_view bytes) {
  zmq::message_t frame(bytes.data(), bytes.size());  // before letting go: `bytes` may view our own frame
  set_payload(std::move(frame));
}

void message::set_payload(zmq::message_t&& frame) noexcept {
  payload_ = std::move(frame);
  shared_.reset();
  slice_ = false;
}

void message::set_payload_slice(zmq::message_t&& frame, std::size_t offset, std::size_t size) noexcept {
  payload_ = std::move(frame);
  shared_.reset();
  slice_offset_ = offset;
  slice_size_ = size;
  slice_ = true;
}

void message::set_payload_slice(std::shared_ptr<const zmq::message_t> frame, std::size_t offset,
                                std::size_t size) noexcept {
  shared_ = std::move(frame);
  if (payload_.size() != 0) payload_.rebuild();
  slice_offset_ = offset;
  slice_size_ = size;
  slice_ = true;
}

std::string_view message::header(std::string_view name) const noexcept {
  const auto it = headers_.find(name);
  return it == headers_.end() ? std::string_view{} : std::string_view{it->second};
}

void message::stamp() noexcept {
  if (!id_.is_nil() && timestamp_us_ != 0) return;
  const std::int64_t now = unix_now_us();
  if (id_.is_nil()) id_ = message_id::generate(static_cast<std::uint64_t>(now / 1000));
  if (timestamp_us_ == 0) timestamp_us_ = now;
}

}  // namespace ferry
