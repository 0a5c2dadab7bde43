// ferry dlq (list, replay, purge) and ferry stats: administering ferryd through ferry::admin. stats
// prints the fields of the STATS schema (lib/detail/stats_schema.hpp), text and JSON alike.

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "commands.hpp"
#include "detail/stats_schema.hpp"
#include "durable_flags.hpp"
#include "ferry/admin.hpp"
#include "ferry/error.hpp"
#include "output.hpp"

namespace ferry::cli {
namespace {

namespace schema = ferry::detail::stats_schema;
using std::chrono::milliseconds;
using ull = unsigned long long;  // for %llu

constexpr std::int64_t default_admin_timeout_ms = 5'000;

void write_stdout(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    throw ferry::error(std::string("cannot write to standard output: ") + std::strerror(errno));
}

// A 64-bit id as 16 hex digits, as the text table shows it.
void append_hex16(std::string& out, std::uint64_t value) {
  char buf[24];
  const int n = std::snprintf(buf, sizeof buf, "%016llx", static_cast<ull>(value));
  out.append(buf, static_cast<std::size_t>(n));
}

void append_number(std::string& out, double value) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  if (ec != std::errc() || value != value || value - value != 0) {  // NaN and infinities are not JSON
    out += "null";
    return;
  }
  out.append(buf, end);
}

// ---- dlq ------------------------------------------------------------------------------------------------

struct dlq_flags {
  forwarder_flags where;
  std::int64_t limit = 100;
  bool all = false;
  std::string reason;
  std::string rate;  // "N" or "N/s"; "" unpaced
  std::int64_t timeout_ms = default_admin_timeout_ms;
  std::string format = "text";
};

// Text fields are separated by tabs; these escapes keep each dead letter on one line.
void append_escaped(std::string& out, std::string_view text) {
  for (const char c : text) {
    switch (c) {
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        out += c;
    }
  }
}

std::string header_value(const ferry::dead_letter& d, const std::string& name) {
  const auto it = d.headers.find(name);
  return it != d.headers.end() ? it->second : std::string();
}

void append_dead_letter(std::string& out, const ferry::dead_letter& d, std::string_view dlq_name, bool json) {
  const std::string id = d.id.is_nil() ? std::string() : d.id.to_hex();  // nil: ferryd could not read it
  if (!json) {
    out += id;
    out += '\t';
    append_escaped(out, header_value(d, "ferry-attempts"));
    out += '\t';
    append_escaped(out, header_value(d, "ferry-dead-letter-reason"));
    out += '\t';
    append_escaped(out, d.payload);
    out += '\n';
    return;
  }
  out += "{\"id\":\"";
  out += id;
  out += "\",\"seq\":";
  out += std::to_string(d.seq);
  out += ",\"queue\":";
  append_json_string(out, dlq_name);
  out += ",\"key\":";
  append_json_string(out, d.key);
  out += ",\"headers\":";
  append_json_headers(out, d.headers);
  out += ",\"timestamp\":";
  out += std::to_string(d.timestamp_us);
  out += ",\"stored_at\":";
  out += std::to_string(d.stored_at_us);
  out += ',';
  append_json_payload(out, d.payload);
  out += "}\n";
}

int run_dlq_list(const dlq_flags& f) {
  check_forwarder_flags(f.where, queue_use::dlq);
  ferry::context ctx;
  ferry::admin admin(ctx, f.where.forwarder);
  const ferry::dlq_listing listing = admin.dlq_list(
      f.where.queue, ferry::dlq_filter{.limit = static_cast<std::uint64_t>(f.limit), .reason = f.reason},
      milliseconds(f.timeout_ms));
  std::string out;
  for (const auto& d : listing.messages) append_dead_letter(out, d, listing.queue, f.format == "json");
  write_stdout(out);
  if (listing.messages.size() < listing.depth)
    std::fprintf(stderr, "ferry: %s holds %llu dead letters; %llu listed (see --limit)\n",
                 listing.queue.c_str(), static_cast<ull>(listing.depth),
                 static_cast<ull>(listing.messages.size()));
  return exit_ok;
}

enum class dlq_change { replay, purge };

// --rate: "N" or "N/s", N from 1 to 1,000,000 messages a second.
double parse_rate(const std::string& text) {
  std::string_view digits(text);
  if (digits.size() > 2 && digits.substr(digits.size() - 2) == "/s") digits.remove_suffix(2);
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size() || n < 1 || n > 1'000'000)
    throw usage_error("--rate: '" + text +
                      "' is not a rate; give messages per second, 1 to 1000000 (e.g. 100/s)");
  return static_cast<double>(n);
}

