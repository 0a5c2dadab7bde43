// send, consume, dlq and stats: durable queues through ferryd from the command line, with
// ferry::producer, ferry::consumer and ferry::admin.

#include <signal.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

#include "commands.hpp"
#include "detail/forwarder_protocol.hpp"
#include "detail/stats_schema.hpp"
#include "ferry/admin.hpp"
#include "ferry/consumer.hpp"
#include "ferry/error.hpp"
#include "ferry/producer.hpp"
#include "receive_session.hpp"

namespace ferry::cli {
namespace {

namespace fwd = ferry::detail::fwd;
namespace schema = ferry::detail::stats_schema;
using std::chrono::milliseconds;

constexpr std::int64_t default_confirm_timeout_ms = 30'000;
constexpr std::int64_t default_admin_timeout_ms = 5'000;

using ull = unsigned long long;

// ---- flags every durable command shares ----------------------------------------------------------------

struct forwarder_flags {
  std::string forwarder;
  std::string queue;
  bool queue_given = false;  // so that --queue "" is reported as invalid, not as missing
};

enum class queue_use { send, consume, dlq, stats };

void add_forwarder_flags(CLI::App& cmd, forwarder_flags& f, const std::string& queue_help) {
  // Checked in check_forwarder_flags() rather than with required(), as in the brokerless commands: an
  // unknown flag is the more useful complaint.
  cmd.add_option("--forwarder", f.forwarder, "ferryd's ENDPOINT, e.g. tcp://127.0.0.1:5570 (required)")
      ->type_name("ENDPOINT");
  cmd.add_option("--queue", f.queue, queue_help)->type_name("QUEUE")->each([&f](const std::string&) {
    f.queue_given = true;
  });
}

void check_forwarder_flags(const forwarder_flags& f, queue_use use) {
  if (f.forwarder.empty())
    throw usage_error("--forwarder is required (ferryd's endpoint, e.g. tcp://127.0.0.1:5570)");
  if (!f.queue_given) {
    if (use == queue_use::stats) return;  // optional there
    throw usage_error("--queue is required");
  }
  if (!fwd::valid_queue_name(f.queue))
    throw usage_error("--queue '" + f.queue +
                      "' is not a queue name: 1-200 characters of A-Z a-z 0-9 . _ - not starting with '.'");
  if (fwd::is_dlq_name(f.queue) && use == queue_use::send)
    throw usage_error("--queue " + f.queue + " is a dead-letter queue; only ferryd writes those");
  if (fwd::is_dlq_name(f.queue) && use == queue_use::dlq)
    throw usage_error("--queue takes the source queue: --queue " +
                      f.queue.substr(0, f.queue.size() - fwd::dlq_suffix.size()) + " for " + f.queue);
}

void add_timeout_flag(CLI::App& cmd, std::int64_t& timeout_ms, const std::string& help) {
  cmd.add_option("--timeout-ms", timeout_ms, help)->type_name("MS")->check(whole_number(1, max_int));
}

void add_format_flag(CLI::App& cmd, std::string& format, const std::string& help) {
  cmd.add_option("-F,--format", format, help)->type_name("FORMAT")->check(CLI::IsMember({"text", "json"}));
}

// ---- send ------------------------------------------------------------------------------------------------

struct send_flags {
  forwarder_flags where;
  message_flags message;  // --key, --header; the topic is the queue
  std::string file;
  std::string id_file;
  std::uint64_t count = 0;
  std::int64_t timeout_ms = default_confirm_timeout_ms;
  bool stats = false;
};

// What became of each input line. The producer reports confirmations and refusals on its I/O thread
// while the main thread sends, so everything here is guarded by one mutex.
//
// --id-file lines are written in line order: a confirmed line waits in `ahead_` until every line before
// it is settled, which holds at most the producer's window of lines.
class line_tracker {
 public:
  explicit line_tracker(std::FILE* id_out) : id_out_(id_out) {}

  // Before send(): a confirmation may arrive before send() returns.
  void sending(const ferry::message_id& id, std::uint64_t line) {
    std::lock_guard lock(mutex_);
    lines_.emplace(id, line);
  }

