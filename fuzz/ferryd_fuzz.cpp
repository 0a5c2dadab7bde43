// Fuzzes ferryd's request handling: the input is cut into frames (fuzz_support.hpp's split_frames, at most
// 16) and sent as one request to a ferryd::forwarder running in this process (a temp data directory, an
// ipc endpoint, its loop on a thread of its own), the way tests/forwarder_protocol_test.cpp talks to it.
// The frames also go straight to the option and id parsers ferryd applies to network bytes
// (protocol_helpers.hpp) and to the queue name checks (detail/forwarder_protocol.hpp).
//
// Checks: the parsers never throw; ferryd neither crashes (an exception escaping its loop aborts the
// process) nor stops answering: after every request a PING naming a queue that cannot exist must get its
// not_consuming ERROR. ferryd keeps its state from one input to the next (queues, consumers), as a real one
// does, so a crash may need the inputs before it to reproduce.
#include <cerrno>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "detail/forwarder_protocol.hpp"
#include "ferry/log.hpp"
#include "forwarder.hpp"
#include "fuzz_support.hpp"
#include "protocol_helpers.hpp"

namespace {

namespace fwd = ferry::detail::fwd;
using ferry::fuzz::require;

void check_parsers(std::string_view bytes) {
  std::uint64_t value = 0;
  std::string problem;
  const bool ok = ferry::ferryd::map_uint(bytes, "prefetch", value, 64, &problem);
  require(ok || !problem.empty(), "map_uint says why it refuses a frame");
  (void)ferry::ferryd::readable_id(bytes);
  require(ferry::ferryd::printable(bytes).size() <= 64, "printable() shows at most 64 bytes");
  if (fwd::valid_queue_name(bytes)) require(fwd::valid_destination(bytes), "a queue name is a destination");
  if (fwd::is_subscription_queue(bytes)) require(bytes.size() <= 204, "a subscription queue name is short");
}

class ferryd_under_test {
 public:
  ferryd_under_test() : dir_("ferry-fuzz-ferryd") {
    ferry::ferryd::forwarder_options o;
    o.data_dir = dir_.path() / "data";
    std::filesystem::create_directory(o.data_dir);
    o.bind = {"ipc://" + (dir_.path() / "ferryd.sock").string()};
    o.fsync = ferry::ferryd::fsync_policy::interval;
    o.min_free_bytes = 0;
    o.queue.max_messages = 1000;  // keeps the data directory small over a long run
    o.queue.segment_bytes = 1 << 20;
    forwarder_ = std::make_unique<ferry::ferryd::forwarder>(o);
    loop_ = std::thread([this] { forwarder_->run(false); });
    client_.set(zmq::sockopt::linger, 0);
    client_.set(zmq::sockopt::rcvhwm, 0);
    client_.set(zmq::sockopt::rcvtimeo, 2000);
    client_.connect(o.bind.front());
  }
  ~ferryd_under_test() {
    client_.close();
    forwarder_->stop();
    loop_.join();
  }
  ferryd_under_test(const ferryd_under_test&) = delete;
  ferryd_under_test& operator=(const ferryd_under_test&) = delete;

  void request(const std::vector<std::string_view>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const auto more = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      require(send(zmq::buffer(frames[i].data(), frames[i].size()), more), "the request was sent");
    }
    // A reply may be dropped while this client's pipe is full (ferryd sends with dontwait): ask again.
    for (int tries = 0; tries < 5; ++tries)
      if (synced()) return;
    require(false, "ferryd answers a PING after every request");
  }

 private:
  // PING | a name no queue can have; true once its ERROR not_consuming arrived (replies come in order).
  bool synced() {
    const std::string name = "~sync#" + std::to_string(++sync_);
    const std::string quoted = "'" + name + "'";
    require(send(zmq::buffer(fwd::ping), zmq::send_flags::sndmore) &&
                send(zmq::buffer(name), zmq::send_flags::none),
            "the PING was sent");
    for (;;) {
      std::vector<zmq::message_t> reply;
      zmq::message_t part;
      do {
        if (!receive(part)) return false;  // timed out
        reply.push_back(std::move(part));
      } while (reply.back().more());
      if (reply.size() == 3 && reply[0].to_string_view() == fwd::error &&
          reply[2].to_string_view().find(quoted) != std::string_view::npos)
        return true;
    }
  }

  // libFuzzer's -timeout watchdog is a SIGALRM every few seconds; a blocking send or receive it
  // interrupts throws EINTR before it did anything, which is no fault of ferryd's: try again.
  bool send(zmq::const_buffer frame, zmq::send_flags flags) {
    for (;;) {
      try {
        return client_.send(frame, flags).has_value();
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
    }
  }
  bool receive(zmq::message_t& part) {
    for (;;) {
      try {
        return client_.recv(part).has_value();
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
    }
  }

  ferry::fuzz::temp_dir dir_;
  std::unique_ptr<ferry::ferryd::forwarder> forwarder_;
  std::thread loop_;
  zmq::context_t ctx_;
  zmq::socket_t client_{ctx_, zmq::socket_type::dealer};
  std::uint64_t sync_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::getenv("FERRY_LOG_LEVEL") == nullptr) ferry::set_log_level(ferry::log_level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // One ferryd for the whole run, stopped at exit.
  static ferryd_under_test ferryd;
  std::vector<std::string_view> frames = ferry::fuzz::split_frames(ferry::fuzz::bytes_of(data, size), 16);
  if (frames.empty()) frames.emplace_back();
  try {
    for (const auto f : frames) check_parsers(f);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ferry fuzz: a ferryd parser threw: %s\n", e.what());
    std::abort();
  }
  ferryd.request(frames);
  return 0;
}
