#pragma once
// ferryd's STATS as the Prometheus text exposition format (version 0.0.4), for ferryd's /metrics: every
// field of stats_schema.hpp becomes a metric, so a new STATS field is exported without a line here.
//
// Names: ferry_<field> for ferryd's own fields, ferry_queue_<field>{queue}, ferry_subscription_<field>
// {topic, subscription} for a topic's subscription ("topic@name" in STATS), ferry_topic_<field>{topic}.
// Counters end in _total; milliseconds are exported as seconds (next_due_ms: next_due_seconds).
// server and instance are labels of ferry_build_info. docs/operations.md lists them all.

#include <cstddef>
#include <string>

#include "ferry/admin.hpp"

namespace ferry::detail {

/// The exposition text of `stats`. At most `max_labelled` queues, subscriptions and topics each (the first
/// by name) get series; ferry_metrics_omitted{kind} counts the rest, so a runaway number of queue names
/// cannot blow up the scraper.
[[nodiscard]] std::string prometheus_text(const forwarder_stats& stats, std::size_t max_labelled = 1000);

/// `value` as a label value: backslash, double quote and newline escaped.
[[nodiscard]] std::string prometheus_label_value(std::string_view value);

}  // namespace ferry::detail