  // send() refused the message itself (too large): a refusal like ferryd's, reported the same way.
  void refused_here(const ferry::message_id& id, const std::string& text) {
    on_refuse(ferry::refusal{id, std::string(fwd::code::too_large), text});
  }

  // send() failed for lack of room: the line was not sent and stays unsettled.
  void not_sent(const ferry::message_id& id) {
    std::lock_guard lock(mutex_);
    lines_.erase(id);
  }

  void on_confirm(const ferry::message_id& id) {
    std::lock_guard lock(mutex_);
    const auto it = lines_.find(id);
    if (it == lines_.end()) return;
    const std::uint64_t line = it->second;
    lines_.erase(it);
    ++confirmed_;
    settle(line, id);
  }

  void on_refuse(const ferry::refusal& r) {
    std::lock_guard lock(mutex_);
    const auto it = lines_.find(r.id);
    if (it == lines_.end()) return;
    const std::uint64_t line = it->second;
    lines_.erase(it);
    ++refused_;
    std::fprintf(stderr, "ferry: line %llu (id %s) refused: %s: %s\n", static_cast<ull>(line),
                 r.id.to_hex().c_str(), r.code.c_str(), r.text.c_str());
    settle(line, std::nullopt);
  }

  // After the producer is gone: writes the confirmed lines still waiting behind unconfirmed ones.
  void finish() {
    std::lock_guard lock(mutex_);
    for (const auto& [line, id] : ahead_)
      if (id) write_id(line, *id);
    ahead_.clear();
  }

  [[nodiscard]] std::uint64_t confirmed() {
    std::lock_guard lock(mutex_);
    return confirmed_;
  }
  [[nodiscard]] std::uint64_t refused() {
    std::lock_guard lock(mutex_);
    return refused_;
  }
  // The lowest line sent and neither confirmed nor refused.
  [[nodiscard]] std::optional<std::uint64_t> first_unsettled() {
    std::lock_guard lock(mutex_);
    std::optional<std::uint64_t> first;
    for (const auto& [id, line] : lines_)
      if (!first || line < *first) first = line;
    return first;
  }

 private:
  void settle(std::uint64_t line, const std::optional<ferry::message_id>& id) {
    if (line != next_line_) {
      ahead_.emplace(line, id);
      return;
    }
    if (id) write_id(line, *id);
    ++next_line_;
    for (auto it = ahead_.begin(); it != ahead_.end() && it->first == next_line_; it = ahead_.erase(it)) {
      if (it->second) write_id(it->first, *it->second);
      ++next_line_;
    }
  }

  void write_id(std::uint64_t line, const ferry::message_id& id) {
    if (id_out_ != nullptr) std::fprintf(id_out_, "%llu %s\n", static_cast<ull>(line), id.to_hex().c_str());
  }

  std::mutex mutex_;
  std::FILE* id_out_;
  std::unordered_map<ferry::message_id, std::uint64_t> lines_;       // in flight: id -> line
  std::map<std::uint64_t, std::optional<ferry::message_id>> ahead_;  // settled after a line still open
  std::uint64_t next_line_ = 1;
  std::uint64_t confirmed_ = 0;
  std::uint64_t refused_ = 0;
};

// The --id-file: standard output for "-", else a file created (or truncated) before anything is sent.
class id_file {
 public:
  explicit id_file(const std::string& path) : path_(path) {
    if (path.empty()) return;
    if (path == "-") {
      file_ = stdout;
      return;
    }
    file_ = std::fopen(path.c_str(), "we");
    if (file_ == nullptr) throw ferry::error("cannot open --id-file " + path + ": " + std::strerror(errno));
  }
  ~id_file() {
    if (file_ != nullptr && file_ != stdout) std::fclose(file_);
  }
  id_file(const id_file&) = delete;
  id_file& operator=(const id_file&) = delete;

  [[nodiscard]] std::FILE* get() const noexcept { return file_; }

