#pragma once
// ferryd in the test's own process (tests/forwarder_*_test.cpp): a ferryd::forwarder on a free loopback
// port and a temp data dir, its loop on a thread of its own. Needs ferryd_core (link it with LIBS
// ferryd_core).

#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "forwarder.hpp"
#include "support/test_support.hpp"

namespace ferry::test {

/// ferryd in this process, on a free loopback port and a temp data dir.
struct running_forwarder {
  test::temp_dir dir;
  std::string endpoint = test::free_tcp_endpoint();
  ferryd::forwarder_options options;
  std::unique_ptr<ferryd::forwarder> f;
  std::thread loop;

  explicit running_forwarder(ferryd::forwarder_options o = {}) : options(std::move(o)) { start(); }
  ~running_forwarder() { stop(); }
  running_forwarder(const running_forwarder&) = delete;
  running_forwarder& operator=(const running_forwarder&) = delete;

  void start() {
    options.data_dir = dir.path();
    options.bind = {endpoint};
    f = std::make_unique<ferryd::forwarder>(options);
    loop = std::thread([this] { f->run(false); });
  }
  void stop() {
    if (!f) return;
    f->stop();
    loop.join();
    f.reset();
  }
};

}  // namespace ferry::test
