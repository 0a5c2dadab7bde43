// Interop: a Python client written from docs/protocol.md alone (tests/interop/ferry_py.py) against the C++
// library, in both directions, plus the doc's hex examples checked against both encoders and decoders.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
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

// -B: no __pycache__ in the source tree; -u: every line reaches us as soon as it is printed.
std::vector<std::string> python(const std::string& script, std::vector<std::string> args = {}) {
  std::vector<std::string> argv{"/usr/bin/python3", "-B", "-u", interop_dir + script};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

bool has_id_layout(const message_id& id) {
  const auto& b = id.bytes();
  const auto now_ms = static_cast<std::int64_t>(unix_now_us() / 1000);
  return (b[6] >> 4) == 7 && (b[8] >> 6) == 0b10 &&
         std::abs(static_cast<std::int64_t>(id.unix_ms()) - now_ms) < 600'000;
}

// --- docs/protocol.md examples ---------------------------------------------------------------------------

struct doc_example {
  std::map<std::string, std::string> fields;  // "header" lines collected separately
  ferry::headers headers;
  std::map<std::string, std::string> sections;  // topic, envelope, payload, storage
};

struct doc_variant {
  std::string name, before, after;
};

std::string hex_bytes(const std::string& text) {
  std::string digits;
  for (char c : text)
    if (c != ' ') digits.push_back(c);
  return unhex(digits);
}

// Reads the machine-read blocks of docs/protocol.md (see its "Examples" section).
void parse_doc(std::vector<doc_example>& examples, std::vector<doc_variant>& variants) {
  std::ifstream in(protocol_md);
  REQUIRE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const auto lines = lines_of(buffer.str());
  bool in_variants = false;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.rfind('#', 0) == 0) in_variants = line.rfind("### Envelopes a decoder must also accept", 0) == 0;
    if (in_variants && line.rfind('|', 0) == 0) {
      std::vector<std::string> quoted;
      for (auto open = line.find('`'); open != std::string::npos; open = line.find('`', open + 1)) {
        const auto close = line.find('`', open + 1);
        quoted.push_back(line.substr(open + 1, close - open - 1));
        open = close;
      }
      if (quoted.size() == 2)
        variants.push_back(
            {trim(line.substr(1, line.find('|', 1) - 1)), hex_bytes(quoted[0]), hex_bytes(quoted[1])});
    }
    if (trim(line) == "```fields") {
      doc_example ex;
      for (++i; trim(lines[i]) != "```"; ++i) {
        const auto colon = lines[i].find(':');
        const std::string name = trim(lines[i].substr(0, colon)), value = trim(lines[i].substr(colon + 1));
        if (name == "header") {
          const auto eq = value.find('=');
          ex.headers[value.substr(0, eq)] = value.substr(eq + 1);
        } else {
          ex.fields[name] = value;
        }
      }
      examples.push_back(std::move(ex));
    } else if (trim(line) == "```hex") {
      REQUIRE_FALSE(examples.empty());
      std::string* current = nullptr;
      for (++i; trim(lines[i]) != "```"; ++i) {
        const std::string& l = lines[i];
        static const std::pair<const char*, const char*> labels[] = {
            {"# frame 0", "topic"},
            {"# frame 1", "envelope"},
            {"# frame 2", "payload"},
            {"# envelope in storage form", "storage"}};
        bool labelled = false;
        for (const auto& [prefix, section] : labels)
          if (l.rfind(prefix, 0) == 0) {
            current = &examples.back().sections[section];
            labelled = true;
          }
        if (labelled || l.rfind('#', 0) == 0) continue;
        REQUIRE(current != nullptr);
        *current += hex_bytes(l.substr(0, l.find('#')));
      }
    }
  }
}

