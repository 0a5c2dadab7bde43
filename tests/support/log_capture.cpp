#include "support/log_capture.hpp"

#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>

#include "detail/log.hpp"

namespace ferry::test {

struct log_capture::impl {
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink =
      std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10'000);
};

log_capture::log_capture() : impl_(std::make_unique<impl>()) {
  impl_->sink->set_pattern("%l %v");
  detail::logger().sinks().push_back(impl_->sink);
}

log_capture::~log_capture() {
  auto& sinks = detail::logger().sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), impl_->sink), sinks.end());
}

std::string log_capture::text() const {
  std::string out;
  for (const auto& line : impl_->sink->last_formatted()) out += line;
  return out;
}

std::size_t log_capture::count(const std::string& part) const {
  const auto lines = impl_->sink->last_formatted();
  return static_cast<std::size_t>(std::count_if(
      lines.begin(), lines.end(), [&](const std::string& l) { return l.find(part) != std::string::npos; }));
}

}  // namespace ferry::test