// Replay or purge: one request per step, each going on where the last stopped (so a dead letter is looked
// at once, and ones that come back while it runs are left for next time), paced by --rate. Prints the
// count on stdout; progress on stderr each second once it has run a second.
int run_dlq_change(const dlq_flags& f, dlq_change op) {
  check_forwarder_flags(f.where, queue_use::dlq);
  const double rate = f.rate.empty() ? 0 : parse_rate(f.rate);
  // SIGINT and SIGTERM stop it between two requests: blocked before any thread exists (the context's
  // threads inherit the mask), taken while it waits.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  const auto take_signal = [&](std::chrono::steady_clock::duration wait) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(wait, {})).count();
    const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    return sigtimedwait(&stop_signals, nullptr, &ts);  // the signal, or -1
  };

  ferry::context ctx;
  ferry::admin admin(ctx, f.where.forwarder);
  const std::uint64_t total = f.all ? ~0ull : static_cast<std::uint64_t>(f.limit);
  // Paced: about ten requests a second, so the rate holds within a tenth of a second.
  const std::uint64_t step =
      rate > 0 ? std::clamp<std::uint64_t>(static_cast<std::uint64_t>(rate / 10), 1, 100'000) : 1'000'000;
  const char* verb = op == dlq_change::replay ? "replayed" : "purged";
  const std::string dlq_name = f.where.queue + ".dlq";
  ferry::dlq_filter filter{.reason = f.reason};
  std::uint64_t done = 0;
  std::uint64_t depth = 0;
  int signal = -1;
  const auto start = std::chrono::steady_clock::now();
  auto reported = start;
  bool first = true;
  try {
    while (done < total) {
      if (rate > 0) {
        // The next one may go when `done` of them have taken their share of the time.
        const auto due = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(static_cast<double>(done) / rate));
        signal = take_signal(due - std::chrono::steady_clock::now());
      } else {
        signal = take_signal({});
      }
      if (signal > 0) break;
      filter.limit = std::min(total - done, step);
      const ferry::dlq_result r = op == dlq_change::replay
                                      ? admin.dlq_replay(f.where.queue, filter, milliseconds(f.timeout_ms))
                                      : admin.dlq_purge(f.where.queue, filter, milliseconds(f.timeout_ms));
      done += r.done;
      depth = r.depth;
      if (first) {
        // Only the dead letters there were at the start: ones that fail again come back with later seqs.
        filter.before_seq = r.end_seq;
        first = false;
      }
      filter.from_seq = r.position.next_seq;
      if (!r.position.more) break;
      const auto now = std::chrono::steady_clock::now();
      if (now - reported >= std::chrono::seconds(1)) {
        reported = now;
        const double seconds = std::chrono::duration<double>(now - start).count();
        std::fprintf(stderr, "ferry: %s %llu (%.0f/s); %s holds %llu\n", verb, static_cast<ull>(done),
                     static_cast<double>(done) / seconds, dlq_name.c_str(), static_cast<ull>(depth));
      }
    }
  } catch (const ferry::error&) {
    if (done > 0) write_stdout(std::to_string(done) + "\n");  // what was carried out before it failed
    throw;
  }
  write_stdout(std::to_string(done) + "\n");
  if (signal > 0) {
    std::fprintf(stderr,
                 "ferry: stopped by %s after %llu %s; the same command goes on with what is left (a dead "
                 "letter moved once is not moved again)\n",
                 signal == SIGINT ? "SIGINT" : "SIGTERM", static_cast<ull>(done), verb);
    return 128 + signal;
  }
  return exit_ok;
}

// ---- stats ----------------------------------------------------------------------------------------------

struct stats_flags {
  forwarder_flags where;
  std::int64_t timeout_ms = default_admin_timeout_ms;
  std::string format = "text";
};

void append_row(std::string& out, std::string_view label, const std::string& value, int indent) {
  char buf[64];
  const int n = std::snprintf(buf, sizeof buf, "%*s%-*.*s", indent, "", 18 - indent,
                              static_cast<int>(label.size()), label.data());
  out.append(buf, static_cast<std::size_t>(n));
  out += value;
  out += '\n';
}

// A forwarder field as the text table shows it: an id in hex, seconds with their unit (a counter of
// seconds, compared between samples, to the millisecond).
std::string text_value(const ferry::forwarder_stats& stats, const schema::forwarder_field& f) {
  return std::visit(
      [&](auto member) -> std::string {
        const auto& v = stats.*member;
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return v.empty() ? "?" : v;
        } else if constexpr (std::is_same_v<T, double>) {
          char buf[48];
          std::snprintf(buf, sizeof buf, "%.*f%s", f.kind == schema::field_kind::counter ? 3 : 1, v,
                        f.unit == "seconds" ? " s" : "");
          return buf;
        } else {
          std::string out;
          if (f.unit == "id") {
            append_hex16(out, v);
          } else {
            out = std::to_string(v);
          }
          return out;
        }
      },
      f.member);
}

