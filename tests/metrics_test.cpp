// ferryd's monitoring endpoint: the Prometheus text of a STATS (detail/prometheus.hpp) checked line by
// line, and /metrics and /healthz served by metrics_http for a ferryd in this process, scraped while
// messages go through it, before it is attached (recovering), on a full disk and after it stopped.

#include <httplib.h>

#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "detail/prometheus.hpp"
#include "ferry/admin.hpp"
#include "ferry/consumer.hpp"
#include "ferry/producer.hpp"
#include "metrics_http.hpp"
#include "support/running_forwarder.hpp"
#include "support/test_support.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

// Sample lines "name{labels} value" -> value; checks the text's structure on the way: every sample's
// family was announced by one # TYPE line before it, and no family's samples are split up.
std::map<std::string, std::string> parse_exposition(const std::string& text) {
  std::map<std::string, std::string> samples;
  std::set<std::string> typed, finished;
  std::string current;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    INFO(line);
    REQUIRE(!line.empty());
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      CHECK((type == "counter" || type == "gauge"));
      CHECK(typed.insert(name).second);
      if (!current.empty()) finished.insert(current);
      current = name;
      continue;
    }
    const auto end = line.find_first_of("{ ");
    REQUIRE(end != std::string::npos);
    const std::string family = line.substr(0, end);
    CHECK(family == current);
    CHECK(finished.count(family) == 0);
    if (family.size() > 6 && family.substr(family.size() - 6) == "_total")
      CHECK(text.find("# TYPE " + family + " counter\n") != std::string::npos);
    const auto space = line.rfind(' ');
    samples[line.substr(0, space)] = line.substr(space + 1);
  }
  return samples;
}

}  // namespace

TEST_CASE("STATS as Prometheus text: names, labels, units, escaping and the label cap", "[metrics]") {
  forwarder_stats st;
  st.server = "ferryd 9.9.9";
  st.instance = 42;
  st.uptime_s = 12.5;
  st.commits = 7;
  st.fsync_seconds = 0.25;
  st.disk_full = 1;
  st.queues["jobs"].depth = 3;
  st.queues["jobs"].confirmed = 10;
  st.queues["jobs"].next_due_ms = 1500;
  st.queues["jobs.dlq"].depth = 1;
  st.queues["odd\"name\\x"].acked = 2;
  st.queues["prices@audit"].depth = 4;  // a subscription's lag
  st.queues["prices@audit"].position = 17;
  st.topics["prices"].published = 20;
  st.topics["prices"].disk_bytes = 4096;

  const auto m = parse_exposition(detail::prometheus_text(st));
  CHECK(m.at(R"(ferry_build_info{server="ferryd 9.9.9",ferryd_instance="42"})") == "1");
  CHECK(m.at("ferry_uptime_seconds") == "12.5");
  CHECK(m.at("ferry_commits_total") == "7");
  CHECK(m.at("ferry_fsync_seconds_total") == "0.25");
  CHECK(m.at("ferry_disk_full") == "1");
  CHECK(m.at(R"(ferry_queue_depth{queue="jobs"})") == "3");
  CHECK(m.at(R"(ferry_queue_confirmed_total{queue="jobs"})") == "10");
  CHECK(m.at(R"(ferry_queue_next_due_seconds{queue="jobs"})") == "1.5");
  CHECK(m.at(R"(ferry_queue_depth{queue="jobs.dlq"})") == "1");
  CHECK(m.at(R"(ferry_queue_acked_total{queue="odd\"name\\x"})") == "2");
  CHECK(m.at(R"(ferry_subscription_depth{topic="prices",subscription="audit"})") == "4");
  CHECK(m.at(R"(ferry_subscription_position{topic="prices",subscription="audit"})") == "17");
  CHECK(m.at(R"(ferry_topic_published_total{topic="prices"})") == "20");
  CHECK(m.at(R"(ferry_topic_disk_bytes{topic="prices"})") == "4096");
  CHECK(m.count(R"(ferry_queue_position{queue="jobs"})") == 0);  // a subscription's field only
  CHECK(m.count(R"(ferry_queue_depth{queue="prices@audit"})") == 0);
  CHECK(m.at(R"(ferry_metrics_omitted{kind="queue"})") == "0");

  // With room for two queues: the first two by name get series, the third is counted as left out.
  const auto capped = parse_exposition(detail::prometheus_text(st, 2));
  CHECK(capped.count(R"(ferry_queue_depth{queue="jobs"})") == 1);
  CHECK(capped.count(R"(ferry_queue_depth{queue="jobs.dlq"})") == 1);
  CHECK(capped.count(R"(ferry_queue_acked_total{queue="odd\"name\\x"})") == 0);
  CHECK(capped.at(R"(ferry_metrics_omitted{kind="queue"})") == "1");
  CHECK(capped.at(R"(ferry_metrics_omitted{kind="subscription"})") == "0");

  CHECK(detail::prometheus_label_value("a\nb") == "a\\nb");
}

