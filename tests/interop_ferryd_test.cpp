// Interop through the forwarder: ferryd_py's durable producer and consumer (tests/interop/ferryd_py.py, on
// top of ferry_py.py, written from docs/protocol.md alone) against a real ferryd child process and the C++
// producer and consumer, plus the forwarder exchanges of docs/protocol.md replayed byte for byte.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#include <zmq_addon.hpp>

#include "ferry/ferry.hpp"
#include "support/interop_support.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

using namespace test::interop;

// A ferryd on a free 127.0.0.1 port with a data directory of its own; stopped with SIGTERM at the end.
class ferryd_process {
 public:
  explicit ferryd_process(const std::vector<std::string>& flags = {}) {
    const std::string program = test::built_program("apps/ferryd/ferryd");
    INFO("build ferryd first: cmake --build <dir> --target ferryd");
    REQUIRE(std::filesystem::exists(program));
    // free_port() can race with another process taking the port: ferryd then exits, and we try another.
    for (int tries = 0; tries < 3 && !process_; ++tries) {
      endpoint_ = "tcp://127.0.0.1:" + std::to_string(test::free_port());
      std::vector<std::string> argv{program, "--data-dir", dir_.path().string(), "--bind", endpoint_};
      argv.insert(argv.end(), flags.begin(), flags.end());
      process_.emplace(argv);
      if (!process_->wait_for_output("ready", 20s)) {
        INFO("ferryd stderr:\n" << process_->err());
        CHECK(process_->running() == false);  // a ferryd that is up but silent is a real failure
        process_.reset();
      }
    }
    REQUIRE(process_);
  }
  ~ferryd_process() {
    if (process_) {
      process_->kill(SIGCONT);  // in case a test stopped it
      process_->kill(SIGTERM);
      (void)process_->wait(10s);
    }
  }
  ferryd_process(const ferryd_process&) = delete;
  ferryd_process& operator=(const ferryd_process&) = delete;

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  test::child_process& process() { return *process_; }

 private:
  test::temp_dir dir_{"ferryd-interop"};  // declared first: outlives the process
  std::string endpoint_;
  std::optional<test::child_process> process_;
};