void append_json_value(std::string& out, const ferry::forwarder_stats& stats,
                       const schema::forwarder_field& f) {
  std::visit(
      [&](auto member) {
        const auto& v = stats.*member;
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          append_json_string(out, v);
        } else if constexpr (std::is_same_v<T, double>) {
          append_number(out, v);
        } else if (f.unit == "id") {
          append_json_hex64(out, v);
        } else {
          out += std::to_string(v);
        }
      },
      f.member);
}

using queue_list = std::vector<std::pair<std::string, const ferry::queue_stats*>>;

void append_stats_text(std::string& out, const ferry::forwarder_stats& stats, const queue_list& queues) {
  for (const auto& f : schema::forwarder_fields) append_row(out, f.label, text_value(stats, f), 0);
  if (queues.empty()) out += "\nno queues\n";
  for (const auto& [name, q] : queues) {
    out += "\nqueue ";
    out += name;
    out += '\n';
    for (const auto& f : schema::queue_fields) append_row(out, f.label, std::to_string(q->*f.member), 2);
  }
  for (const auto& [name, t] : stats.topics) {
    out += "\ntopic ";
    out += name;
    out += '\n';
    for (const auto& f : schema::topic_fields) append_row(out, f.label, std::to_string(t.*f.member), 2);
  }
}

void append_stats_json(std::string& out, const ferry::forwarder_stats& stats, const queue_list& queues) {
  out += '{';
  for (const auto& f : schema::forwarder_fields) {
    append_json_string(out, f.name);
    out += ':';
    append_json_value(out, stats, f);
    out += ',';
  }
  out += "\"queues\":{";
  for (std::size_t i = 0; i < queues.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, queues[i].first);
    out += ":{";
    for (std::size_t j = 0; j < schema::queue_fields.size(); ++j) {
      const auto& f = schema::queue_fields[j];
      if (j > 0) out += ',';
      append_json_string(out, f.name);
      out += ':';
      out += std::to_string(queues[i].second->*f.member);
    }
    out += '}';
  }
  out += "},\"topics\":{";
  bool first_topic = true;
  for (const auto& [name, t] : stats.topics) {
    if (!first_topic) out += ',';
    first_topic = false;
    append_json_string(out, name);
    out += ":{";
    for (std::size_t j = 0; j < schema::topic_fields.size(); ++j) {
      const auto& f = schema::topic_fields[j];
      if (j > 0) out += ',';
      append_json_string(out, f.name);
      out += ':';
      out += std::to_string(t.*f.member);
    }
    out += '}';
  }
  out += "}}\n";
}

int run_stats(const stats_flags& f) {
  check_forwarder_flags(f.where, queue_use::stats);
  ferry::context ctx;
  ferry::admin admin(ctx, f.where.forwarder);
  const ferry::forwarder_stats stats = admin.stats(milliseconds(f.timeout_ms));
  queue_list queues;  // by name: jobs next to jobs.dlq
  for (const auto& [name, q] : stats.queues)
    if (!f.where.queue_given || name == f.where.queue) queues.emplace_back(name, &q);
  if (f.where.queue_given && queues.empty())
    throw ferry::error("ferryd at " + f.where.forwarder + " has no queue " + f.where.queue +
                       " (queues are made by the first send or consume)");
  std::string out;
  if (f.format == "json") {
    append_stats_json(out, stats, queues);
  } else {
    append_stats_text(out, stats, queues);
  }
  write_stdout(out);
  return exit_ok;
}

constexpr const char* dlq_footer =
    "A message goes to the dead-letter queue QUEUE.dlq when its handler rejected it or after ferryd's\n"
    "--max-attempts deliveries. Give the source queue (--queue jobs for jobs.dlq). --limit bounds how many\n"
    "dead letters are acted on, oldest first (list shows at most 10000); --reason TEXT takes only those\n"
    "whose reason contains TEXT; messages delivered to a consumer of QUEUE.dlq are skipped. No answer\n"
    "within --timeout-ms gives status 1; a replay or purge may still have been carried out then.\n";

constexpr const char* dlq_change_footer =
    "Replay and purge go through the dead letters there were when they started, oldest first, in steps:\n"
    "--rate N/s paces them (about ten steps a second) and --all takes every one instead of --limit. After\n"
    "a second, progress goes to stderr each second. SIGINT or SIGTERM stops between two steps (status\n"
    "130 or 143) and prints how many were done; running the command again goes on with what is left:\n"
    "each dead letter is settled once its replayed copy is durable, and is never replayed twice by two\n"
    "requests at once. A replayed message that fails again is a new dead letter, left for the next run.\n";

