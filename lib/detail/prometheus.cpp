#include "detail/prometheus.hpp"

#include <fmt/format.h>

#include <array>
#include <string_view>
#include <utility>
#include <vector>

#include "detail/stats_schema.hpp"

namespace ferry::detail {
namespace {

namespace schema = stats_schema;

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// The metric's name after `prefix`, and the factor its value is multiplied by (base units: seconds).
std::pair<std::string, double> metric_name(std::string_view field, std::string_view unit,
                                           schema::field_kind kind) {
  std::string name(field);
  double scale = 1;
  if (unit == "milliseconds" && ends_with(name, "_ms")) {
    name.resize(name.size() - 3);
    name += "_seconds";
    scale = 1e-3;
  } else if (unit == "seconds" && ends_with(name, "_s")) {
    name.resize(name.size() - 2);
    name += "_seconds";
  }
  if (kind == schema::field_kind::counter) name += "_total";
  return {name, scale};
}

std::string_view type_of(schema::field_kind kind) {
  return kind == schema::field_kind::counter ? "counter" : "gauge";
}

void family(std::string& out, std::string_view full_name, std::string_view help, std::string_view type) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", full_name, help, full_name, type);
}

void sample(std::string& out, std::string_view full_name, std::string_view labels, double value) {
  fmt::format_to(std::back_inserter(out), "{}{}{}{}{}\n", full_name, labels.empty() ? "" : "{", labels,
                 labels.empty() ? "" : "}", fmt::format(" {}", value));
}

void sample(std::string& out, std::string_view full_name, std::string_view labels, std::uint64_t value) {
  fmt::format_to(std::back_inserter(out), "{}{}{}{} {}\n", full_name, labels.empty() ? "" : "{", labels,
                 labels.empty() ? "" : "}", value);
}

// Only a topic's subscription has these; a queue's would always be 0.
bool subscription_only(std::string_view field) {
  return field == "position" || field == "retention_skipped" || field == "truncated_starts";
}

}  // namespace

std::string prometheus_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string prometheus_text(const forwarder_stats& stats, std::size_t max_labelled) {
  std::string out;
  out.reserve(4096);

  // ferryd's own fields; the info ones are labels of ferry_build_info.
  std::string info_labels;
  for (const auto& f : schema::forwarder_fields) {
    if (f.kind != schema::field_kind::info) continue;
    if (!info_labels.empty()) info_labels += ',';
    std::string value;
    if (const auto* s = std::get_if<std::string forwarder_stats::*>(&f.member)) value = stats.**s;
    if (const auto* u = std::get_if<std::uint64_t forwarder_stats::*>(&f.member))
      value = std::to_string(stats.**u);
    // "instance" is the label Prometheus gives every target: this one is ferryd's own.
    fmt::format_to(std::back_inserter(info_labels), "{}=\"{}\"",
                   f.name == "instance" ? "ferryd_instance" : f.name, prometheus_label_value(value));
  }
  family(out, "ferry_build_info",
         "ferryd's version and instance (a new instance: ferryd restarted); always 1", "gauge");
  sample(out, "ferry_build_info", info_labels, std::uint64_t{1});
  for (const auto& f : schema::forwarder_fields) {
    if (f.kind == schema::field_kind::info) continue;
    const auto [name, scale] = metric_name(f.name, f.unit, f.kind);
    const std::string full = "ferry_" + name;
    family(out, full, f.help, type_of(f.kind));
    if (const auto* u = std::get_if<std::uint64_t forwarder_stats::*>(&f.member))
      sample(out, full, {},
             scale == 1 ? static_cast<double>(stats.**u) : static_cast<double>(stats.**u) * scale);
    if (const auto* d = std::get_if<double forwarder_stats::*>(&f.member))
      sample(out, full, {}, stats.**d * scale);
  }

  // Queues and subscriptions, each with its label set, at most max_labelled of each.
  std::vector<std::pair<std::string, const queue_stats*>> queues, subscriptions;
  std::size_t omitted_queues = 0, omitted_subscriptions = 0;
  for (const auto& [name, q] : stats.queues) {
    const auto at = name.find('@');
    if (at == std::string::npos) {
      if (queues.size() < max_labelled) {
        queues.emplace_back(fmt::format("queue=\"{}\"", prometheus_label_value(name)), &q);
      } else {
        ++omitted_queues;
      }
    } else if (subscriptions.size() < max_labelled) {
      subscriptions.emplace_back(fmt::format("topic=\"{}\",subscription=\"{}\"",
                                             prometheus_label_value(std::string_view(name).substr(0, at)),
                                             prometheus_label_value(std::string_view(name).substr(at + 1))),
                                 &q);
    } else {
      ++omitted_subscriptions;
    }
  }
  const std::array<std::pair<std::string_view, const decltype(queues)*>, 2> groups{
      {{"ferry_queue_", &queues}, {"ferry_subscription_", &subscriptions}}};
  for (const auto& [prefix, entries] : groups) {
    if (entries->empty()) continue;
    const bool is_subscription = prefix == "ferry_subscription_";
    for (const auto& f : schema::queue_fields) {
      if (!is_subscription && subscription_only(f.name)) continue;
      const auto [name, scale] = metric_name(f.name, f.unit, f.kind);
      const std::string full = std::string(prefix) + name;
      // A subscription's depth is its lag: what it has not settled yet.
      family(out, full,
             is_subscription && f.name == "depth"
                 ? "a subscription's lag: messages of its topic not settled yet"
                 : f.help,
             type_of(f.kind));
      for (const auto& [labels, q] : *entries) {
        const std::uint64_t v = q->*f.member;
        if (scale == 1) {
          sample(out, full, labels, v);
        } else {
          sample(out, full, labels, static_cast<double>(v) * scale);
        }
      }
    }
  }

  std::vector<std::pair<std::string, const topic_stats*>> topics;
  std::size_t omitted_topics = 0;
  for (const auto& [name, t] : stats.topics) {
    if (topics.size() < max_labelled) {
      topics.emplace_back(fmt::format("topic=\"{}\"", prometheus_label_value(name)), &t);
    } else {
      ++omitted_topics;
    }
  }
  if (!topics.empty()) {
    for (const auto& f : schema::topic_fields) {
      const auto [name, scale] = metric_name(f.name, f.unit, f.kind);
      const std::string full = "ferry_topic_" + name;
      family(out, full, f.help, type_of(f.kind));
      for (const auto& [labels, t] : topics) sample(out, full, labels, t->*f.member);
    }
  }

  family(out, "ferry_metrics_omitted",
         "queues, subscriptions and topics left out of these metrics (label cap)", "gauge");
  sample(out, "ferry_metrics_omitted", "kind=\"queue\"", static_cast<std::uint64_t>(omitted_queues));
  sample(out, "ferry_metrics_omitted", "kind=\"subscription\"",
         static_cast<std::uint64_t>(omitted_subscriptions));
  sample(out, "ferry_metrics_omitted", "kind=\"topic\"", static_cast<std::uint64_t>(omitted_topics));
  return out;
}

}  // namespace ferry::detail
