#pragma once
// The ferry tool's subcommands, one group per file: commands_brokerless.cpp (push, pull, pub, sub), and
// through ferryd commands_send.cpp, commands_consume.cpp and commands_admin.cpp (dlq, stats).

#include <CLI/CLI.hpp>

#include <vector>

#include "cli_common.hpp"

namespace ferry::cli {

/// Adds push, pull, pub and sub: straight to worker pools and subscribers, no forwarder.
void add_brokerless_commands(CLI::App& app, std::vector<command>& commands);

/// Adds send: one message per input line to a ferryd queue, durably.
void add_send_command(CLI::App& app, std::vector<command>& commands);

/// Adds consume: messages of a ferryd queue printed one per line, each acknowledged once written.
void add_consume_command(CLI::App& app, std::vector<command>& commands);
void add_publish_command(CLI::App& app, std::vector<command>& commands);    // commands_send.cpp
void add_subscribe_command(CLI::App& app, std::vector<command>& commands);  // commands_consume.cpp

/// Adds dlq (list, replay, purge) and stats: ferryd's dead letters and counters.
void add_admin_commands(CLI::App& app, std::vector<command>& commands);

}  // namespace ferry::cli
