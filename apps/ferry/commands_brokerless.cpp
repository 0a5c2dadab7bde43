// push, pull, pub and sub: the brokerless patterns from the command line, one payload per line.

#include <algorithm>
#include <cstdio>
#include <memory>
#include <span>
#include <string>

#include "commands.hpp"
#include "ferry/error.hpp"
#include "ferry/publisher.hpp"
#include "ferry/pusher.hpp"
#include "ferry/subscriber.hpp"
#include "ferry/worker_pool.hpp"
#include "receive_session.hpp"

namespace ferry::cli {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds default_subscriber_wait{5000};

// Flags of push and pub.
struct send_flags {
  endpoint_flags where;
  message_flags message;
  std::string file;
  std::uint64_t count = 0;
  std::int64_t timeout_ms = 0;  // 0: not given
  std::int64_t linger_ms = 5000;
  bool stats = false;
  // pub only
  std::uint64_t wait_subscribers = 0;
  bool block = false;
};

// Flags of pull and sub.
struct receive_flags {
  endpoint_flags where;
  std::vector<std::string> prefixes{""};  // sub only
  std::string repair_from;                // sub only: ferryd's endpoint, to fill gaps of its live feed
  std::uint64_t count = 0;
  std::int64_t timeout_ms = 0;
  std::string format = "text";
  std::int64_t queue = -1;  // -1: not given
  bool unbuffered = false;
  bool stats = false;
};

void add_send_flags(CLI::App& cmd, send_flags& f, const std::string& topic_help) {
  add_endpoint_flags(cmd, f.where);
  add_message_flags(cmd, f.message, topic_help);
  cmd.add_option("-f,--file", f.file, "Read payloads from FILE instead of standard input (- for stdin)")
      ->type_name("FILE");
  cmd.add_option("-c,--count", f.count, "Stop after sending N messages")
      ->type_name("N")
      ->check(whole_number(1, max_count));
  cmd.add_option("--linger-ms", f.linger_ms,
                 "At exit, wait up to MS for queued messages to leave the socket (default 5000)")
      ->type_name("MS")
      ->check(whole_number(1, max_int));
  cmd.add_flag("--stats", f.stats, "Print what was sent on stderr at exit");
}

void add_receive_flags(CLI::App& cmd, receive_flags& f) {
  add_endpoint_flags(cmd, f.where);
  cmd.add_option("-c,--count", f.count, "Exit after printing N messages")
      ->type_name("N")
      ->check(whole_number(1, max_count));
  cmd.add_option("--timeout-ms", f.timeout_ms, "Exit when no message arrived for MS milliseconds")
      ->type_name("MS")
      ->check(whole_number(1, max_int));
  cmd.add_option("-F,--format", f.format, "text (the payload, one per line) or json (one object per line)")
      ->type_name("FORMAT")
      ->check(CLI::IsMember({"text", "json"}));
  cmd.add_option("--queue", f.queue,
                 "Queue N messages before senders slow down; 0: no limit (default 1000; ipc: 0)")
      ->type_name("N")
      ->check(whole_number(0, max_int));
  cmd.add_flag("-u,--unbuffered", f.unbuffered,
               "Flush stdout after every line (otherwise within 100 ms, and always at exit)");
  cmd.add_flag("--stats", f.stats,
               "Print received, handled, malformed, gaps, dropped, frames and repaired on stderr at exit");
}

receive_session_options session_options(const receive_flags& f) {
  receive_session_options o;
  o.format = f.format == "json" ? output_format::json : output_format::text;
  o.count = f.count;
  if (f.timeout_ms > 0) o.idle_timeout = milliseconds(f.timeout_ms);
  o.unbuffered = f.unbuffered;
  return o;
}

// libzmq 4.3.4 loses an ipc connection's unread bytes when the sender closes it while this receiver's
// queue is full: the unix socket reports EPOLLHUP, the stopped engine gives up without reading the rest
// of the kernel buffer (a tcp FIN raises no HUP, so tcp is not affected). `ferry push | ferry pull` over
// ipc lost the last 0.3-1% of 100k lines in 6 of 20 runs this way. A queue without limit never stops
// reading, so whatever a sender handed over before it exited arrives; the price is memory while the
// printer is slower than the sender, which --queue bounds again for those who prefer that.
int receive_queue(const receive_flags& f) {
  if (f.queue >= 0) return static_cast<int>(f.queue);
  const auto is_ipc = [](const std::string& ep) { return ep.rfind("ipc://", 0) == 0; };
  if (std::any_of(f.where.bind.begin(), f.where.bind.end(), is_ipc) ||
      std::any_of(f.where.connect.begin(), f.where.connect.end(), is_ipc))
    return 0;
  return ferry::socket_options{}.receive_hwm;
}

// Receivers send no data of their own, so closing need not wait; a SUB whose publisher is gone would
// otherwise wait the default linger for a re-queued subscription to reach nobody.
ferry::socket_options receive_socket_options(const receive_flags& f) {
  ferry::socket_options o;
  o.receive_hwm = receive_queue(f);
  o.linger = milliseconds(0);
  return o;
}

void print_receive_stats(const ferry::receive_stats& s, const receive_session& session) {
  // handled = printed; messages taken after --count or after the stop began were not printed: dropped.
  std::fprintf(stderr,
               "ferry: received %llu, handled %llu, malformed %llu, gaps %llu, dropped %llu, frames %llu (v1 "
               "%llu), repaired %llu\n",
               static_cast<unsigned long long>(s.received),
               static_cast<unsigned long long>(session.printed()),
               static_cast<unsigned long long>(s.malformed), static_cast<unsigned long long>(s.gaps),
               static_cast<unsigned long long>(s.dropped + session.skipped()),
               static_cast<unsigned long long>(s.v1_frames + s.v2_frames),
               static_cast<unsigned long long>(s.v1_frames), static_cast<unsigned long long>(s.repaired));
}

// Sends every input line through `send` (which sends a batch and returns a batch_status). Lines already read
// and waiting go together in one batch (one v2 frame per run of lines), up to max_cli_batch; a line is never
// held back waiting for more. Returns how many were sent; throws ferry::error naming the first message not
// sent, with `why(status)` appended.
constexpr std::size_t max_cli_batch = 1024;

template <typename Send, typename Why>
std::uint64_t send_lines(const send_flags& f, line_reader& input, Send&& send, Why&& why) {
  std::uint64_t sent = 0;
  std::vector<ferry::message> batch;
  std::string line;
  while ((f.count == 0 || sent < f.count) && input.next(line)) {
    batch.clear();
    batch.push_back(f.message.make(line));
    while (batch.size() < max_cli_batch && (f.count == 0 || sent + batch.size() < f.count) &&
           input.has_buffered_record() && input.next(line))
      batch.push_back(f.message.make(line));
    const ferry::batch_status r = send(std::span<ferry::message>(batch));
    sent += r.sent;
    if (r.status != ferry::send_status::ok)
      throw ferry::error("message " + std::to_string(sent + 1) + " not sent: " + why(r.status));
  }
  return sent;
}

std::string endpoint_list(const ferry::endpoints& where) {
  std::string out;
  for (const auto* list : {&where.connect, &where.bind})
    for (const auto& ep : *list) out += (out.empty() ? "" : ", ") + ep;
  return out;
}

int run_push(const send_flags& f) {
  const ferry::endpoints where = f.where.to_endpoints();
  f.message.check();
  line_reader input(f.file);  // an unreadable file fails before anything binds

  ferry::context ctx;
  ferry::pusher_options options;
  options.socket.linger = milliseconds(f.linger_ms);
  // Nothing is queued for a worker that has not connected: a send waits for one (up to the timeout)
  // instead of filling a queue nobody may ever read, so "sent" means a worker was there to take it.
  options.socket.immediate = true;
  if (f.timeout_ms > 0) options.send_timeout = milliseconds(f.timeout_ms);
  std::uint64_t sent = 0;
  std::uint64_t frames = 0;
  {
    ferry::pusher push(ctx, where, options);
    announce_bound(push.bound());
    const std::string waited = std::to_string(options.send_timeout.count()) + " ms (--timeout-ms)";
    sent = send_lines(
        f, input, [&](std::span<ferry::message> m) { return push.send_batch(m); },
        [&](ferry::send_status st) -> std::string {
          if (st != ferry::send_status::timed_out) return std::string(to_string(st));
          if (push.stats().connects == 0)
            return "no worker connected to " + endpoint_list(where) + " within " + waited;
          return "timed_out (no worker took it within " + waited + ")";
        });
    frames = push.stats().frames;
  }  // the socket closes first (lingering), then the context ends
  if (f.stats)
    std::fprintf(stderr, "ferry: sent %llu in %llu frames\n", static_cast<unsigned long long>(sent),
                 static_cast<unsigned long long>(frames));
  return exit_ok;
}

int run_pub(const send_flags& f) {
  const ferry::endpoints where = f.where.to_endpoints();
  f.message.check();
  line_reader input(f.file);

  ferry::context ctx;
  ferry::publisher_options options;
  options.socket.linger = milliseconds(f.linger_ms);
  if (f.block) {
    options.when_full = ferry::when_full::block;
    if (f.timeout_ms > 0) options.send_timeout = milliseconds(f.timeout_ms);
  }
  ferry::publisher_stats stats;
  {
    ferry::publisher pub(ctx, where, options);
    announce_bound(pub.bound());
    if (f.wait_subscribers > 0) {
      const milliseconds wait = f.timeout_ms > 0 ? milliseconds(f.timeout_ms) : default_subscriber_wait;
      if (!pub.wait_for_subscriptions(f.wait_subscribers, wait))
        throw ferry::error("only " + std::to_string(pub.stats().subscriptions) + " of " +
                           std::to_string(f.wait_subscribers) + " subscriptions arrived within " +
                           std::to_string(wait.count()) + " ms (--wait-subscribers)");
    }
    (void)send_lines(
        f, input, [&](std::span<ferry::message> m) { return pub.publish_batch(m); },
        [&](ferry::send_status st) {
          return std::string(to_string(st)) +
                 (st == ferry::send_status::timed_out
                      ? " (no room within " + std::to_string(options.send_timeout.count()) +
                            " ms, --timeout-ms)"
                      : "");
        });
    stats = pub.stats();
  }
  if (f.stats)
    std::fprintf(stderr, "ferry: published %llu in %llu frames, subscriptions %llu\n",
                 static_cast<unsigned long long>(stats.published),
                 static_cast<unsigned long long>(stats.frames),
                 static_cast<unsigned long long>(stats.subscriptions));
  return exit_ok;
}

int run_pull(const receive_flags& f) {
  const ferry::endpoints where = f.where.to_endpoints();
  receive_session session(session_options(f));  // before any thread exists: it blocks SIGINT/SIGTERM
  ferry::context ctx;
  ferry::worker_pool_options options;
  options.threads = 1;  // lines come out in arrival order and never interleave
  options.socket = receive_socket_options(f);
  ferry::worker_pool pool(
      ctx, where, [&](ferry::message& m) { session.on_message(m); }, options);
  announce_bound(pool.bound());
  (void)session.wait();
  pool.stop();
  session.finish();
  if (f.stats) print_receive_stats(pool.stats(), session);
  return exit_ok;
}

int run_sub(const receive_flags& f) {
  const ferry::endpoints where = f.where.to_endpoints();
  receive_session session(session_options(f));
  ferry::context ctx;
  ferry::subscriber_options options;
  options.socket = receive_socket_options(f);
  if (!f.repair_from.empty()) options.repair = ferry::gap_repair{.forwarder = f.repair_from};
  ferry::subscriber sub(
      ctx, where, f.prefixes, [&](ferry::message& m) { session.on_message(m); }, options);
  announce_bound(sub.bound());
  (void)session.wait();
  sub.stop();
  session.finish();
  if (f.stats) print_receive_stats(sub.stats(), session);
  return exit_ok;
}

constexpr const char* push_footer =
    "Guarantee: at most once. Each message is queued for one connected worker pool (round-robin), never\n"
    "for one that has not connected. push waits up to --timeout-ms (default 10000) for a worker to connect\n"
    "or for room when workers are slow, then exits with status 1 ('no worker connected to ENDPOINT within\n"
    "N ms' when none ever did). It logs connections made and lost, and says 'cannot reach ENDPOINT\n"
    "(retrying)' while it waits for one. After the last line it closes its socket, waiting up to\n"
    "--linger-ms for queued messages to leave, then exits. A message is lost if its worker dies, or if\n"
    "nothing takes it within --linger-ms. Over ipc, libzmq 4.3.4 also drops what a worker had not read yet\n"
    "when push exits while that worker is behind, unless the worker's queue has no limit (ferry pull's\n"
    "default on ipc). Use tcp or ferry pull on ipc for scripts; use ferryd for confirmed, durable delivery.\n"
    "\n"
    "Example:  seq 3 | ferry push --connect tcp://127.0.0.1:5555 --topic jobs -H source=cli\n";

constexpr const char* pub_footer =
    "Guarantee: at most once. Subscribers that join late miss what was published before they joined:\n"
    "--wait-subscribers N waits for N subscriptions (one per prefix per subscriber) for up to --timeout-ms\n"
    "(default 5000) and fails if they do not come. A slow subscriber loses messages at its high-water mark\n"
    "(it sees a sequence gap) unless --block is given.\n"
    "\n"
    "Example:  ferry pub --bind tcp://127.0.0.1:* --topic prices.eu --wait-subscribers 1 < prices.txt\n";

constexpr const char* receive_footer =
    "Each message is one line: its payload (--format text) or a JSON object (--format json) with id (32 hex\n"
    "digits), topic, key, headers, attempt, timestamp (Unix microseconds), origin (16 hex digits) and\n"
    "sequence when set, and payload: a string when it is valid UTF-8, else base64 with \"payload_base64\":\n"
    "true. SIGINT or SIGTERM stops gracefully (exit status 0).\n"
    "\n"
    "Guarantee: at most once; what was queued here but not printed when it stops counts as dropped\n"
    "(--stats). --queue defaults to no limit on ipc:// because libzmq 4.3.4 drops the unread part of an\n"
    "ipc connection when the sender exits while a bounded queue is full; it costs memory while stdout is\n"
    "slower than the senders (about 200 bytes per small message waiting).\n";

}  // namespace

