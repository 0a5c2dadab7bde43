// ferry: send and receive ferry messages from the command line.
//
// Exit status: 0 success, 1 runtime failure (bad or busy endpoint, unreadable file, ...), 2 the command
// line was wrong. Every error is one line on stderr.

#include <fcntl.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "commands.hpp"
#include "ferry/log.hpp"

namespace {

using namespace ferry::cli;

// "ferry", "ferry push" or "ferry dlq list": who complains, and whose --help to suggest.
std::string command_path(const CLI::App& app) {
  std::string path = "ferry";
  for (const CLI::App* level = &app; !level->get_subcommands().empty();) {
    level = level->get_subcommands().front();
    path += " " + level->get_name();
  }
  return path;
}

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

// A closed stdin/stdout/stderr would be reused by the next descriptor opened (a ZeroMQ socket, the signal
// fd), and printed lines would go there. Park /dev/null read-only on it instead: reads see end of input and
// writes fail with EBADF, which is reported.
void guard_standard_fds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0 && null_fd != fd) {
      ::dup2(null_fd, fd);
      ::close(null_fd);
    }
  }
}

int usage_failure(const CLI::App& app, const std::string& what) {
  const std::string path = command_path(app);
  std::fprintf(stderr, "%s: %s (see '%s --help')\n", path.c_str(), one_line(what).c_str(), path.c_str());
  return exit_usage;
}

}  // namespace

int main(int argc, char** argv) {
  guard_standard_fds();
  CLI::App app("Send and receive ferry messages from the command line.", "ferry");
  app.set_version_flag("--version", "ferry " FERRY_VERSION);
  // At most one command; none is reported after parsing, so an unknown word reads "not expected: frob".
  app.require_subcommand(0, 1);
  std::string log_level;
  app.add_option("--log-level", log_level, "Library log level (default: $FERRY_LOG_LEVEL or info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  std::vector<command> commands;
  add_brokerless_commands(app, commands);
  add_send_command(app, commands);
  add_consume_command(app, commands);
  add_publish_command(app, commands);
  add_subscribe_command(app, commands);
  add_admin_commands(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive as "errors" with a success code; app.exit prints them.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    return usage_failure(app, e.what());
  }

  if (!log_level.empty()) {
    ferry::log_level level{};
    ferry::parse_log_level(log_level, level);
    ferry::set_log_level(level);
  }

  for (const command& cmd : commands) {
    if (!cmd.app->parsed()) continue;
    try {
      return cmd.run();
    } catch (const usage_error& e) {
      return usage_failure(app, e.what());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ferry: %s\n", one_line(e.what()).c_str());
      return exit_failure;
    }
  }
  return usage_failure(app, "give a command: push, pull, pub, sub, send, consume, dlq or stats");
}
