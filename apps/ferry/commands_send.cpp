// ferry send: one message per input line to a ferryd queue through ferry::producer, each confirmed once
// it is on ferryd's disk.

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "commands.hpp"
#include "detail/forwarder_protocol.hpp"
#include "durable_flags.hpp"
#include "ferry/error.hpp"
#include "ferry/producer.hpp"

namespace ferry::cli {
namespace {

namespace fwd = ferry::detail::fwd;
using std::chrono::milliseconds;
using ull = unsigned long long;  // for %llu

constexpr std::int64_t default_confirm_timeout_ms = 30'000;

struct send_flags {
  forwarder_flags where;
  message_flags message;  // --key, --header; the topic is the queue
  bool topic = false;     // ferry publish: to a durable topic
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
  check_forwarder_flags(f.where, f.topic ? queue_use::publish : queue_use::send);
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
      const ferry::send_status status = f.topic ? producer.publish(msg) : producer.send(msg);
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

}  // namespace

constexpr const char* publish_footer =
    "Publishes to a durable topic of ferryd: each line is stored once and delivered to every subscription\n"
    "of the topic (ferry subscribe). Confirmation, refusals, resends, --id-file and the exit status are as\n"
    "for ferry send.\n"
    "\n"
    "Example:  seq 100 | ferry publish --forwarder tcp://127.0.0.1:5570 --topic events\n";

namespace {

void add_send_like(CLI::App& app, std::vector<command>& commands, bool topic) {
  auto f = std::make_shared<send_flags>();
  f->topic = topic;
  CLI::App* cmd =
      topic ? app.add_subcommand("publish", "Publish one message per input line to a ferryd topic, durably")
            : app.add_subcommand("send", "Send one message per input line to a ferryd queue, durably");
  if (topic) {
    add_forwarder_flags(*cmd, f->where, "Topic to publish to (required)", "--topic");
  } else {
    add_forwarder_flags(*cmd, f->where, "Queue to send to (required)");
  }
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
  cmd->footer(topic ? publish_footer : send_footer);
  commands.push_back({cmd, [f] { return run_send(*f); }});
}

}  // namespace

void add_send_command(CLI::App& app, std::vector<command>& commands) {
  add_send_like(app, commands, false);
}

void add_publish_command(CLI::App& app, std::vector<command>& commands) {
  add_send_like(app, commands, true);
}

}  // namespace ferry::cli