TEST_CASE("ferryd's /metrics counts what went through it, and /healthz follows its state",
          "[metrics][forwarder]") {
  ferryd::metrics_http http("127.0.0.1:0");
  REQUIRE(http.port() > 0);
  httplib::Client client("127.0.0.1", http.port());
  client.set_read_timeout(10, 0);

  // Before it is attached (ferryd recovering its data directory).
  auto r = client.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body == "recovering\n");
  REQUIRE(client.Get("/metrics"));
  CHECK(client.Get("/metrics")->status == 503);

  test::running_forwarder fwdr;
  http.attach(fwdr.f->local_context(), fwdr.f->local_endpoint());
  r = client.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "ok\n");

  context ctx;
  {
    producer p(ctx, fwdr.endpoint);
    for (int i = 0; i < 25; ++i) {
      message msg("jobs", "job " + std::to_string(i));
      REQUIRE(p.send(msg) == send_status::ok);
    }
    REQUIRE(p.flush(10s));
  }
  r = client.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type").find("version=0.0.4") != std::string::npos);
  auto m = parse_exposition(r->body);
  CHECK(m.at(R"(ferry_queue_confirmed_total{queue="jobs"})") == "25");
  CHECK(m.at(R"(ferry_queue_depth{queue="jobs"})") == "25");
  CHECK(std::stod(m.at(R"(ferry_queue_disk_bytes{queue="jobs"})")) > 25 * 5);
  CHECK(std::stoull(m.at("ferry_commits_total")) >= 1);

  {
    std::atomic<int> handled{0};
    consumer c(ctx, fwdr.endpoint, "jobs", [&](message&) { ++handled; });
    REQUIRE(test::wait_until(
        [&] {
          const auto got = client.Get("/metrics");
          if (!got || got->status != 200) return false;
          const auto now = parse_exposition(got->body);
          return now.at(R"(ferry_queue_acked_total{queue="jobs"})") == "25";
        },
        15s));
    m = parse_exposition(client.Get("/metrics")->body);
    CHECK(m.at(R"(ferry_queue_depth{queue="jobs"})") == "0");
    CHECK(m.at(R"(ferry_queue_delivered_total{queue="jobs"})") == "25");
    CHECK(m.at(R"(ferry_queue_consumers{queue="jobs"})") == "1");
    CHECK(handled == 25);
  }

  // Stopped: the forwarder is gone, the endpoint says so.
  http.detach();
  fwdr.stop();
  r = client.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body == "stopping\n");
  CHECK(client.Get("/nothing-here")->status == 404);
}

TEST_CASE("/healthz is 503 while ferryd refuses writes for lack of disk space", "[metrics][forwarder]") {
  ferryd::forwarder_options o;
  o.min_free_bytes = std::uint64_t{1} << 60;  // more than any disk has: producers are refused at once
  test::running_forwarder fwdr(o);
  ferryd::metrics_http http("127.0.0.1:0");
  http.attach(fwdr.f->local_context(), fwdr.f->local_endpoint());
  httplib::Client client("127.0.0.1", http.port());
  client.set_read_timeout(10, 0);
  std::string body;
  REQUIRE(test::wait_until(
      [&] {
        const auto r = client.Get("/healthz");
        if (!r || r->status != 503) return false;
        body = r->body;
        return true;
      },
      10s));
  CHECK(body == "refusing writes: disk_full\n");
  const auto m = parse_exposition(client.Get("/metrics")->body);
  CHECK(m.at("ferry_disk_full") == "1");
  http.detach();
}

TEST_CASE("a bad --metrics address is a clear startup error", "[metrics]") {
  CHECK_THROWS_WITH(ferryd::metrics_http("9464"), Catch::Contains("use HOST:PORT"));
  CHECK_THROWS_WITH(ferryd::metrics_http("127.0.0.1:http"), Catch::Contains("use HOST:PORT"));
  CHECK_THROWS_WITH(ferryd::metrics_http("127.0.0.1:70000"), Catch::Contains("use HOST:PORT"));
  ferryd::metrics_http taken("127.0.0.1:0");
  CHECK_THROWS_WITH(ferryd::metrics_http("127.0.0.1:" + std::to_string(taken.port())),
                    Catch::Contains("cannot listen there"));
}
