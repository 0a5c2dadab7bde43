#pragma once
// The ferry tool's subcommands, one group per file: commands_brokerless.cpp (push, pull, pub, sub) and
// commands_durable.cpp (send, consume, dlq, stats: through ferryd).

#include <CLI/CLI.hpp>

#include <vector>

#include "cli_common.hpp"

namespace ferry::cli {

/// Adds push, pull, pub and sub: straight to worker pools and subscribers, no forwarder.
void add_brokerless_commands(CLI::App& app, std::vector<command>& commands);

/// Adds send, consume, dlq (list, replay, purge) and stats: durable queues through ferryd.
void add_durable_commands(CLI::App& app, std::vector<command>& commands);

}  // namespace ferry::cli