message message_of(const doc_example& ex) {
  auto field = [&](const std::string& name) {
    const auto it = ex.fields.find(name);
    REQUIRE(it != ex.fields.end());
    return it->second;
  };
  message m(field("topic"), field("payload"));
  m.set_id(*message_id::from_hex(field("id")));
  m.set_timestamp_us(std::stoll(field("timestamp_us")));
  m.set_attempt(static_cast<std::uint32_t>(std::stoul(field("attempt"))));
  if (field("key") != "(none)") m.set_key(field("key"));
  m.headers() = ex.headers;
  m.set_stream(std::stoull(field("origin")), std::stoull(field("sequence")));
  return m;
}

}  // namespace

TEST_CASE("interop: a python producer's messages reach a worker_pool with every field intact", "[interop]") {
  context ctx;
  collector got;
  worker_pool pool(ctx, {.bind = {"tcp://127.0.0.1:*"}}, got.handler());
  test::child_process py(python("push.py", {pool.bound().at(0)}));
  require_output(py, "sent ");
  const std::vector<fields> sent = described(py.out());
  REQUIRE(sent.size() == std::stoul(output_value(py.out(), "sent")));
  REQUIRE(test::wait_until([&] { return got.size() == sent.size(); }, 20s));
  py.close_stdin();  // we have everything: the producer may exit now
  require_success(py, 10s);

  std::lock_guard lock(got.mutex);
  CHECK(got.seen == sent);  // one pusher, one pool, one handler thread: order is kept
  std::optional<message_id> previous;
  for (const auto& f : sent) {
    const auto id = message_id::from_hex(f.id);
    REQUIRE(id);
    CHECK(has_id_layout(*id));
    if (previous) CHECK(*previous < *id);  // one Python generator: ids increase
    previous = id;
  }
  CHECK(pool.stats().malformed == 0);
}