  // Flushes and closes. Throws ferry::error when any write failed.
  void close() {
    if (file_ == nullptr) return;
    const bool failed = std::ferror(file_) != 0 || std::fflush(file_) != 0;
    const int err = errno;
    const bool close_failed = file_ != stdout && std::fclose(file_) != 0;
    file_ = nullptr;
    if (failed || close_failed)
      throw ferry::error("cannot write --id-file " + path_ + ": " + std::strerror(err != 0 ? err : EIO));
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

int run_send(const send_flags& f) {
  check_forwarder_flags(f.where, queue_use::send);
  message_flags fields = f.message;
  fields.topic = f.where.queue;
  fields.topic_given = true;
  fields.check();
  line_reader input(f.file);  // an unreadable file or --id-file fails before anything is sent
  id_file ids(f.id_file);

  ferry::context ctx;
  line_tracker tracker(ids.get());
  ferry::producer_options options;
  options.send_timeout = milliseconds(f.timeout_ms);  // a full window means ferryd confirms nothing
  std::uint64_t lines = 0;
  std::optional<std::uint64_t> stalled_at;  // the line that found no room in the window
  bool settled = false;
  ferry::producer_stats stats;
  {
    ferry::producer producer(
        ctx, f.where.forwarder, options, [&](const ferry::message_id& id) { tracker.on_confirm(id); },
        [&](const ferry::refusal& r) { tracker.on_refuse(r); });
    std::string line;
    while ((f.count == 0 || lines < f.count) && input.next(line)) {
      ++lines;
      ferry::message msg = fields.make(line);
      tracker.sending(msg.id(), lines);
      const std::size_t payload_size = msg.payload().size();
      const ferry::send_status status = producer.send(msg);
      if (status == ferry::send_status::ok) continue;
      if (status == ferry::send_status::too_large) {
        tracker.refused_here(msg.id(), payload_size > options.max_payload
                                           ? "payload of " + std::to_string(payload_size) +
                                                 " bytes is over the " + std::to_string(options.max_payload) +
                                                 " bytes ferry send accepts"
                                           : "key and headers make an envelope over the 64 KiB limit");
        continue;
      }
      tracker.not_sent(msg.id());
      stalled_at = lines;
      --lines;
      break;
    }
    settled = producer.flush(stalled_at ? milliseconds(0) : milliseconds(f.timeout_ms));
    stats = producer.stats();
  }  // no handler runs after this
  tracker.finish();
  ids.close();

  const std::uint64_t refused = tracker.refused();
  const std::uint64_t confirmed = tracker.confirmed();
  const std::uint64_t unconfirmed = lines - refused - confirmed;
  if (f.stats)
    std::fprintf(stderr, "ferry: sent %llu, confirmed %llu, refused %llu, resent %llu\n",
                 static_cast<ull>(stats.sent), static_cast<ull>(confirmed), static_cast<ull>(refused),
                 static_cast<ull>(stats.resent));
  bool ok = true;
  if (refused > 0) {
    std::fprintf(stderr, "ferry: %llu of %llu lines refused\n", static_cast<ull>(refused),
                 static_cast<ull>(lines));
    ok = false;
  }
  const std::string silent =
      stats.forwarder_up ? "" : " (ferryd at " + f.where.forwarder + " did not answer)";
  if (stalled_at) {
    std::fprintf(
        stderr,
        "ferry: stopped before line %llu: %llu messages stayed unconfirmed for %lld ms%s; the rest of "
        "the input was not sent\n",
        static_cast<ull>(*stalled_at), static_cast<ull>(options.max_in_flight),
        static_cast<long long>(f.timeout_ms), silent.c_str());
    ok = false;
  }
  if (!settled && unconfirmed > 0) {
    const auto first = tracker.first_unsettled();
    std::fprintf(
        stderr,
        "ferry: %llu of %llu lines not confirmed within %lld ms%s, the first is line %llu; they may or "
        "may not be stored\n",
        static_cast<ull>(unconfirmed), static_cast<ull>(lines), static_cast<long long>(f.timeout_ms),
        silent.c_str(), static_cast<ull>(first.value_or(0)));
    ok = false;
  }
  return ok ? exit_ok : exit_failure;
}

// ---- consume ---------------------------------------------------------------------------------------------

struct consume_flags {
  forwarder_flags where;
  std::uint64_t count = 0;
  std::int64_t timeout_ms = 0;  // 0: not given
  std::int64_t prefetch = 64;
  std::string format = "text";
  bool stats = false;
};

int run_consume(const consume_flags& f) {
  check_forwarder_flags(f.where, queue_use::consume);
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
  ferry::consumer consumer(ctx, f.where.forwarder, f.where.queue, handler, options);
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

// ---- dlq and stats: ferry::admin ------------------------------------------------------------------------

void write_stdout(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    throw ferry::error(std::string("cannot write to standard output: ") + std::strerror(errno));
}

// A 64-bit id as 16 hex digits, as output.hpp writes a message's origin: most JSON parsers would round it
// as a number.
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

// A payload as output.hpp prints it: a JSON string when it is UTF-8, else base64 and "payload_base64".
void append_json_payload(std::string& out, std::string_view payload) {
  out += "\"payload\":";
  if (is_valid_utf8(payload)) {
    append_json_string(out, payload);
    return;
  }
  out += '"';
  append_base64(out, payload);
  out += "\",\"payload_base64\":true";
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
  out += ",\"headers\":{";
  bool first = true;
  for (const auto& [name, value] : d.headers) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, name);
    out += ':';
    append_json_string(out, value);
  }
  out += "},\"timestamp\":";
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
          out += '"';
          append_hex16(out, v);
          out += '"';
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

// ---- help ----------------------------------------------------------------------------------------------

constexpr const char* send_footer =
    "Guarantee: a confirmed line is on ferryd's disk (fsynced, unless ferryd runs with --fsync interval)\n"
    "and will be delivered at least once; consumers drop repeats by id. Each line becomes one message with\n"
    "a fresh id; unconfirmed messages are resent with the same id while ferry send waits, so ferryd stores\n"
    "each once.\n"
    "\n"
    "Exit status 0 only when ferryd confirmed every line. A refused line (too_large, disk_full, queue_full,\n"
    "...) is reported on stderr as 'line N (id ID) refused: CODE: TEXT' and the others are still sent;\n"
    "lines left unconfirmed after --timeout-ms are counted. Either gives status 1. --timeout-ms also bounds\n"
    "each wait for room when 10000 messages are unconfirmed.\n"
    "\n"
    "--id-file FILE writes 'LINE ID' (line number from 1, message id in 32 hex digits) for each confirmed\n"
    "line, in line order; lines missing from it were refused or not confirmed. '-' writes to stdout.\n"
    "Running ferry send again on the same input makes new ids: resend only the lines the file lacks.\n"
    "\n"
    "Example:  seq 100 | ferry send --forwarder tcp://127.0.0.1:5570 --queue jobs -H source=cli\n";

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

void add_durable_commands(CLI::App& app, std::vector<command>& commands) {
  {
    auto f = std::make_shared<send_flags>();
    CLI::App* cmd = app.add_subcommand("send", "Send one message per input line to a ferryd queue, durably");
    add_forwarder_flags(*cmd, f->where, "Queue to send to (required)");
    add_key_header_flags(*cmd, f->message);
    cmd->add_option("-f,--file", f->file, "Read payloads from FILE instead of standard input (- for stdin)")
        ->type_name("FILE");
    cmd->add_option("-c,--count", f->count, "Stop after sending N messages")
        ->type_name("N")
        ->check(whole_number(1, max_count));
    add_timeout_flag(*cmd, f->timeout_ms, "Wait up to MS for ferryd's confirmations (default 30000)");
    cmd->add_option("--id-file", f->id_file, "Write 'LINE ID' per confirmed line to FILE (- for stdout)")
        ->type_name("FILE");
    cmd->add_flag("--stats", f->stats, "Print sent, confirmed, refused and resent on stderr at exit");
    cmd->footer(send_footer);
    commands.push_back({cmd, [f] { return run_send(*f); }});
  }
  {
    auto f = std::make_shared<consume_flags>();
    CLI::App* cmd =
        app.add_subcommand("consume", "Take messages from a ferryd queue, print one per line, acknowledge");
    add_forwarder_flags(*cmd, f->where, "Queue to consume (required)");
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
    cmd->footer(consume_footer);
    commands.push_back({cmd, [f] { return run_consume(*f); }});
  }
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