// -B: no __pycache__ in the source tree; -u: every line reaches us as soon as it is printed. `protocol` is
// the highest forwarder protocol version the Python client speaks.
std::vector<std::string> durable(const std::string& scenario, const ferryd_process& d,
                                 const std::string& queue, std::vector<std::string> args = {},
                                 int protocol = 2) {
  std::vector<std::string> argv{"/usr/bin/python3",
                                "-B",
                                "-u",
                                interop_dir + "durable.py",
                                "--protocol",
                                std::to_string(protocol),
                                scenario,
                                d.endpoint(),
                                queue};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// What a durable.py client printed as `sends v1 N v2 M` or `delivers v1 N v2 M`: {N, M}.
std::pair<int, int> forms(const std::string& out, const std::string& what) {
  std::istringstream in(output_value(out, what));
  std::string v1, v2;
  int n1 = -1, n2 = -1;
  in >> v1 >> n1 >> v2 >> n2;
  return {n1, n2};
}

// Runs `durable.py stats`, which waits until the queue's STATS fields have the given values.
std::map<std::string, std::string> require_stats(const ferryd_process& d, const std::string& queue,
                                                 const std::vector<std::string>& conditions) {
  const auto r = test::run(durable("stats", d, queue, conditions), "", 60s);
  INFO("stats " << queue << ": " << r.out << r.err);
  REQUIRE(r.code == 0);
  std::map<std::string, std::string> stats;
  std::istringstream in(r.out);
  for (std::string word, name, value; in >> word >> name >> value;)
    if (word == "stat") stats[name] = value;
  return stats;
}

// A message as a consumer gets it through ferryd: the queue as topic, the attempt of that delivery.
fields delivered(fields f, const std::string& queue, std::uint64_t attempt = 1) {
  f.topic = queue;
  f.attempt = attempt;
  return f;
}

// The messages the C++ producer sends, with every kind of field.
std::vector<message> varied_messages(const std::string& queue, int bulk) {
  std::vector<message> all;
  all.emplace_back(queue, "hello");
  all.emplace_back(queue, "{\"total\":42}");
  all.back().set_key("customer-17");
  all.back().set_header("content-type", "application/json");
  all.back().set_header("trace-id", "4bf92f3577b34da6");
  std::string every_byte;
  for (int i = 0; i < 256; ++i) every_byte.push_back(static_cast<char>(i));
  all.emplace_back(queue, every_byte);
  all.back().set_key("cl\xc3\xa9-\xc3\xbc");
  all.back().set_attempt(70'000);  // ferryd stores attempt 0 whatever the producer says
  all.emplace_back(queue, "");
  all.back().set_header("empty", "");
  all.emplace_back(queue, std::string(200'000, 'x'));
  all.back().set_key(std::string(200, 'k'));
  for (int i = 0; i < 20; ++i) all.back().set_header("h" + std::to_string(i), "v");
  all.emplace_back(queue, "before 1970");
  all.back().set_timestamp_us(-1234);
  all.emplace_back(queue, "with stream fields");
  all.back().set_stream(0xFFFFFFFFFFFFFFFFull, 1ull << 40);
  for (int i = 0; i < bulk; ++i) {
    all.emplace_back(queue, "bulk-" + std::to_string(i));
    all.back().set_key("key-" + std::to_string(i % 3));
  }
  return all;
}

// Sends `messages` through a ferry::producer and waits until ferryd confirmed them all. Returns their fields.
std::vector<fields> produce(const ferryd_process& d, std::vector<message>& messages) {
  context ctx;
  std::vector<fields> sent;
  std::mutex mutex;
  std::vector<refusal> refused;
  producer prod(ctx, d.endpoint(), {.max_batch = 16}, {}, [&](const refusal& r) {
    std::lock_guard lock(mutex);
    refused.push_back(r);
  });
  for (auto& m : messages) {
    m.stamp();  // the id and timestamp send() would give it, known before the payload is consumed
    sent.push_back(fields::of(m));
    REQUIRE(prod.send(m) == send_status::ok);
  }
  REQUIRE(prod.flush(30s));
  CHECK(prod.stats().confirmed == messages.size());
  std::lock_guard lock(mutex);
  CHECK(refused.empty());
  sort_by_id(sent);
  return sent;
}

// --- the exchange blocks of docs/protocol.md ---------------------------------------------------------------

struct wire_line {
  std::string bytes;
  std::string varies;  // NAME of "(varies: NAME)", or empty
};

struct wire_frame {
  std::string label;
  std::size_t size = 0;  // as the "# frame" line declares it
  std::vector<wire_line> lines;
  [[nodiscard]] std::size_t byte_count() const {
    std::size_t n = 0;
    for (const auto& l : lines) n += l.bytes.size();
    return n;
  }
};

struct wire_message {
  std::string from, to, verb;
  std::size_t frame_count = 0;  // as the header line declares it
  std::vector<wire_frame> frames;
};

// Parses every ```exchange block, in document order (the format is described in the document).
std::vector<wire_message> parse_exchanges() {
  std::ifstream in(protocol_md);
  REQUIRE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const auto lines = lines_of(buffer.str());
  std::vector<wire_message> out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (trim(lines[i]) != "```exchange") continue;
    for (++i; i < lines.size() && trim(lines[i]) != "```"; ++i) {
      const std::string& l = lines[i];
      INFO("docs/protocol.md line " << i + 1 << ": " << l);
      const auto arrow = l.find(" -> ");
      if (l.rfind("# ", 0) == 0 && arrow != std::string::npos) {
        // "# producer -> ferryd: SEND, 4 frames"
        wire_message m;
        const auto colon = l.find(": ", arrow);
        const auto comma = l.find(", ", colon);
        REQUIRE((colon != std::string::npos && comma != std::string::npos));
        m.from = l.substr(2, arrow - 2);
        m.to = l.substr(arrow + 4, colon - arrow - 4);
        m.verb = l.substr(colon + 2, comma - colon - 2);
        m.frame_count = std::stoul(l.substr(comma + 2));
        out.push_back(std::move(m));
      } else if (l.rfind("# frame ", 0) == 0) {
        // "# frame 2: envelope, 32 bytes"
        REQUIRE_FALSE(out.empty());
        const auto colon = l.find(": ");
        const auto comma = l.rfind(", ");
        REQUIRE(std::stoul(l.substr(8, colon - 8)) == out.back().frames.size());
        out.back().frames.push_back(
            {l.substr(colon + 2, comma - colon - 2), std::stoul(l.substr(comma + 2)), {}});
      } else if (l.rfind('#', 0) != 0) {
        REQUIRE_FALSE(out.empty());
        REQUIRE_FALSE(out.back().frames.empty());
        const auto hash = l.find('#');
        wire_line wl;
        std::string digits;
        for (char c : l.substr(0, hash))
          if (c != ' ') digits.push_back(c);
        wl.bytes = unhex(digits);
        const std::string comment = hash == std::string::npos ? std::string() : l.substr(hash);
        if (const auto v = comment.find("(varies: "); v != std::string::npos)
          wl.varies = comment.substr(v + 9, comment.find(')', v) - v - 9);
        out.back().frames.back().lines.push_back(std::move(wl));
      }
    }
  }
  return out;
}

// A DEALER with a bounded receive.
zmq::socket_t dealer(context& ctx, const std::string& endpoint) {
  zmq::socket_t s = ctx.make_socket(zmq::socket_type::dealer);
  s.set(zmq::sockopt::rcvtimeo, 10'000);
  s.connect(endpoint);
  return s;
}

}  // namespace

TEST_CASE(
    "ferryd interop: python durable producer in protocol v2 and v1 -> ferry::consumer, every field intact",
    "[interop][ferryd]") {
  const int protocol = GENERATE(2, 1);
  INFO("python speaks forwarder protocol v" << protocol);
  ferryd_process d;
  test::child_process py(durable("produce", d, "py-jobs", {}, protocol));
  require_success(py);  // every message confirmed, the resent copies confirmed again and stored once
  CHECK(output_value(py.out(), "protocol") == std::to_string(protocol));  // what WELCOME agreed on
  const auto [v1_sends, v2_sends] = forms(py.out(), "sends");
  if (protocol == 2) {
    CHECK(v2_sends > 0);
    CHECK(v1_sends == 2);  // the 100 kB payload, sent twice, goes alone in v1 form (as ferry's producer does)
  } else {
    CHECK(v2_sends == 0);  // a client that predates v2: frame pairs only, and ferryd stores them all
    CHECK(v1_sends > 0);
  }
  std::vector<fields> sent = described(py.out());
  sort_by_id(sent);  // one Python generator: the order they were made
  REQUIRE(sent.size() == 67);
  CHECK(output_value(py.out(), "confirmed") == "67");
  CHECK(output_value(py.out(), "reconfirmed") == "5");
  CHECK(output_value(py.out(), "stat deduplicated") == "5");

  context ctx;
  collector got;
  consumer cons(ctx, d.endpoint(), "py-jobs", got.handler(), {.threads = 2});
  REQUIRE(cons.wait_ready(20s));
  REQUIRE(test::wait_until([&] { return got.size() >= sent.size(); }, 30s));
  std::vector<fields> expected;
  for (const auto& f : sent) expected.push_back(delivered(f, "py-jobs"));
  CHECK(got.sorted() == expected);  // each message once, attempt 1, every field as Python wrote it
  cons.stop();
  CHECK(cons.stats().handled == sent.size());
  CHECK(cons.stats().duplicates == 0);
  require_stats(d, "py-jobs", {"depth=0", "acked=67", "delivered=67", "deduplicated=5"});
}

TEST_CASE("ferryd interop: python producer resends unconfirmed messages with their ids, stored once",
          "[interop][ferryd]") {
  ferryd_process d;
  test::child_process py(durable("resend", d, "py-resend", {"10"}));
  require_output(py, "ready");
  d.process().kill(SIGSTOP);  // ferryd answers nothing: the producer's confirm timeout runs out
  py.write_stdin("go\n");
  require_output(py, "resent ");
  d.process().kill(SIGCONT);
  py.write_stdin("continue\n");
  require_success(py);
  CHECK(output_value(py.out(), "confirmed") == "10");
  const auto resent = std::stoul(output_value(py.out(), "total_resent"));
  CHECK(resent >= 10);
  // Every copy was confirmed, and every resent copy was recognised as a duplicate (durable.py checked STATS:
  // confirmed 10, deduplicated == resent, depth 10).
  CHECK(output_value(py.out(), "stat deduplicated") == std::to_string(resent));
  CHECK(output_value(py.out(), "stat depth") == "10");

  context ctx;
  collector got;
  consumer cons(ctx, d.endpoint(), "py-resend", got.handler());
  REQUIRE(test::wait_until([&] { return got.size() >= 10; }, 30s));
  std::vector<fields> expected;
  for (const auto& f : described(py.out())) expected.push_back(delivered(f, "py-resend"));
  sort_by_id(expected);
  CHECK(got.sorted() == expected);
  cons.stop();
  require_stats(d, "py-resend", {"depth=0", "acked=10", "delivered=10"});
}

TEST_CASE("ferryd interop: ferry::producer -> python durable consumer in protocol v2 and v1, acknowledged",
          "[interop][ferryd]") {
  const int protocol = GENERATE(2, 1);
  INFO("python speaks forwarder protocol v" << protocol);
  ferryd_process d;
  test::child_process py(durable("consume", d, "cpp-jobs", {"67"}, protocol));
  require_output(py, "ready");  // subscribed before anything is sent: deliveries follow the commits
  std::vector<message> messages = varied_messages("cpp-jobs", 60);
  const std::vector<fields> sent = produce(d, messages);
  require_success(py);
  // The form of every DELIVER is the one the consumer asked for in CONSUME (v1: it asked for none).
  const auto [v1_delivers, v2_delivers] = forms(py.out(), "delivers");
  CHECK((protocol == 2 ? v1_delivers : v2_delivers) == 0);
  CHECK((protocol == 2 ? v2_delivers : v1_delivers) > 0);
  std::vector<fields> expected;
  for (const auto& f : sent) expected.push_back(delivered(f, "cpp-jobs"));
  std::vector<fields> consumed = described(py.out());
  sort_by_id(consumed);
  sort_by_id(expected);
  CHECK(consumed == expected);
  // STATS, from Python, once every ACK was applied.
  CHECK(output_value(py.out(), "stat depth") == "0");
  CHECK(output_value(py.out(), "stat acked") == "67");
  CHECK(output_value(py.out(), "stat confirmed") == "67");
  CHECK(output_value(py.out(), "stat delivered") == "67");
  CHECK(output_value(py.out(), "stat stale_acks") == "0");
}

TEST_CASE("ferryd interop: a mixed fleet, python producer in v2 -> python consumer in v1, every field intact",
          "[interop][ferryd]") {
  ferryd_process d;
  test::child_process producer(durable("produce", d, "mixed", {}, 2));
  require_success(producer);
  CHECK(forms(producer.out(), "sends").second > 0);  // blocks went in
  std::vector<fields> expected;
  for (const auto& f : described(producer.out())) expected.push_back(delivered(f, "mixed"));
  sort_by_id(expected);
  REQUIRE(expected.size() == 67);

  test::child_process consumer(durable("consume", d, "mixed", {"67"}, 1));
  require_success(consumer);
  const auto [v1_delivers, v2_delivers] = forms(consumer.out(), "delivers");
  CHECK(v2_delivers == 0);  // frame pairs out, whatever form brought the messages in
  CHECK(v1_delivers > 0);
  std::vector<fields> consumed = described(consumer.out());
  sort_by_id(consumed);
  CHECK(consumed == expected);
  CHECK(output_value(consumer.out(), "stat acked") == "67");
}

TEST_CASE("ferryd interop: the Python client of docs/protocol.md (forwarder-v2) round-trips through ferryd",
          "[interop][ferryd]") {
  const int protocol = GENERATE(2, 1);
  INFO("the snippet speaks forwarder protocol v" << protocol);
  ferryd_process d;
  test::child_process py(durable("snippet", d, "snippet", {protocol_md}, protocol));
  require_success(py);  // hello(), send_frames(), deliveries(): every message back once, every field intact
  CHECK(output_value(py.out(), "protocol") == std::to_string(protocol));
  CHECK(output_value(py.out(), "snippet") == "67 ok");
  const auto [v1_delivers, v2_delivers] = forms(py.out(), "delivers");
  CHECK((protocol == 2 ? v1_delivers : v2_delivers) == 0);
  require_stats(d, "snippet", {"depth=0", "acked=67", "confirmed=67"});
}

TEST_CASE(
    "ferryd interop: python's v2 producer and consumer fall back to v1 with a ferryd that speaks only v1",
    "[interop][ferryd][protocol]") {
  // The fake v1 ferryd runs inside the script (as tests/protocol_versions_test.cpp has one for the C++
  // clients).
  test::child_process py(
      {"/usr/bin/python3", "-B", "-u", interop_dir + "durable.py", "fallback", "-", "-", protocol_md});
  require_success(
      py);  // HELLO v2 refused, HELLO v1, frame pairs only, every message back; the page's hello()
  CHECK(py.out().find("fallback ok") != std::string::npos);
}

TEST_CASE("ferryd interop: python NACK redelivers with attempt 2, REJECT dead-letters, replay returns it",
          "[interop][ferryd]") {
  ferryd_process d;
  test::child_process py(durable("nack-reject", d, "cpp-nack"));
  require_output(py, "ready");
  std::vector<message> messages;
  for (const char* payload : {"good-1", "bad", "good-2"}) messages.emplace_back("cpp-nack", payload);
  const std::vector<fields> sent = produce(d, messages);
  require_success(py);
  const std::string bad =
      std::find_if(sent.begin(), sent.end(), [](const fields& f) { return f.payload == "bad"; })->id;
  const std::string out = py.out();
  INFO(out);
  CHECK(out.find("delivery " + bad + " attempt 1 payload bad") != std::string::npos);
  CHECK(out.find("delivery " + bad + " attempt 2 payload bad") != std::string::npos);
  CHECK(output_value(out, "dlq queue") ==
        "cpp-nack.dlq id " + bad + " payload bad attempts 2 source cpp-nack");
  CHECK(output_value(out, "dlq reason") == "rejected by the handler: permanent failure");
  CHECK(output_value(out, "stat nacked") == "1");
  CHECK(output_value(out, "stat redelivered") == "1");
  CHECK(output_value(out, "stat dead_lettered") == "1");
  CHECK(output_value(out, "stat acked") == "2");
  // DLQ replay: the message is back in the queue without the ferry-* headers, from attempt 1 again.
  CHECK(output_value(out, "replayed") == "1");
  CHECK(output_value(out, "replay attempt") == "1 headers 0");
  require_stats(d, "cpp-nack.dlq", {"depth=0"});
}

TEST_CASE("ferryd interop: a consumer silent past the heartbeat timeout loses its deliveries, resubscribes",
          "[interop][ferryd]") {
  ferryd_process d({"--heartbeat-ms", "200", "--heartbeat-timeout-ms", "1000"});
  test::child_process py(durable("silent", d, "cpp-silent"));
  require_output(py, "ready");
  std::vector<message> first;
  first.emplace_back("cpp-silent", "held by a silent consumer");
  const fields sent = produce(d, first).at(0);
  require_output(py, "held " + sent.id + " attempt 1");

  // Python now sends nothing. ferryd declares it dead and gives the message to the C++ consumer, counting
  // the attempt.
  context ctx;
  collector got;
  auto other = std::make_unique<consumer>(ctx, d.endpoint(), "cpp-silent", got.handler(),
                                          consumer_options{.heartbeat_interval = 200ms});
  REQUIRE(test::wait_until([&] { return got.size() >= 1; }, 30s));
  CHECK(got.sorted().at(0) == delivered(sent, "cpp-silent", 2));

  // Its late ACK settles nothing: ERROR not_consuming, and it subscribes again.
  py.write_stdin("wake\n");
  require_output(py, "idle");
  CHECK(output_value(py.out(), "errors").find("not_consuming") != std::string::npos);
  other.reset();  // CANCEL: from here on only the Python consumer takes messages
  // Python goes silent again holding nothing; wait until ferryd has dropped it.
  require_stats(d, "cpp-silent", {"consumers=0", "depth=0", "acked=1"});
  py.write_stdin("wake\n");
  std::vector<message> second;
  second.emplace_back("cpp-silent", "for the consumer that came back");
  const fields next = produce(d, second).at(0);
  require_success(py);  // it found out through its heartbeat's empty ACK, subscribed again, and got it
  CHECK(output_value(py.out(), "got").rfind(next.id + " attempt 1 resubscribed ", 0) == 0);
}

TEST_CASE("ferryd interop: the forwarder exchanges in docs/protocol.md match a real ferryd byte for byte",
          "[interop][ferryd]") {
  const std::vector<wire_message> exchanges = parse_exchanges();
  std::set<std::string> verbs;
  for (const auto& m : exchanges) verbs.insert(m.verb);
  CHECK(verbs == std::set<std::string>{"HELLO", "WELCOME", "SEND", "CONFIRM", "REFUSE", "CONSUME",
                                       "CONSUMING", "DELIVER", "NACK", "ACK", "ERROR", "PING", "PONG",
                                       "PUBLISH", "SUBSCRIBE"});
  // Both protocol versions: SEND and DELIVER in frame pairs (v1) and with one block (v2).
  std::set<std::pair<std::string, std::size_t>> forms_seen;
  for (const auto& m : exchanges)
    if (m.verb == "SEND" || m.verb == "DELIVER") forms_seen.emplace(m.verb, m.frame_count);
  CHECK(forms_seen == std::set<std::pair<std::string, std::size_t>>{
                          {"SEND", 4}, {"SEND", 3}, {"DELIVER", 5}, {"DELIVER", 4}});

  ferryd_process d;  // default flags: the document's CONSUMING shows the default lease and heartbeat
  context ctx;
  std::map<std::string, zmq::socket_t> sockets;
  for (const auto& m : exchanges)
    for (const auto& name : {m.from, m.to})
      if (name != "ferryd" && !sockets.count(name)) sockets.emplace(name, dealer(ctx, d.endpoint()));
  std::map<std::string, std::string> varying;  // NAME -> the bytes ferryd sent for it in this run
  std::vector<std::string> envelopes_delivered;

  for (std::size_t n = 0; n < exchanges.size(); ++n) {
    const wire_message& m = exchanges[n];
    INFO("exchange message " << n + 1 << ": " << m.from << " -> " << m.to << " " << m.verb);
    REQUIRE(m.frames.size() == m.frame_count);
    for (const auto& f : m.frames) {
      INFO("frame " << f.label);
      CHECK(f.byte_count() == f.size);  // the document agrees with itself
    }
    if (m.to == "ferryd") {
      std::vector<zmq::message_t> frames;
      for (const auto& f : m.frames) {
        std::string bytes;
        for (const auto& l : f.lines) {
          if (l.varies.empty()) {
            bytes += l.bytes;
            continue;
          }
          REQUIRE(varying.count(l.varies));  // a value ferryd sent earlier in the run, e.g. a token
          REQUIRE(varying[l.varies].size() == l.bytes.size());
          bytes += varying[l.varies];
        }
        frames.emplace_back(bytes.data(), bytes.size());
      }
      REQUIRE(m.frames.at(0).lines.size() == 1);
      CHECK(frames.at(0).to_string_view() == m.verb);
      REQUIRE(zmq::send_multipart(sockets.at(m.from), frames));
      continue;
    }
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(sockets.at(m.to), std::back_inserter(frames)));  // 10 s at most
    std::ostringstream got;
    for (const auto& f : frames) got << to_hex(f.to_string_view()) << " ";
    INFO("ferryd sent: " << got.str());
    REQUIRE(frames.size() == m.frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const wire_frame& expected = m.frames[i];
      const std::string actual(frames[i].to_string_view());
      INFO("frame " << i << ": " << expected.label);
      REQUIRE(actual.size() == expected.size);
      std::size_t at = 0;
      for (const auto& l : expected.lines) {
        const std::string part = actual.substr(at, l.bytes.size());
        at += l.bytes.size();
        if (l.varies.empty()) {
          CHECK(to_hex(part) == to_hex(l.bytes));
        } else if (const auto seen = varying.find(l.varies); seen != varying.end()) {
          CHECK(to_hex(part) == to_hex(seen->second));  // the same NAME holds the same bytes within a run
        } else {
          varying[l.varies] = part;
        }
      }
      if (m.verb == "DELIVER" && expected.label == "envelope") envelopes_delivered.push_back(actual);
    }
  }
  CHECK(varying.at("token 1") != varying.at("token 2"));
  CHECK(varying.at("token 3") != varying.at("token 4"));
  CHECK(varying.at("server").substr(1, 7) == "ferryd ");  // fixstr header, then "ferryd <release>"
  // The DELIVER envelopes are the storage form with the attempt patched: 1, then 2 after the NACK.
  REQUIRE(envelopes_delivered.size() == 2);
  for (std::uint32_t attempt = 1; attempt <= 2; ++attempt) {
    const std::string& env = envelopes_delivered[attempt - 1];
    CHECK(static_cast<unsigned char>(env.at(envelope_attempt_offset)) == 0xce);
    message decoded;
    REQUIRE(decode_envelope(env, decoded) == decode_error::none);
    CHECK(decoded.attempt() == attempt);
  }
  // The ACK in the document took effect (PONG on the consumer's connection came after it).
  require_stats(d, "jobs", {"depth=0", "confirmed=1", "acked=1", "nacked=1", "redelivered=1"});
  // The v2 part: both messages of the block stored and acknowledged; the block cut short stored nothing.
  require_stats(d, "orders", {"depth=0", "confirmed=2", "acked=2", "delivered=2", "deduplicated=0"});
  context actx;
  admin a(actx, d.endpoint());
  CHECK(a.stats().malformed_frames == 1);
}