void add_brokerless_commands(CLI::App& app, std::vector<command>& commands) {
  {
    auto f = std::make_shared<send_flags>();
    CLI::App* cmd = app.add_subcommand("push", "Send one message per input line to worker pools (PUSH)");
    add_send_flags(*cmd, *f, "Queue (topic) of every message");
    cmd->add_option("--timeout-ms", f->timeout_ms,
                    "Fail when no worker takes a message within MS milliseconds (default 10000)")
        ->type_name("MS")
        ->check(whole_number(1, max_int));
    cmd->footer(push_footer);
    commands.push_back({cmd, [f] { return run_push(*f); }});
  }
  {
    auto f = std::make_shared<receive_flags>();
    CLI::App* cmd =
        app.add_subcommand("pull", "Receive messages as a worker pool and print one per line (PULL)");
    add_receive_flags(*cmd, *f);
    cmd->footer(receive_footer);
    commands.push_back({cmd, [f] { return run_pull(*f); }});
  }
  {
    auto f = std::make_shared<send_flags>();
    CLI::App* cmd = app.add_subcommand("pub", "Publish one message per input line to subscribers (PUB)");
    add_send_flags(*cmd, *f, "Topic of every message");
    cmd->add_option("--wait-subscribers", f->wait_subscribers,
                    "Wait for N subscriptions before publishing (see below)")
        ->type_name("N")
        ->check(whole_number(1, max_count));
    cmd->add_option("--timeout-ms", f->timeout_ms,
                    "Bound of --wait-subscribers (default 5000) and of each wait for room with --block "
                    "(default 10000)")
        ->type_name("MS")
        ->check(whole_number(1, max_int));
    cmd->add_flag("--block", f->block, "Wait for room when a subscriber is full instead of dropping");
    cmd->footer(pub_footer);
    commands.push_back({cmd, [f] { return run_pub(*f); }});
  }
  {
    auto f = std::make_shared<receive_flags>();
    CLI::App* cmd = app.add_subcommand("sub", "Subscribe to topics and print one message per line (SUB)");
    add_receive_flags(*cmd, *f);
    cmd->add_option("-s,--subscribe", f->prefixes,
                    "Receive topics starting with PREFIX (repeatable; default: every topic)")
        ->type_name("PREFIX")
        ->allow_extra_args(false);
    cmd->add_option("--repair-from", f->repair_from,
                    "With --connect to ferryd's live feed (ferryd --feed): fetch messages missing from a "
                    "topic's sequence from ferryd at ENDPOINT (its --bind) and print them in order")
        ->type_name("ENDPOINT");
    cmd->footer(receive_footer);
    commands.push_back({cmd, [f] { return run_sub(*f); }});
  }
}

}  // namespace ferry::cli
