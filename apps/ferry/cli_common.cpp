#include "cli_common.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "ferry/envelope.hpp"
#include "ferry/error.hpp"

namespace ferry::cli {

ferry::endpoints endpoint_flags::to_endpoints() const {
  if (bind.empty() && connect.empty()) throw usage_error("give at least one --bind or --connect endpoint");
  return {.bind = bind, .connect = connect};
}

void add_endpoint_flags(CLI::App& cmd, endpoint_flags& flags) {
  // allow_extra_args(false): each occurrence takes exactly one endpoint, so `--bind a --bind b` is the
  // only way to give two and a stray word is reported instead of being taken as an endpoint.
  cmd.add_option("--bind", flags.bind, "Bind to ENDPOINT (repeatable), e.g. tcp://127.0.0.1:*, ipc:///tmp/q")
      ->type_name("ENDPOINT")
      ->allow_extra_args(false);
  cmd.add_option("--connect", flags.connect, "Connect to ENDPOINT (repeatable), e.g. tcp://127.0.0.1:5555")
      ->type_name("ENDPOINT")
      ->allow_extra_args(false);
}

void message_flags::check() const {
  if (!topic_given) throw usage_error("--topic is required");
  const ferry::decode_limits limits;
  if (topic.size() > limits.max_topic)
    throw usage_error("--topic is " + std::to_string(topic.size()) + " bytes; receivers accept at most " +
                      std::to_string(limits.max_topic));
  if (key.size() > limits.max_key)
    throw usage_error("--key is " + std::to_string(key.size()) + " bytes; receivers accept at most " +
                      std::to_string(limits.max_key));
  if (headers.size() > limits.max_headers)
    throw usage_error(std::to_string(headers.size()) + " headers given; receivers accept at most " +
                      std::to_string(limits.max_headers));
}

ferry::message message_flags::make(std::string_view payload) const {
  ferry::message msg(topic, payload);
  if (!key.empty()) msg.set_key(key);
  for (const auto& kv : headers) {
    const auto eq = kv.find('=');  // key_value() guarantees one
    msg.set_header(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return msg;
}

void add_message_flags(CLI::App& cmd, message_flags& flags, const std::string& topic_help) {
  // Checked in check() rather than with required(): CLI11 reports a missing option before an unknown one,
  // and "unknown flag --topci" is the message that helps.
  cmd.add_option("-t,--topic", flags.topic, topic_help + " (required)")
      ->type_name("TOPIC")
      ->each([&flags](const std::string&) { flags.topic_given = true; });
  add_key_header_flags(cmd, flags);
}

void add_key_header_flags(CLI::App& cmd, message_flags& flags) {
  cmd.add_option("-k,--key", flags.key, "Key of every message (groups related messages)")->type_name("KEY");
  cmd.add_option("-H,--header", flags.headers, "Header KEY=VALUE on every message (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false)
      ->check(key_value());
}

CLI::Validator whole_number(std::int64_t min, std::int64_t max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        const std::string range = "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
        if (text.empty() || text.size() > 30 || text.find_first_not_of("0123456789") != std::string::npos)
          return "expected " + range + ", got '" + text + "'";
        const auto first = text.find_first_not_of('0');
        text.erase(0, first == std::string::npos ? text.size() - 1 : first);  // "010" is ten, not octal
        const std::string max_text = std::to_string(max);
        const bool above =
            text.size() > max_text.size() || (text.size() == max_text.size() && text > max_text);
        if (above || std::stoll(text) < min) return "expected " + range + ", got '" + text + "'";
        return {};
      },
      "");
}

const CLI::Validator& key_value() {
  static const CLI::Validator validator(
      [](std::string& text) -> std::string {
        const auto eq = text.find('=');
        if (eq == std::string::npos || eq == 0) return "expected KEY=VALUE, got '" + text + "'";
        return {};
      },
      "");
  return validator;
}

void announce_bound(const std::vector<std::string>& bound) {
  for (const auto& ep : bound) std::fprintf(stderr, "ferry: bound %s\n", ep.c_str());
  std::fflush(stderr);
}

line_reader::line_reader(const std::string& path) : buffer_(64 * 1024) {
  if (path.empty() || path == "-") {
    fd_ = STDIN_FILENO;
    name_ = "standard input";
    return;
  }
  name_ = path;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw ferry::error("cannot open " + path + ": " + std::strerror(errno));
  owned_ = true;
}

line_reader::~line_reader() {
  if (owned_) ::close(fd_);
}

bool line_reader::fill() {
  if (eof_) return false;
  if (begin_ > 0) {  // keep the partial record at the front
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);  // a record longer than the buffer
  for (;;) {
    const ssize_t n = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return true;
    }
    if (n == 0) {
      eof_ = true;
      return false;
    }
    if (errno != EINTR) throw ferry::error("cannot read " + name_ + ": " + std::strerror(errno));
  }
}

bool line_reader::has_buffered_record() const noexcept {
  return begin_ < end_ && std::memchr(buffer_.data() + begin_, '\n', end_ - begin_) != nullptr;
}

bool line_reader::next(std::string& line) {
  std::size_t scanned = begin_;
  for (;;) {
    const void* nl = std::memchr(buffer_.data() + scanned, '\n', end_ - scanned);
    if (nl != nullptr) {
      const auto at = static_cast<std::size_t>(static_cast<const char*>(nl) - buffer_.data());
      line.assign(buffer_.data() + begin_, at - begin_);
      begin_ = at + 1;
      return true;
    }
    const std::size_t offset = end_ - begin_;  // fill() moves the partial record to the front
    if (!fill()) {
      if (begin_ == end_) return false;
      line.assign(buffer_.data() + begin_, end_ - begin_);
      begin_ = end_;
      return true;
    }
    scanned = offset;
  }
}

}  // namespace ferry::cli
