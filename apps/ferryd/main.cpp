// ferryd: the optional forwarder that makes ferry's work queues durable. See docs/operations.md.
#include <CLI/CLI.hpp>

#include <pthread.h>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "config_errors.hpp"
#include "detail/log.hpp"
#include "ferry/log.hpp"
#include "forwarder.hpp"
#include "metrics_http.hpp"

namespace {

constexpr const char* description =
    "ferryd - ferry's forwarder: stores messages on disk before confirming them, delivers them to workers "
    "with acknowledgements and leases, redelivers what a dead or stalled worker held, dead-letters what "
    "keeps failing, and drops resent duplicates.\n"
    "Exit codes: 0 clean stop, 1 runtime error, 2 bad flags or config, 3 data directory missing or "
    "unwritable, 4 endpoint unavailable, 5 data directory used by another ferryd.";

}  // namespace

int main(int argc, char** argv) {
  using namespace ferry::ferryd;
  CLI::App app(description, "ferryd");
  app.set_version_flag("--version", std::string("ferryd ") + FERRY_VERSION);
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  app.set_config("--config", "",
                 "Read options from a TOML or INI file (key = value, same names as the flags); "
                 "flags on the command line win");

  // --check-config FILE is --config FILE, then a report instead of a start.
  std::string check_config;
  app.add_option("--check-config", check_config,
                 "Validate FILE together with the other flags, print the effective settings (TOML) and exit: "
                 "0 when valid, 2 when not")
      ->type_name("FILE");
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string file;
    if (args[i] == "--check-config" && i + 1 < args.size()) file = args[i + 1];
    if (args[i].rfind("--check-config=", 0) == 0) file = args[i].substr(15);
    if (file.empty()) continue;
    for (const auto& a : args)
      if (a == "--config" || a.rfind("--config=", 0) == 0) {
        std::cerr << "ferryd: give --config or --check-config, not both\n";
        return exit_usage;
      }
    args.insert(args.end(), {"--config", file});
    break;
  }

  // --help shows each default, the list docs/operations.md gives (a test compares the two).
  app.option_defaults()->always_capture_default();

  forwarder_options o;
  std::string data_dir;
  std::vector<std::string> bind;
  std::string fsync = "always";
  std::uint64_t fsync_interval_ms = 10, segment_mb = 64, lease_ms = 30'000, heartbeat_ms = 1000,
                heartbeat_timeout_ms = 3000, dedup_window_ms = 120'000, dedup_max_ids = 262'144,
                dedup_retain_mb = 1024, max_message_bytes = o.max_message_bytes, max_queue_messages = 0,
                min_free_mb = 64, max_parked = 100'000, topic_retain_ms = 0, topic_retain_mb = 0,
                topic_retain_messages = 0;
  std::uint32_t max_attempts = 5;
  std::string log_level;  // empty: $FERRY_LOG_LEVEL, else info

  app.add_option("--data-dir", data_dir, "Directory holding the queues (must exist and be writable)")
      ->required();
  app.add_option("--bind", bind, "Endpoint to listen on, repeatable")->default_str(o.bind.front());
  app.add_option("--feed", o.feed,
                 "Endpoint of the live feed, repeatable: every topic message, once stored, published "
                 "there for ferry::subscriber (which FETCHes what it misses); none by default");
  app.add_option("--fsync", fsync,
                 "always: confirm after fdatasync (default); interval: confirm after write, "
                 "sync every --fsync-interval-ms (a machine crash can lose that much)")
      ->check(CLI::IsMember({"always", "interval"}));
  app.add_option("--fsync-interval-ms", fsync_interval_ms, "Sync period in interval mode")
      ->check(CLI::Range(1, 60'000));
  app.add_option("--segment-mb", segment_mb, "Size of a log segment file")->check(CLI::Range(1, 4096));
  app.add_option("--lease-ms", lease_ms,
                 "Visibility timeout: a delivery not answered in this time is redelivered")
      ->check(CLI::Range(100, 86'400'000));
  std::uint64_t max_lease_ms = 3'600'000;
  app.add_option("--max-lease-ms", max_lease_ms,
                 "Longest a consumer may hold a delivery by extending its lease (EXTEND), from the delivery")
      ->check(CLI::Range(100, 604'800'000));
  app.add_option("--max-attempts", max_attempts, "Deliveries before a message goes to <queue>.dlq")
      ->check(CLI::Range(1, 1'000'000));
  std::vector<std::uint64_t> backoff_ms;
  app.add_option("--backoff-ms", backoff_ms,
                 "Redelivery back-off by attempt, comma-separated (1000,5000,30000: after the first failed "
                 "attempt wait 1 s, after the second 5 s, then 30 s); none: redeliver at once")
      ->delimiter(',')
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{86'400'000}));
  bool backoff_nack_only = false;
  app.add_flag("--backoff-nack-only", backoff_nack_only,
               "Apply --backoff-ms to NACKs only: an expired lease or a dead consumer redelivers at once");
  std::uint64_t message_ttl_ms = 0;
  app.add_option("--message-ttl-ms", message_ttl_ms,
                 "Time to live of a queued message from when it is stored: past it, it is not delivered "
                 "(see --expired); a message's own ferry-ttl-ms header wins; 0 (default) for none")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{315'360'000'000}));
  std::string expired = "dlq";
  app.add_option("--expired", expired,
                 "What becomes of an expired message: dlq (to <queue>.dlq, reason 'expired: ...'; default) "
                 "or drop")
      ->check(CLI::IsMember({"dlq", "drop"}));
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval clients are asked to use")
      ->check(CLI::Range(50, 60'000));
  app.add_option("--heartbeat-timeout-ms", heartbeat_timeout_ms,
                 "Silence after which a consumer is dead and its deliveries go to others")
      ->check(CLI::Range(100, 600'000));
  app.add_option("--dedup-window-ms", dedup_window_ms, "How long a message id is remembered to drop resends")
      ->check(CLI::Range(1000, 86'400'000));
  app.add_option("--dedup-max-ids", dedup_max_ids, "Most ids remembered per queue (48 bytes each)")
      ->check(CLI::Range(1000, 100'000'000));
  app.add_option("--dedup-retain-mb", dedup_retain_mb,
                 "Settled log kept per queue so the dedup window survives a restart")
      ->check(CLI::Range(0, 1'000'000));
  app.add_option("--max-message-bytes", max_message_bytes, "Largest payload accepted")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--max-queue-messages", max_queue_messages,
                 "Refuse (queue_full) beyond this many stored "
                 "messages per queue; 0 for no limit");
  app.add_option("--topic-retain-ms", topic_retain_ms,
                 "Delete a topic's oldest segment once its newest message is older than this; 0 keeps all");
  app.add_option("--topic-retain-mb", topic_retain_mb,
                 "Delete a topic's oldest segment while the rest still holds this much; 0 for no limit");
  app.add_option("--topic-retain-messages", topic_retain_messages,
                 "Delete a topic's oldest segment while the rest still holds this many messages; 0 for no "
                 "limit");
  app.add_option("--max-parked", max_parked, "Most messages held back per queue behind a busy key");
  app.add_option("--min-free-mb", min_free_mb,
                 "Refuse (disk_full) when the data directory has less free space");
  std::string metrics_listen;
  app.add_option("--metrics", metrics_listen,
                 "Serve Prometheus metrics on http://HOST:PORT/metrics and health on /healthz (e.g. "
                 "127.0.0.1:9464); off by default");
  std::string log_format = "text";
  app.add_option("--log-format", log_format,
                 "text (TIME LEVEL [ferry] message) or json (one object per line: time, level, logger, msg)")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error or off (default: $FERRY_LOG_LEVEL, else info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string message = e.what();
    if (const CLI::Option* config = app.get_config_ptr(); config != nullptr && config->count() > 0) {
      const std::string explained = explain_config_error(config->as<std::string>(), app, args, message);
      if (!explained.empty()) message = explained;
    }
    std::cerr << "ferryd: " << message << "\n(run ferryd --help for the options)\n";
    return exit_usage;
  }
  if (log_format == "json") ferry::set_log_format(ferry::log_format::json);
  if (!log_level.empty()) {
    ferry::log_level level = ferry::log_level::info;
    ferry::parse_log_level(log_level, level);
    ferry::set_log_level(level);
  }

  o.data_dir = data_dir;
  if (!bind.empty()) o.bind = bind;
  o.fsync = fsync == "interval" ? fsync_policy::interval : fsync_policy::always;
  o.fsync_interval = std::chrono::milliseconds(fsync_interval_ms);
  o.queue.segment_bytes = segment_mb << 20;
  o.queue.lease = std::chrono::milliseconds(lease_ms);
  o.queue.max_lease = std::chrono::milliseconds(std::max(max_lease_ms, lease_ms));
  o.queue.max_attempts = max_attempts;
  if (backoff_ms.size() > 100) {
    std::cerr << "ferryd: --backoff-ms takes at most 100 delays (the last one repeats)\n";
    return exit_usage;
  }
  for (const std::uint64_t ms : backoff_ms) o.queue.backoff.emplace_back(ms);
  o.queue.backoff_nack_only = backoff_nack_only;
  o.queue.message_ttl = std::chrono::milliseconds(message_ttl_ms);
  o.queue.drop_expired = expired == "drop";
  o.queue.max_messages = max_queue_messages;
  o.queue.max_parked = max_parked;
  o.queue.retain_age = std::chrono::milliseconds(topic_retain_ms);
  o.queue.retain_bytes = topic_retain_mb << 20;
  o.queue.retain_messages = topic_retain_messages;
  o.queue.dedup.max_age = std::chrono::milliseconds(dedup_window_ms);
  o.queue.dedup.max_ids = dedup_max_ids;
  o.queue.dedup_retain_bytes = dedup_retain_mb << 20;
  o.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  o.heartbeat_timeout = std::chrono::milliseconds(heartbeat_timeout_ms);
  o.max_message_bytes = max_message_bytes;
  o.min_free_bytes = min_free_mb << 20;
  if (o.heartbeat_timeout <= o.heartbeat_interval) {
    std::cerr << "ferryd: --heartbeat-timeout-ms must be larger than --heartbeat-ms\n";
    return exit_usage;
  }

  for (const auto& ep : o.feed) {
    if (ep.rfind("tcp://", 0) != 0 && ep.rfind("ipc://", 0) != 0 && ep.rfind("inproc://", 0) != 0) {
      std::cerr << "ferryd: --feed " << ep << ": use tcp://HOST:PORT or ipc://PATH\n";
      return exit_usage;
    }
  }
  for (const auto& ep : o.bind) {
    if (ep.rfind("tcp://", 0) != 0 && ep.rfind("ipc://", 0) != 0 && ep.rfind("inproc://", 0) != 0) {
      std::cerr << "ferryd: --bind " << ep << ": use tcp://HOST:PORT or ipc://PATH\n";
      return exit_usage;
    }
  }
  if (!check_config.empty()) {
    // Every option as it would be used, in the file's own format; the two config options left out.
    std::istringstream all(app.config_to_str(true, false));
    std::string line, out;
    while (std::getline(all, line)) {
      if (line.rfind("config=", 0) == 0 || line.rfind("check-config=", 0) == 0) continue;
      const auto eq = line.find('=');
      const std::string value = eq == std::string::npos ? std::string() : line.substr(eq + 1);
      if (value == "\"\"" || value == "\"[]\"") {
        out += "# " + line.substr(0, eq) + " is not set\n";  // an empty list or text: its default
        continue;
      }
      out += line + "\n";
    }
    std::cout << "# ferryd " << FERRY_VERSION << ": the settings " << check_config
              << " gives with these flags (flags win)\n"
              << out;
    std::error_code ec;
    if (!std::filesystem::is_directory(o.data_dir, ec))
      std::cerr << "ferryd: note: data-dir " << o.data_dir.string()
                << " is not a directory here; ferryd started with it would exit 3\n";
    std::cerr << "ferryd: " << check_config << " is valid\n";
    return 0;
  }

  // Block SIGTERM, SIGINT and SIGHUP before any thread starts: threads inherit the mask, so the signals
  // wait for the loop's signalfd instead of killing the process from whichever thread the kernel picks.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    // The metrics endpoint listens first, so /healthz says "recovering" while the forwarder recovers; it
    // stops using the forwarder before the forwarder goes.
    std::optional<metrics_http> metrics;
    if (!metrics_listen.empty()) metrics.emplace(metrics_listen);
    forwarder f(o);
    if (metrics) metrics->attach(f.local_context(), f.local_endpoint());
    struct detach_first {
      std::optional<metrics_http>& m;
      ~detach_first() {
        if (m) m->detach();
      }
    } guard{metrics};
    return f.run();
  } catch (const startup_error& e) {
    ferry::detail::logger().error("{}", e.what());
    return e.code();
  } catch (const std::exception& e) {
    ferry::detail::logger().critical("{}", e.what());
    return exit_runtime;
  }
}