constexpr const char* dlq_list_footer =
    "text: one line per dead letter, tab-separated: id (32 hex digits), attempts, reason, payload; tabs,\n"
    "newlines, carriage returns and backslashes in reason and payload are written \\t \\n \\r \\\\.\n"
    "json: one object per line with id, seq (position in QUEUE.dlq), queue, key, headers (ferry-attempts,\n"
    "ferry-dead-letter-reason and ferry-source-queue among them), timestamp (when the message was made)\n"
    "and stored_at (when it was dead-lettered), Unix microseconds, and payload as 'ferry pull' prints it.\n"
    "When QUEUE.dlq holds more than were listed, stderr says so.\n";

constexpr const char* stats_footer =
    "text: ferryd's server, instance, uptime, group commits, fsyncs and the seconds spent in them, and\n"
    "malformed frames (bad input dropped), then a table per queue (dead-letter queues included): depth\n"
    "(stored, not yet settled), in flight, parked (behind a busy key), consumers, disk bytes, and counters\n"
    "since ferryd started: confirmed, delivered, acked, nacked, redelivered, expired (leases),\n"
    "dead-lettered, deduplicated (resends), refused, rejected (by a handler), stale acks.\n"
    "json: the same fields as one JSON object, under their STATS names (docs/protocol.md, STATS);\n"
    "instance is 16 hex digits.\n"
    "\n"
    "Health check: status 0 when ferryd answered; status 1 and 'ferryd at ENDPOINT did not answer within\n"
    "N ms' when it did not, e.g.  ferry stats --forwarder tcp://127.0.0.1:5570 --timeout-ms 1000 "
    ">/dev/null\n";

}  // namespace

void add_admin_commands(CLI::App& app, std::vector<command>& commands) {
  {
    CLI::App* dlq = app.add_subcommand("dlq", "List, replay or purge a ferryd queue's dead letters");
    // (0, 1) and a check of our own, as at the top level: "frob" is then reported as not expected.
    dlq->require_subcommand(0, 1);
    dlq->footer(dlq_footer);
    struct op {
      const char* name;
      const char* help;
      std::optional<dlq_change> change;  // none: list
    };
    for (const op o :
         {op{"list", "Print the dead letters, oldest first", std::nullopt},
          op{"replay", "Move dead letters back to their queue; prints how many", dlq_change::replay},
          op{"purge", "Delete dead letters; prints how many", dlq_change::purge}}) {
      auto f = std::make_shared<dlq_flags>();
      CLI::App* cmd = dlq->add_subcommand(o.name, o.help);
      add_forwarder_flags(*cmd, f->where, "The queue whose dead letters to use, without .dlq (required)");
      CLI::Option* limit = cmd->add_option("--limit", f->limit,
                                           "Act on no more than N dead letters, oldest first (default 100)")
                               ->type_name("N")
                               ->check(whole_number(1, o.change ? 1'000'000'000'000 : 10'000));
      cmd->add_option("--reason", f->reason, "Only dead letters whose reason contains TEXT")
          ->type_name("TEXT")
          ->check(CLI::Validator(
              [](const std::string& text) {
                return text.size() > 1024 ? std::string("at most 1024 bytes") : std::string();
              },
              ""));
      add_timeout_flag(*cmd, f->timeout_ms, "Fail when ferryd does not answer within MS (default 5000)");
      if (!o.change) {
        add_format_flag(*cmd, f->format, "text (tab-separated fields) or json (one object per line)");
        cmd->footer(std::string(dlq_list_footer) + "\n" + dlq_footer);
        commands.push_back({cmd, [f] { return run_dlq_list(*f); }});
      } else {
        cmd->add_flag("--all", f->all, "Every dead letter there is when it starts (instead of --limit)")
            ->excludes(limit);
        cmd->add_option("--rate", f->rate, "At most N a second (e.g. 100/s); default: as fast as ferryd goes")
            ->type_name("N/s");
        cmd->footer(std::string(dlq_change_footer) + "\n" + dlq_footer);
        commands.push_back({cmd, [f, change = *o.change] { return run_dlq_change(*f, change); }});
      }
    }
    // After the operations: main runs the first parsed command, and `dlq` is parsed with each of them.
    commands.push_back({dlq, []() -> int { throw usage_error("give an operation: list, replay or purge"); }});
  }
  {
    auto f = std::make_shared<stats_flags>();
    CLI::App* cmd = app.add_subcommand("stats", "Print ferryd's queues and counters; a health check");
    add_forwarder_flags(*cmd, f->where, "Show only this queue");
    add_format_flag(*cmd, f->format, "text (a table per queue) or json (the STATS fields)");
    add_timeout_flag(*cmd, f->timeout_ms, "Fail when ferryd does not answer within MS (default 5000)");
    cmd->footer(stats_footer);
    commands.push_back({cmd, [f] { return run_stats(*f); }});
  }
}

}  // namespace ferry::cli
