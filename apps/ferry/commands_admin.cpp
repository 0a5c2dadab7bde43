// ferry dlq (list, replay, purge) and ferry stats: administering ferryd through ferry::admin. stats
// prints the fields of the STATS schema (lib/detail/stats_schema.hpp), text and JSON alike.

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
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
  const ferry::dlq_listing listing =
      admin.dlq_list(f.where.queue, static_cast<std::uint64_t>(f.limit), milliseconds(f.timeout_ms));
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

int run_dlq_change(const dlq_flags& f, dlq_change op) {
  check_forwarder_flags(f.where, queue_use::dlq);
  ferry::context ctx;
  ferry::admin admin(ctx, f.where.forwarder);
  const auto limit = static_cast<std::uint64_t>(f.limit);
  const std::uint64_t done = op == dlq_change::replay
                                 ? admin.dlq_replay(f.where.queue, limit, milliseconds(f.timeout_ms))
                                 : admin.dlq_purge(f.where.queue, limit, milliseconds(f.timeout_ms));
  write_stdout(std::to_string(done) + "\n");
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
    "dead letters are looked at, oldest first (ferryd looks at no more than 10000 for list, 1000000 for\n"
    "replay and purge); messages delivered to a consumer of QUEUE.dlq are skipped. No answer within\n"
    "--timeout-ms gives status 1; a replay or purge may still have been carried out then.\n";

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
      cmd->add_option("--limit", f->limit, "Look at no more than N dead letters, oldest first (default 100)")
          ->type_name("N")
          ->check(whole_number(1, 1'000'000));
      add_timeout_flag(*cmd, f->timeout_ms, "Fail when ferryd does not answer within MS (default 5000)");
      if (!o.change) {
        add_format_flag(*cmd, f->format, "text (tab-separated fields) or json (one object per line)");
        cmd->footer(std::string(dlq_list_footer) + "\n" + dlq_footer);
        commands.push_back({cmd, [f] { return run_dlq_list(*f); }});
      } else {
        cmd->footer(dlq_footer);
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