TEST_CASE("interop: a ferry pusher's messages decode in a python PULL socket field by field", "[interop]") {
  context ctx;
  std::vector<message> messages;
  messages.emplace_back("jobs", "hello");
  messages.emplace_back("orders", "{\"total\":42}");
  messages.back().set_key("customer-17");
  messages.back().set_header("content-type", "application/json");
  messages.back().set_header("trace-id", "4bf92f3577b34da6");
  std::string every_byte;
  for (int i = 0; i < 256; ++i) every_byte.push_back(static_cast<char>(i));
  messages.emplace_back("blobs", every_byte);
  messages.back().set_key("cl\xc3\xa9-\xc3\xbc");  // UTF-8
  messages.back().set_attempt(70'000);             // uint 32
  messages.emplace_back("", "");                   // empty topic and payload
  messages.back().set_header("empty", "");
  messages.emplace_back("big", std::string(200'000, 'x'));
  messages.back().set_key(std::string(200, 'k'));                                         // str 8
  for (int i = 0; i < 20; ++i) messages.back().set_header("h" + std::to_string(i), "v");  // map 16
  messages.emplace_back("old", "before 1970");
  messages.back().set_timestamp_us(-1234);  // int 64
  messages.emplace_back("stream", "not from a publisher, but with stream fields");
  messages.back().set_stream(0xFFFFFFFFFFFFFFFFull, 1ull << 40);
  std::vector<fields> sent;
  for (const auto& m : messages) sent.push_back(fields::of(m));

  test::child_process py(python("pull.py", {std::to_string(messages.size())}));
  require_output(py, "ready");
  pusher push(ctx, {.connect = {output_value(py.out(), "endpoint")}});
  for (auto& m : messages) REQUIRE(push.send(m) == send_status::ok);
  // The pusher stays open until Python has everything: no reliance on linger.
  require_success(py, 30s);
  CHECK(described(py.out()) == sent);
  CHECK(output_value(py.out(), "rejected") == "0");
}

TEST_CASE("interop: a python subscriber gets a ferry publisher's stream with origin and sequences",
          "[interop]") {
  context ctx;
  publisher pub(ctx, {.bind = {"tcp://127.0.0.1:*"}});
  test::child_process py(python("subscribe.py", {pub.bound().at(0), "6", "prices."}));
  REQUIRE(pub.wait_for_subscriptions(1, 20s));  // the SUB's subscription reached us: no slow joiner
  std::vector<fields> expected;
  for (const char* topic : {"prices.eur", "prices.eur", "other", "prices.usd", "prices.eur", "other.x",
                            "prices.usd", "prices.eur"}) {
    message m(topic, std::string("price on ") + topic);
    fields f = fields::of(m);  // before publish(), which consumes the payload
    REQUIRE(pub.publish(m) == send_status::ok);
    f.origin = m.origin();
    f.sequence = m.sequence();
    if (std::string_view(topic).rfind("prices.", 0) == 0) expected.push_back(f);
  }
  require_success(py, 30s);
  const auto got = described(py.out());
  CHECK(got == expected);
  std::map<std::string, std::vector<std::uint64_t>> sequences;
  for (const auto& f : got) {
    CHECK(f.origin == pub.origin());
    sequences[f.topic].push_back(f.sequence);
  }
  CHECK(sequences["prices.eur"] == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(sequences["prices.usd"] == std::vector<std::uint64_t>{1, 2});
  CHECK(output_value(py.out(), "gaps") == "0");
}

TEST_CASE("interop: a python publisher's stream reaches a ferry subscriber, which counts its gaps",
          "[interop]") {
  context ctx;
  test::child_process py(python("publish.py"));
  require_output(py, "origin ");
  const std::uint64_t origin = std::stoull(output_value(py.out(), "origin"));
  collector got;
  subscriber sub(ctx, {.connect = {output_value(py.out(), "endpoint")}}, {"ticks."}, got.handler());
  require_output(py, "published ");
  const std::vector<fields> sent = described(py.out());
  std::vector<fields> expected;
  std::copy_if(sent.begin(), sent.end(), std::back_inserter(expected),
               [](const fields& f) { return f.topic.rfind("ticks.", 0) == 0; });
  REQUIRE(expected.size() == 8);
  REQUIRE(test::wait_until([&] { return got.size() == expected.size(); }, 20s));
  py.close_stdin();
  require_success(py, 10s);

  std::lock_guard lock(got.mutex);
  CHECK(got.seen == expected);
  std::map<std::string, std::vector<std::uint64_t>> sequences;
  for (const auto& f : got.seen) {
    CHECK(f.origin == origin);
    sequences[f.topic].push_back(f.sequence);
  }
  CHECK(sequences["ticks.a"] == std::vector<std::uint64_t>{1, 2, 3, 6, 7});
  CHECK(sequences["ticks.b"] == std::vector<std::uint64_t>{1, 2, 4});
  CHECK(sub.stats().gaps == 3);  // 4 and 5 of ticks.a, 3 of ticks.b
  CHECK(sub.stats().malformed == 0);
}

TEST_CASE("interop: malformed frames from python are rejected and counted, and the worker_pool keeps serving",
          "[interop]") {
  context ctx;
  collector got;
  worker_pool pool(ctx, {.bind = {"tcp://127.0.0.1:*"}}, got.handler());
  test::child_process py(python("malformed.py", {pool.bound().at(0)}));
  require_output(py, "sent ");
  std::uint64_t bad = 0, good = 0;
  for (const auto& line : lines_of(py.out()))
    if (line.rfind("case ", 0) == 0) (line.substr(line.rfind(' ') + 1) == "none" ? good : bad) += 1;
  REQUIRE(bad >= 20);
  REQUIRE(good == 2);
  // The valid message sent last arrives after every bad one (one connection keeps order).
  REQUIRE(test::wait_until([&] { return got.size() == good; }, 20s));
  py.close_stdin();
  require_success(py, 10s);  // non-zero: ferry_py's decoder named a different reason (printed)
  const receive_stats stats = pool.stats();
  CHECK(stats.malformed == bad);
  CHECK(stats.received == good);
  CHECK(stats.handled == good);
  std::lock_guard lock(got.mutex);
  CHECK(got.seen.at(0).payload == "before");
  CHECK(got.seen.at(1).payload == "after");
}

TEST_CASE("interop: the C++ decoder names each malformed python frame set as docs/protocol.md does",
          "[interop]") {
  context ctx;
  zmq::socket_t pull = ctx.make_socket(zmq::socket_type::pull);
  pull.set(zmq::sockopt::rcvtimeo, 20'000);
  const std::string endpoint = ferry::bind(pull, "tcp://127.0.0.1:*");
  test::child_process py(python("malformed.py", {endpoint}));
  require_output(py, "sent ");
  std::vector<std::pair<std::string, std::string>> cases;  // name, reason
  for (const auto& line : lines_of(py.out())) {
    if (line.rfind("case ", 0) != 0) continue;
    std::istringstream words(line.substr(5));
    std::string name, reason;
    words >> name >> reason;
    cases.emplace_back(name, reason);
  }
  REQUIRE(cases.size() >= 20);
  const decode_limits limits;
  for (const auto& [name, reason] : cases) {
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(pull, std::back_inserter(frames)));
    // The receiver's order of checks (docs/protocol.md, "Malformed input").
    decode_error error = decode_error::none;
    message out;
    if (frames.size() != 3)
      error = decode_error::frame_count;
    else if (frames[0].size() > limits.max_topic)
      error = decode_error::topic_too_long;
    else
      error = decode_envelope(frames[1].to_string_view(), out, limits);
    INFO("case " << name);
    CHECK(to_string(error) == reason);
  }
  py.close_stdin();
  require_success(py, 10s);
}

TEST_CASE("interop: the hex examples in docs/protocol.md are what both encoders write and both decoders read",
          "[interop]") {
  std::vector<doc_example> examples;
  std::vector<doc_variant> variants;
  parse_doc(examples, variants);
  REQUIRE(examples.size() >= 4);

  bool plain_32 = false, keyed = false, stream = false, storage = false;
  for (std::size_t n = 0; n < examples.size(); ++n) {
    INFO("example " << n + 1);
    const doc_example& ex = examples[n];
    const message m = message_of(ex);
    const bool storage_form = ex.fields.count("form") && ex.fields.at("form") == "storage";
    const envelope_form form = storage_form ? envelope_form::storage : envelope_form::compact;
    const std::string& listed = ex.sections.at(storage_form ? "storage" : "envelope");

    std::string written(envelope_size(m, form), '\0');
    encode_envelope(m, written.data(), form);
    CHECK(to_hex(written) == to_hex(listed));

    message decoded;
    REQUIRE(decode_envelope(listed, decoded) == decode_error::none);
    decoded.set_topic(m.topic());
    decoded.set_payload(m.payload());
    CHECK(fields::of(decoded) == fields::of(m));

    if (storage_form) {
      CHECK(static_cast<unsigned char>(listed.at(envelope_attempt_offset)) == 0xce);
      storage = true;
    } else {
      CHECK(ex.sections.at("topic") == m.topic());
      CHECK(ex.sections.at("payload") == m.payload());
      plain_32 |= listed.size() == 32 && !m.has_key() && m.headers().empty();
      keyed |= m.has_key() && m.headers().size() >= 2;
      stream |= m.origin() != 0 && m.sequence() != 0;
    }
  }
  CHECK(plain_32);
  CHECK(keyed);
  CHECK(stream);
  CHECK(storage);

  REQUIRE(variants.size() >= 5);
  const message first = message_of(examples.at(0));
  for (const auto& v : variants) {
    INFO("variation " << v.name);
    message decoded;
    REQUIRE(decode_envelope(v.before + std::string(first.id().view()) + v.after, decoded) ==
            decode_error::none);
    decoded.set_topic(first.topic());
    decoded.set_payload(first.payload());
    CHECK(fields::of(decoded) == fields::of(first));
  }

  const auto py = test::run(python("doc_examples.py", {protocol_md}), "", 30s);
  INFO(py.out << py.err);
  CHECK(py.code == 0);
  CHECK(py.out.find("examples " + std::to_string(examples.size()) + " variants " +
                    std::to_string(variants.size()) + " ok") != std::string::npos);
}
