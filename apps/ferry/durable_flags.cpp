#include "durable_flags.hpp"

#include "detail/forwarder_protocol.hpp"

namespace ferry::cli {
namespace fwd = ferry::detail::fwd;

void add_forwarder_flags(CLI::App& cmd, forwarder_flags& f, const std::string& queue_help,
                         const std::string& name) {
  // Checked in check_forwarder_flags() rather than with required(), as in the brokerless commands: an
  // unknown flag is the more useful complaint.
  cmd.add_option("--forwarder", f.forwarder, "ferryd's ENDPOINT, e.g. tcp://127.0.0.1:5570 (required)")
      ->type_name("ENDPOINT");
  cmd.add_option(name, f.queue, queue_help)
      ->type_name(name == "--topic" ? "TOPIC" : "QUEUE")
      ->each([&f](const std::string&) { f.queue_given = true; });
}

void check_forwarder_flags(const forwarder_flags& f, queue_use use) {
  if (f.forwarder.empty())
    throw usage_error("--forwarder is required (ferryd's endpoint, e.g. tcp://127.0.0.1:5570)");
  if (use == queue_use::publish || use == queue_use::subscribe) {
    if (!f.queue_given) throw usage_error("--topic is required");
    if (!fwd::valid_queue_name(f.queue) || fwd::is_dlq_name(f.queue))
      throw usage_error("--topic '" + f.queue +
                        "' is not a topic name: 1-200 characters of A-Z a-z 0-9 . _ - not starting with '.', "
                        "not ending in .dlq");
    return;
  }
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

}  // namespace ferry::cli
