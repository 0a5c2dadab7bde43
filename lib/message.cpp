#include "ferry/message.hpp"

namespace ferry {

std::int64_t unix_now_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
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
  return m;
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
