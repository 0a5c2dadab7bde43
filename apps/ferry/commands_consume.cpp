// ferry consume: messages of a ferryd queue through ferry::consumer, printed one per line and
// acknowledged once the line is written.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "commands.hpp"
#include "durable_flags.hpp"
#include "ferry/consumer.hpp"
#include "ferry/error.hpp"
#include "receive_session.hpp"

namespace ferry::cli {
namespace {

using std::chrono::milliseconds;
using ull = unsigned long long;  // for %llu

struct consume_flags {
  forwarder_flags where;
  // ferry subscribe: a topic's subscription
  bool topic = false;
  std::string durable;  // empty: ephemeral
  bool from_start = false;
  std::uint64_t from_seq = 0;
  std::string from_time;
  std::uint64_t count = 0;
  std::int64_t timeout_ms = 0;  // 0: not given
  std::int64_t prefetch = 64;
  std::string format = "text";
  bool stats = false;
};

// "2026-12-03T17:00:00Z", with optional fractional seconds and a Z or +HH:MM / -HH:MM offset.
std::chrono::system_clock::time_point parse_iso8601(const std::string& text) {
  auto bad = [&] {
    return usage_error("--from-time '" + text +
                       "' is not an ISO 8601 time like 2026-12-03T17:00:00Z or 2026-12-03T18:00:00.5+01:00");
  };
  std::tm tm{};
  const char* rest = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) throw bad();
  std::int64_t micros = 0;
  if (*rest == '.') {
    ++rest;
    int digits = 0;
    while (*rest >= '0' && *rest <= '9') {
      if (digits < 6) micros = micros * 10 + (*rest - '0');
      ++digits;
      ++rest;
    }
    if (digits == 0) throw bad();
    for (int d = digits; d < 6; ++d) micros *= 10;
  }
  std::int64_t offset_s = 0;
  if (*rest == 'Z') {
    ++rest;
  } else if (*rest == '+' || *rest == '-') {
    const int sign = *rest == '-' ? -1 : 1;
    int hh = 0, mm = 0;
    if (std::sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2 || hh > 23 || mm > 59) throw bad();
    offset_s = sign * (hh * 3600 + mm * 60);
    rest += 6;
  } else {
    throw bad();  // a time without a zone is ambiguous
  }
  if (*rest != '\0') throw bad();
  const std::int64_t seconds = static_cast<std::int64_t>(::timegm(&tm)) - offset_s;
  return std::chrono::system_clock::time_point(std::chrono::microseconds(seconds * 1'000'000 + micros));
}

ferry::topic_subscription subscription_of(const consume_flags& f) {
  const int starts = (f.from_start ? 1 : 0) + (f.from_seq != 0 ? 1 : 0) + (f.from_time.empty() ? 0 : 1);
  if (starts > 1) throw usage_error("give at most one of --from-start, --from-seq and --from-time");
  ferry::topic_subscription sub{f.where.queue, f.durable, {}};
  if (f.from_start) sub.start = ferry::start_position::first();
  if (f.from_seq != 0) sub.start = ferry::start_position::at_seq(f.from_seq);
  if (!f.from_time.empty()) sub.start = ferry::start_position::at_time(parse_iso8601(f.from_time));
  return sub;
}

int run_consume(const consume_flags& f) {
  check_forwarder_flags(f.where, f.topic ? queue_use::subscribe : queue_use::consume);
  const std::optional<ferry::topic_subscription> subscription =
      f.topic ? std::optional(subscription_of(f)) : std::nullopt;
  // A closed pipe (`ferry consume | head -3`) must end the run through a write error and a graceful stop,
  // which hands the rest back to ferryd; SIGPIPE would kill the process, and ferryd would count an
  // attempt for every message this consumer held once it is declared dead.
  ::signal(SIGPIPE, SIG_IGN);

  receive_session_options so;
  so.format = f.format == "json" ? output_format::json : output_format::text;
  so.count = f.count;
  if (f.timeout_ms > 0) so.idle_timeout = milliseconds(f.timeout_ms);
  so.unbuffered = true;  // acknowledged only once the line is out of this process
  so.print_after_stop = true;
  receive_session session(so);  // before any thread exists: it blocks SIGINT/SIGTERM

  ferry::context ctx;
  std::atomic<bool> ending{false};
  std::atomic<std::uint64_t> late{0};
  std::atomic<ferry::consumer*> self{nullptr};
  ferry::consumer_options options;
  options.threads = 1;  // lines come out in delivery order and never interleave
  std::uint64_t prefetch = static_cast<std::uint64_t>(f.prefetch);
  if (f.count != 0) prefetch = std::min(prefetch, f.count);  // take no more than will be printed
  options.prefetch = static_cast<std::uint32_t>(prefetch);

  // After the last line (or a failed write) the handler asks the consumer to take nothing more: what
  // it already received goes back to ferryd untouched at stop().
  auto finish_here = [&] {
    ending.store(true);
    ferry::consumer* c = nullptr;
    while ((c = self.load()) == nullptr) std::this_thread::yield();  // set right after construction
    c->request_stop();
  };
  auto handler = [&](ferry::message& msg) {
    if (ending.load()) {
      // Cannot happen with one handler thread; kept so a change there never prints past --count.
      late.fetch_add(1);
      throw std::runtime_error("ferry consume stopped before printing it");
    }
    if (!session.on_message(msg)) {
      finish_here();
      throw std::runtime_error("ferry consume could not write it to standard output");
    }
    if (f.count != 0 && session.printed() >= f.count) finish_here();
  };
  ferry::consumer consumer = subscription
                                 ? ferry::consumer(ctx, f.where.forwarder, *subscription, handler, options)
                                 : ferry::consumer(ctx, f.where.forwarder, f.where.queue, handler, options);
  self.store(&consumer);
  const stop_reason reason = session.wait();
  consumer.stop();

  const ferry::consumer_stats st = consumer.stats();
  const std::uint64_t answered = st.handled + st.failed + st.rejected + st.duplicates + st.malformed;
  const std::uint64_t handed_back = st.received > answered ? st.received - answered : 0;
  if (f.stats)
    std::fprintf(
        stderr, "ferry: received %llu, printed %llu, duplicates %llu, failed %llu, handed back %llu\n",
        static_cast<ull>(st.received), static_cast<ull>(session.printed()), static_cast<ull>(st.duplicates),
        static_cast<ull>(st.failed + st.malformed), static_cast<ull>(handed_back));
  if (late.load() > 0)
    std::fprintf(stderr,
                 "ferry: warning: %llu message(s) started after the stop were nacked (an attempt counted)\n",
                 static_cast<ull>(late.load()));
  session.finish();  // throws when writing failed
  if (reason == stop_reason::idle && !consumer.wait_ready(milliseconds(0)))
    throw ferry::error("ferryd at " + f.where.forwarder + " did not answer within " +
                       std::to_string(f.timeout_ms) + " ms");
  return exit_ok;
}

constexpr const char* consume_footer =
    "Prints each message as 'ferry pull' does: its payload (--format text) or a JSON object (--format json)\n"
    "with id, topic (the queue), key, headers, attempt (1 on the first delivery), timestamp and payload.\n"
    "\n"
    "Guarantee: at least once to the output. A message is acknowledged only after its line was written\n"
    "and flushed to stdout; a redelivery of a message already printed in this run is acknowledged without\n"
    "printing it again. On --count, --timeout-ms, SIGINT or SIGTERM it stops gracefully (status 0): "
    "messages\n"
    "received but not printed go back to ferryd without counting an attempt. If stdout fails (a closed\n"
    "pipe), the message being printed is nacked (an attempt counted) and the run ends with status 1.\n"
    "--timeout-ms ends with status 1 when ferryd never answered. --prefetch is capped at --count.\n"
    "\n"
    "Example:  ferry consume --forwarder tcp://127.0.0.1:5570 --queue jobs --count 10 --format json\n";

constexpr const char* subscribe_footer =
    "Prints each message of a ferryd topic as 'ferry consume' does (json adds the topic's sequence number "
    "as\n"
    "\"sequence\"), acknowledging it once its line is out. --durable NAME subscribes under a name ferryd\n"
    "remembers: run again with the same name, it resumes after the last message it acknowledged, also\n"
    "after a restart of ferryd; several processes with one name split the messages. Without --durable the\n"
    "subscription is ephemeral and ends with this run. --from-start, --from-seq N and --from-time TIME say\n"
    "where a new subscription starts (default: only new messages); an existing durable one ignores them.\n"
    "\n"
    "Example:  ferry subscribe --forwarder tcp://127.0.0.1:5570 --topic events --durable audit "
    "--from-start\n";

void add_consume_like(CLI::App& app, std::vector<command>& commands, bool topic) {
  auto f = std::make_shared<consume_flags>();
  f->topic = topic;
  CLI::App* cmd =
      topic ? app.add_subcommand("subscribe",
                                 "Subscribe to a ferryd topic, print one message per line, acknowledge")
            : app.add_subcommand("consume",
                                 "Take messages from a ferryd queue, print one per line, acknowledge");
  if (topic) {
    add_forwarder_flags(*cmd, f->where, "Topic to subscribe to (required)", "--topic");
    cmd->add_option("--durable", f->durable,
                    "Subscription NAME ferryd keeps the position of (default: ephemeral)")
        ->type_name("NAME");
    cmd->add_flag("--from-start", f->from_start, "A new subscription starts at the oldest retained message");
    cmd->add_option("--from-seq", f->from_seq, "A new subscription starts at sequence number N")
        ->type_name("N")
        ->check(whole_number(1, max_count));
    cmd->add_option("--from-time", f->from_time,
                    "A new subscription starts at the first message stored at or after TIME (ISO 8601)")
        ->type_name("TIME");
  } else {
    add_forwarder_flags(*cmd, f->where, "Queue to consume (required)");
  }
  cmd->add_option("-c,--count", f->count, "Exit after printing N messages; the rest stay in the queue")
      ->type_name("N")
      ->check(whole_number(1, max_count));
  add_timeout_flag(*cmd, f->timeout_ms, "Exit when no message arrived for MS milliseconds");
  add_format_flag(*cmd, f->format, "text (the payload, one per line) or json (one object per line)");
  cmd->add_option("--prefetch", f->prefetch, "Hold at most N unacknowledged messages (default 64)")
      ->type_name("N")
      ->check(whole_number(1, 100'000));
  cmd->add_flag("--stats", f->stats,
                "Print received, printed, duplicates, failed and handed back on stderr at exit");
  cmd->footer(topic ? subscribe_footer : consume_footer);
  commands.push_back({cmd, [f] { return run_consume(*f); }});
}

}  // namespace

void add_consume_command(CLI::App& app, std::vector<command>& commands) {
  add_consume_like(app, commands, false);
}

void add_subscribe_command(CLI::App& app, std::vector<command>& commands) {
  add_consume_like(app, commands, true);
}

}  // namespace ferry::cli
