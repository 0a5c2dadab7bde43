#pragma once
// What the durable commands share (commands_send.cpp, commands_consume.cpp, commands_admin.cpp): the
// --forwarder and --queue flags and their checks, --timeout-ms and --format.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "cli_common.hpp"

namespace ferry::cli {

/// --forwarder ENDPOINT and --queue QUEUE.
struct forwarder_flags {
  std::string forwarder;
  std::string queue;
  bool queue_given = false;  // so that --queue "" is reported as invalid, not as missing
};

/// What --queue names, which decides whether it is required and whether a dead-letter queue is allowed.
/// publish and subscribe name a topic (--topic) instead.
enum class queue_use { send, consume, dlq, stats, publish, subscribe };

/// Adds --forwarder and `--queue` (or the flag `name` says, --topic for publish and subscribe).
void add_forwarder_flags(CLI::App& cmd, forwarder_flags& f, const std::string& queue_help,
                         const std::string& name = "--queue");
/// Throws usage_error for a missing --forwarder, a missing --queue (except for stats), an invalid queue
/// name, or a dead-letter queue where `use` does not take one.
void check_forwarder_flags(const forwarder_flags& f, queue_use use);

/// --timeout-ms MS, 1 to INT_MAX.
void add_timeout_flag(CLI::App& cmd, std::int64_t& timeout_ms, const std::string& help);
/// -F, --format text|json.
void add_format_flag(CLI::App& cmd, std::string& format, const std::string& help);

}  // namespace ferry::cli
