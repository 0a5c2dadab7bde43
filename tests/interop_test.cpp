// Interop: a Python client written from docs/protocol.md alone (tests/interop/ferry_py.py) against the C++
// library, in both directions and both wire versions, plus the doc's hex examples (envelopes, v1 and v2
// frames) and its Python snippet checked against both encoders and decoders.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
#include <zmq_addon.hpp>

#include "detail/wire.hpp"
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

// How a test's sender frames its messages: one at a time in "v2" or "v1", or "v2 batch" (send_batch,
// publish_batch). The words are also the Python scripts' arguments.
const char* const sending_modes[] = {"v2", "v1", "v2 batch"};

wire_options wire_of(const std::string& mode) {
  return {.version = mode == "v1" ? wire_version::v1 : wire_version::v2};
}

std::vector<std::string> words_of(const std::string& mode) {
  std::istringstream in(mode);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

bool batched(const std::string& mode) {
  return mode.find("batch") != std::string::npos;
}

/// The frames a receiver counted for the sender's version, and for the other one.
std::pair<std::uint64_t, std::uint64_t> frames_of(const receive_stats& s, const std::string& mode) {
  return mode == "v1" ? std::pair(s.v1_frames, s.v2_frames) : std::pair(s.v2_frames, s.v1_frames);
}

/// What a Python receiver printed as `frames v1=A v2=B`, for the sender's version and the other one.
std::pair<std::uint64_t, std::uint64_t> python_frames(const std::string& out, const std::string& mode) {
  const std::string line = output_value(out, "frames");
  const auto v1 = std::stoull(line.substr(line.find("v1=") + 3));
  const auto v2 = std::stoull(line.substr(line.find("v2=") + 3));
  return mode == "v1" ? std::pair(v1, v2) : std::pair(v2, v1);
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

struct doc_wire_example {
  std::map<std::string, std::string> spec;  // messages (example numbers), topic, form (packed or split)
  std::vector<std::string> frames;
};

std::string hex_bytes(const std::string& text) {
  std::string digits;
  for (char c : text)
    if (c != ' ') digits.push_back(c);
  return unhex(digits);
}

// Reads the machine-read blocks of docs/protocol.md (see its "Examples" section).
void parse_doc(std::vector<doc_example>& examples, std::vector<doc_variant>& variants,
               std::vector<doc_wire_example>& wires) {
  std::ifstream in(protocol_md);
  REQUIRE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const auto lines = lines_of(buffer.str());
  bool in_variants = false;
  bool after_wire = false;  // the last fields-like block was a wire block: a hex block lists its frames
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
    if (trim(line) == "```wire") {
      after_wire = true;
      doc_wire_example ex;
      for (++i; trim(lines[i]) != "```"; ++i) {
        const auto colon = lines[i].find(':');
        ex.spec[trim(lines[i].substr(0, colon))] = trim(lines[i].substr(colon + 1));
      }
      wires.push_back(std::move(ex));
    } else if (trim(line) == "```hex" && after_wire) {
      for (++i; trim(lines[i]) != "```"; ++i) {
        const std::string& l = lines[i];
        if (l.rfind("# frame ", 0) == 0)
          wires.back().frames.emplace_back();
        else if (l.rfind('#', 0) != 0) {
          REQUIRE_FALSE(wires.back().frames.empty());
          wires.back().frames.back() += hex_bytes(l.substr(0, l.find('#')));
        }
      }
    } else if (trim(line) == "```fields") {
      after_wire = false;
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
  const std::string mode =
      GENERATE(values<std::string>({sending_modes[0], sending_modes[1], sending_modes[2]}));
  INFO("python sends " << mode);
  context ctx;
  collector got;
  worker_pool pool(ctx, {.bind = {"tcp://127.0.0.1:*"}}, got.handler());
  std::vector<std::string> args{pool.bound().at(0)};
  for (auto& w : words_of(mode)) args.push_back(w);
  test::child_process py(python("push.py", args));
  require_output(py, "frames ");
  const std::vector<fields> sent = described(py.out());
  REQUIRE(sent.size() == std::stoul(output_value(py.out(), "sent")));
  const std::uint64_t frames = std::stoull(output_value(py.out(), "frames"));
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
  const receive_stats stats = pool.stats();
  CHECK(stats.malformed == 0);
  CHECK(frames_of(stats, mode) == std::pair<std::uint64_t, std::uint64_t>(frames, 0));
  CHECK((batched(mode) ? frames < sent.size() : frames == sent.size()));
}

TEST_CASE("interop: a ferry pusher's messages decode in a python PULL socket field by field", "[interop]") {
  const std::string mode =
      GENERATE(values<std::string>({sending_modes[0], sending_modes[1], sending_modes[2]}));
  INFO("ferry sends " << mode);
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
  messages.emplace_back("big", std::string(200'000, 'x'));  // v2: the split form
  messages.back().set_key(std::string(200, 'k'));           // str 8
  for (int i = 0; i < 20; ++i) messages.back().set_header("h" + std::to_string(i), "v");  // map 16
  messages.emplace_back("old", "before 1970");
  messages.back().set_timestamp_us(-1234);  // int 64
  messages.emplace_back("stream", "not from a publisher, but with stream fields");
  messages.back().set_stream(0xFFFFFFFFFFFFFFFFull, 1ull << 40);
  for (int i = 0; i < 3; ++i) messages.emplace_back("bulk", "bulk-" + std::to_string(i));  // one batch frame
  std::vector<fields> sent;
  for (const auto& m : messages) sent.push_back(fields::of(m));

  test::child_process py(python("pull.py", {std::to_string(messages.size())}));
  require_output(py, "ready");
  pusher push(ctx, {.connect = {output_value(py.out(), "endpoint")}}, {.wire = wire_of(mode)});
  if (batched(mode)) {
    REQUIRE(push.send_batch(messages).status == send_status::ok);
  } else {
    for (auto& m : messages) REQUIRE(push.send(m) == send_status::ok);
  }
  // The pusher stays open until Python has everything: no reliance on linger.
  require_success(py, 30s);
  CHECK(described(py.out()) == sent);
  CHECK(output_value(py.out(), "rejected") == "0");
  CHECK(python_frames(py.out(), mode) == std::pair<std::uint64_t, std::uint64_t>(push.stats().frames, 0));
  CHECK(push.stats().frames == (batched(mode) ? messages.size() - 2 : messages.size()));
}

TEST_CASE("interop: a python subscriber gets a ferry publisher's stream with origin and sequences",
          "[interop]") {
  const std::string mode =
      GENERATE(values<std::string>({sending_modes[0], sending_modes[1], sending_modes[2]}));
  INFO("ferry publishes " << mode);
  const bool v2 = mode != "v1";
  context ctx;
  publisher pub(ctx, {.bind = {"tcp://127.0.0.1:*"}}, {.wire = wire_of(mode)});
  // A prefix, and the exact topic "other" (which matches v2 frames only: a v1 topic frame has no 00).
  const std::vector<std::string> topics{"prices.eur", "prices.eur", "other",      "prices.usd",
                                        "prices.eur", "other.x",    "prices.usd", "prices.eur"};
  auto wanted = [&](const std::string& t) { return t.rfind("prices.", 0) == 0 || (v2 && t == "other"); };
  const auto count = std::count_if(topics.begin(), topics.end(), wanted);
  test::child_process py(
      python("subscribe.py", {pub.bound().at(0), std::to_string(count), "prices.", "other\\0"}));
  REQUIRE(pub.wait_for_subscriptions(2, 20s));  // the SUB's subscriptions reached us: no slow joiner
  std::vector<message> messages;
  std::vector<fields> all;
  for (const auto& topic : topics) {
    messages.emplace_back(topic, "price on " + topic);
    all.push_back(fields::of(messages.back()));  // before publishing, which may consume the payload
  }
  if (batched(mode)) {
    REQUIRE(pub.publish_batch(messages).status == send_status::ok);
  } else {
    for (auto& m : messages) REQUIRE(pub.publish(m) == send_status::ok);
  }
  std::vector<fields> expected;
  std::uint64_t frames = 0;  // frames with a wanted topic: a new one wherever the topic changes in a batch
  for (std::size_t i = 0; i < messages.size(); ++i) {
    all[i].origin = messages[i].origin();
    all[i].sequence = messages[i].sequence();
    if (!wanted(topics[i])) continue;
    expected.push_back(all[i]);
    if (!batched(mode) || i == 0 || topics[i] != topics[i - 1]) ++frames;
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
  CHECK(sequences["other"] == (v2 ? std::vector<std::uint64_t>{1} : std::vector<std::uint64_t>{}));
  CHECK(output_value(py.out(), "gaps") == "0");
  CHECK(python_frames(py.out(), mode) == std::pair<std::uint64_t, std::uint64_t>(frames, 0));
}

TEST_CASE("interop: a python publisher's stream reaches a ferry subscriber, which counts its gaps",
          "[interop]") {
  const std::string mode =
      GENERATE(values<std::string>({sending_modes[0], sending_modes[1], sending_modes[2]}));
  INFO("python publishes " << mode);
  context ctx;
  test::child_process py(python("publish.py", words_of(mode)));
  require_output(py, "origin ");
  const std::uint64_t origin = std::stoull(output_value(py.out(), "origin"));
  collector got;
  subscriber sub(ctx, {.connect = {output_value(py.out(), "endpoint")}}, {"ticks."}, got.handler());
  require_output(py, "frames ");
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
  const receive_stats stats = sub.stats();
  CHECK(stats.gaps == 3);  // 4 and 5 of ticks.a, 3 of ticks.b
  CHECK(stats.malformed == 0);
  // Every frame but the one of "other.x", which the subscription filters out at the publisher.
  const std::uint64_t frames = std::stoull(output_value(py.out(), "frames")) - 1;
  CHECK(frames_of(stats, mode) == std::pair<std::uint64_t, std::uint64_t>(frames, 0));
  CHECK((batched(mode) ? frames < expected.size() : frames == expected.size()));
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
  REQUIRE(bad >= 45);
  REQUIRE(good == 2);
  // The valid message sent last arrives after every bad one (one connection keeps order).
  REQUIRE(test::wait_until([&] { return got.size() == good; }, 20s));
  py.close_stdin();
  require_success(py, 10s);  // non-zero: ferry_py's decoder named a different reason (printed)
  const receive_stats stats = pool.stats();
  CHECK(stats.malformed == bad);
  CHECK(stats.received == good);
  CHECK(stats.handled == good);
  CHECK(stats.v1_frames == 1);  // "before"
  CHECK(stats.v2_frames == 1);  // "after"
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
  REQUIRE(cases.size() >= 45);
  detail::frame_reader reader;  // what worker_pool and subscriber decode with
  for (const auto& [name, reason] : cases) {
    INFO("case " << name);
    const detail::receive_status st = reader.receive(pull, true);
    REQUIRE((st == detail::receive_status::ok || st == detail::receive_status::rejected));
    CHECK(to_string(st == detail::receive_status::ok ? decode_error::none : reader.error()) == reason);
  }
  py.close_stdin();
  require_success(py, 10s);
}

TEST_CASE("interop: the hex examples in docs/protocol.md are what both encoders write and both decoders read",
          "[interop]") {
  std::vector<doc_example> examples;
  std::vector<doc_variant> variants;
  std::vector<doc_wire_example> wires;
  parse_doc(examples, variants, wires);
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

  // Wire v2: a real pusher writes exactly the listed frames, and the receivers' decoder reads them back.
  REQUIRE(wires.size() >= 3);
  context ctx;
  zmq::socket_t pull = ctx.make_socket(zmq::socket_type::pull);
  pull.set(zmq::sockopt::rcvtimeo, 5000);
  pull.bind("inproc://interop-doc-wire");
  zmq::socket_t raw = ctx.make_socket(zmq::socket_type::push);
  raw.connect("inproc://interop-doc-wire");
  detail::frame_reader reader;
  bool batch = false, split = false;
  for (std::size_t n = 0; n < wires.size(); ++n) {
    const doc_wire_example& ex = wires[n];
    INFO("wire example " << n + 1);
    std::vector<message> msgs;
    std::vector<fields> want;
    std::istringstream numbers(ex.spec.at("messages"));
    for (std::size_t k = 0; numbers >> k;) {
      msgs.push_back(message_of(examples.at(k - 1)));
      msgs.back().set_topic(ex.spec.at("topic"));
      want.push_back(fields::of(msgs.back()));
    }
    const bool split_form = ex.spec.at("form") == "split";
    REQUIRE(ex.frames.size() == (split_form ? 2u : 1u));
    wire_options wire;
    if (split_form) wire.split_payload = 1;  // as the example says: ferry itself splits from 32 KiB
    pusher push(ctx, {.connect = {"inproc://interop-doc-wire"}}, {.wire = wire});
    const batch_status r = push.send_batch(msgs);
    REQUIRE(r.sent == msgs.size());
    CHECK(r.frames == 1);
    std::vector<zmq::message_t> written;
    REQUIRE(zmq::recv_multipart(pull, std::back_inserter(written)));
    REQUIRE(written.size() == ex.frames.size());
    for (std::size_t i = 0; i < written.size(); ++i)
      CHECK(to_hex(written[i].to_string_view()) == to_hex(ex.frames[i]));

    for (std::size_t i = 0; i < ex.frames.size(); ++i)
      REQUIRE(raw.send(zmq::buffer(ex.frames[i]),
                       i + 1 < ex.frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none));
    REQUIRE(reader.receive(pull, true) == detail::receive_status::ok);
    std::vector<fields> read;
    for (const message& m : reader.messages()) read.push_back(fields::of(m));
    CHECK(read == want);
    batch |= msgs.size() >= 2;
    split |= split_form;
  }
  CHECK(batch);
  CHECK(split);

  const auto py = test::run(python("doc_examples.py", {protocol_md}), "", 30s);
  INFO(py.out << py.err);
  CHECK(py.code == 0);
  CHECK(py.out.find("examples " + std::to_string(examples.size()) + " variants " +
                    std::to_string(variants.size()) + " wire " + std::to_string(wires.size()) + " ok") !=
        std::string::npos);
}

TEST_CASE("interop: the Python snippet of docs/protocol.md splits what a ferry pusher sends, in every form",
          "[interop]") {
  context ctx;
  std::vector<message> one;
  one.emplace_back("jobs", "packed alone");
  one.back().set_key("k");
  one.back().set_header("content-type", "text/plain");
  one.emplace_back("blobs", std::string(40'000, 'b'));  // the split form
  one.emplace_back("", "empty topic");
  std::vector<message> batch;
  for (int i = 0; i < 5; ++i) batch.emplace_back("bulk", "bulk-" + std::to_string(i));
  message old("legacy", "wire v1");
  std::vector<fields> sent;
  for (const auto* list : {&one, &batch})
    for (const auto& m : *list) sent.push_back(fields::of(m));
  sent.push_back(fields::of(old));
  const std::size_t frame_sets = one.size() + 1 + 1;  // each of `one`, the batch, the v1 message

  test::child_process py(python("doc_examples.py", {protocol_md, "--pull", std::to_string(frame_sets)}));
  require_output(py, "ready");
  const std::string endpoint = output_value(py.out(), "endpoint");
  pusher v2(ctx, {.connect = {endpoint}});
  pusher v1(ctx, {.connect = {endpoint}}, {.wire = {.version = wire_version::v1}});
  for (auto& m : one) REQUIRE(v2.send(m) == send_status::ok);
  REQUIRE(v2.send_batch(batch).frames == 1);
  REQUIRE(v1.send(old) == send_status::ok);
  require_success(py, 30s);
  auto got = described(py.out());
  sort_by_id(got);  // two pushers: no order between them
  sort_by_id(sent);
  CHECK(got == sent);
}
