#include "metrics_http.hpp"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <mutex>

#include "detail/log.hpp"
#include "detail/prometheus.hpp"
#include "exit_codes.hpp"
#include "ferry/admin.hpp"
#include "ferry/error.hpp"

namespace ferry::ferryd {
namespace {

constexpr auto stats_timeout = std::chrono::milliseconds(2000);
constexpr const char* text_plain = "text/plain; charset=utf-8";
constexpr const char* prometheus_type = "text/plain; version=0.0.4; charset=utf-8";

// "host:port", "[v6]:port" or ":port" -> host (0.0.0.0 for none) and port.
std::pair<std::string, int> split_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? std::string() : listen.substr(0, colon);
  const std::string port = colon == std::string::npos ? listen : listen.substr(colon + 1);
  int p = -1;
  try {
    std::size_t used = 0;
    p = std::stoi(port, &used);
    if (used != port.size()) p = -1;
  } catch (const std::exception&) {
  }
  if (colon == std::string::npos || p < 0 || p > 65535)
    throw startup_error(exit_usage, fmt::format("--metrics {}: use HOST:PORT, e.g. 127.0.0.1:9464", listen));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  return {host, p};
}

}  // namespace

metrics_http::metrics_http(const std::string& listen) : server_(std::make_unique<httplib::Server>()) {
  const auto [host, port] = split_listen(listen);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would let a second ferryd share
  // the port silently instead of failing to start.
  server_->set_socket_options([](int sock) {
    const int yes = 1;
    (void)::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server_->set_read_timeout(std::chrono::seconds(5));
  server_->set_write_timeout(std::chrono::seconds(5));
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const answer a = metrics();
    res.status = a.status;
    res.set_content(a.body, a.content_type);
  });
  server_->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    const answer a = health();
    res.status = a.status;
    res.set_content(a.body, a.content_type);
  });
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
  } else if (server_->bind_to_port(host, port)) {
    port_ = port;
  }
  if (port_ <= 0)
    throw startup_error(
        exit_endpoint,
        fmt::format("--metrics {}: cannot listen there (in use, or not an address of this host)", listen));
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // Server::stop() does nothing before the loop runs (the loop would then never end): wait for it.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!server_->is_running() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  detail::logger().info("metrics on http://{}:{}/metrics, health on /healthz", host, port_);
}

metrics_http::~metrics_http() {
  detach();
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void metrics_http::attach(context& ctx, std::string endpoint) {
  std::unique_lock lock(mutex_);
  ctx_ = &ctx;
  endpoint_ = std::move(endpoint);
}

void metrics_http::detach() {
  std::unique_lock lock(mutex_);
  ctx_ = nullptr;
  state_ = "stopping";
}

metrics_http::answer metrics_http::metrics() {
  std::shared_lock lock(mutex_);
  if (ctx_ == nullptr) return {503, fmt::format("ferryd is {}\n", state_), text_plain};
  try {
    admin a(*ctx_, endpoint_);
    return {200, detail::prometheus_text(a.stats(stats_timeout)), prometheus_type};
  } catch (const std::exception& e) {
    return {503, fmt::format("ferryd did not answer STATS: {}\n", e.what()), text_plain};
  }
}

metrics_http::answer metrics_http::health() {
  std::shared_lock lock(mutex_);
  if (ctx_ == nullptr) return {503, fmt::format("{}\n", state_), text_plain};
  try {
    admin a(*ctx_, endpoint_);
    const forwarder_stats st = a.stats(stats_timeout);
    if (st.disk_full != 0) return {503, "refusing writes: disk_full\n", text_plain};
    return {200, "ok\n", text_plain};
  } catch (const std::exception& e) {
    return {503, fmt::format("not answering: {}\n", e.what()), text_plain};
  }
}

}  // namespace ferry::ferryd
