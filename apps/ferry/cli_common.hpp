#pragma once
// Pieces every ferry subcommand shares: how a command is registered and run, the common flags, the exit
// status of a usage mistake, and reading one record per line.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "ferry/context.hpp"
#include "ferry/message.hpp"

namespace ferry::cli {

/// Exit statuses: 0 success, 1 runtime failure (ferry::error, I/O), 2 the command line was wrong.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

/// A mistake in how the tool was called that CLI11 cannot see (e.g. no endpoint at all). Exits 2.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A subcommand and what runs it once its flags are parsed. run() returns the exit status; it may throw
/// usage_error (exit 2) or anything else (exit 1).
struct command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// --bind / --connect, each repeatable.
struct endpoint_flags {
  std::vector<std::string> bind;
  std::vector<std::string> connect;

  /// Throws usage_error when neither flag was given.
  [[nodiscard]] ferry::endpoints to_endpoints() const;
};

void add_endpoint_flags(CLI::App& cmd, endpoint_flags& flags);

/// What a sending command stamps on every message: --topic, --key, --header k=v (repeatable).
struct message_flags {
  std::string topic;
  std::string key;
  std::vector<std::string> headers;  // "k=v", checked by key_value()
  bool topic_given = false;          // an empty --topic "" is a valid topic

  /// Throws usage_error when --topic is missing or a field is longer than a receiver accepts (see
  /// ferry::decode_limits), since such messages would be dropped on arrival.
  void check() const;
  /// A message with these fields and `payload`.
  [[nodiscard]] ferry::message make(std::string_view payload) const;
};

void add_message_flags(CLI::App& cmd, message_flags& flags, const std::string& topic_help);
/// Only --key and --header, for commands that name the topic another way (send: --queue).
void add_key_header_flags(CLI::App& cmd, message_flags& flags);

/// A decimal whole number in [min, max]. CLI11's own conversion takes "-1" for an unsigned option and reads
/// "010" as octal; this rejects the first and strips leading zeros.
[[nodiscard]] CLI::Validator whole_number(std::int64_t min, std::int64_t max);
/// Bounds of the flags: counts, and milliseconds or queue lengths that libzmq takes as an int.
inline constexpr std::int64_t max_count = std::numeric_limits<std::int64_t>::max();
inline constexpr std::int64_t max_int = std::numeric_limits<int>::max();
/// "KEY=VALUE" with a non-empty KEY.
[[nodiscard]] const CLI::Validator& key_value();

/// Prints "ferry: bound ENDPOINT" on stderr for each bound endpoint, so scripts (and tests) learn the port
/// a `tcp://127.0.0.1:*` bind picked. The line also says the socket is ready.
void announce_bound(const std::vector<std::string>& bound);

/// Reads newline-separated records from standard input or a file.
///
/// Ownership: owns the file descriptor of a file it opened; never closes standard input.
/// Thread safety: none.
class line_reader {
 public:
  /// Reads standard input when `path` is empty or "-". Throws ferry::error when the file cannot be opened.
  explicit line_reader(const std::string& path);
  ~line_reader();
  line_reader(const line_reader&) = delete;
  line_reader& operator=(const line_reader&) = delete;

  /// Stores the next record without its '\n' (a last record without one counts) and returns true; returns
  /// false at the end of input. Throws ferry::error on a read error.
  bool next(std::string& line);
  /// True when a whole record is already read and waiting (next() would return it without reading).
  [[nodiscard]] bool has_buffered_record() const noexcept;

 private:
  bool fill();

  int fd_ = 0;
  bool owned_ = false;
  std::string name_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
};

}  // namespace ferry::cli
