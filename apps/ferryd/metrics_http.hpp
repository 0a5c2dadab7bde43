#pragma once
// ferryd's HTTP endpoint for monitoring (--metrics HOST:PORT): GET /metrics, ferryd's STATS in the
// Prometheus text format (detail/prometheus.hpp), and GET /healthz, 200 "ok" while ferryd serves and
// accepts writes, 503 with the reason while it recovers its data directory, refuses writes (disk_full) or
// does not answer. Served by cpp-httplib on threads of its own; each request asks ferryd for STATS over
// an inproc connection, so nothing here touches the forwarder's state.

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <thread>

#include "ferry/context.hpp"

namespace httplib {
class Server;
}

namespace ferry::ferryd {

class metrics_http {
 public:
  /// Listens on `listen` ("127.0.0.1:9464", "[::1]:9464", ":9464" for every address) at once, so
  /// /healthz answers 503 "recovering" while the forwarder recovers. Throws startup_error (exit_usage for
  /// a malformed address, exit_endpoint when it cannot listen).
  explicit metrics_http(const std::string& listen);
  ~metrics_http();
  metrics_http(const metrics_http&) = delete;
  metrics_http& operator=(const metrics_http&) = delete;

  /// From now on requests ask the ferryd at `endpoint` (made from `ctx`) for STATS. Both must stay valid
  /// until detach().
  void attach(context& ctx, std::string endpoint);
  /// Waits for the requests using the forwarder, then answers 503 "stopping".
  void detach();

  /// The port listened on (the one picked when `listen` said port 0).
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  struct answer {
    int status;
    std::string body;
    const char* content_type;
  };
  answer metrics();
  answer health();

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::shared_mutex mutex_;  // shared: a request using ctx_; unique: attach(), detach()
  context* ctx_ = nullptr;
  std::string endpoint_;
  const char* state_ = "recovering";  // why /healthz says 503 while not attached
};

}  // namespace ferry::ferryd
