#pragma once
// Talking to ferryd in tests: a raw DEALER that sends and reads the forwarder protocol frame by frame (for
// what ferry's client classes never send: malformed frames, hand-made SENDs, replies read one by one), and
// a queue's counters through ferry::admin.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "ferry/admin.hpp"
#include "ferry/context.hpp"
#include "ferry/message.hpp"

namespace ferry::test {

/// A DEALER connected to ferryd, with its own context. Thread safety: none.
class raw_client {
 public:
  explicit raw_client(const std::string& endpoint);

  /// Sends one multipart message, a frame per string. Fails the test if libzmq refuses it.
  void send(const std::vector<std::string>& frames);
  /// The frames of the next message; empty when none arrives within `timeout`.
  std::vector<std::string> receive(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// send(), then receive().
  std::vector<std::string> exchange(const std::vector<std::string>& frames,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5));

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }

 private:
  ferry::context ctx_;
  std::string endpoint_;
  zmq::socket_t socket_;
};

/// Frames for a failure message: "[SEND] [q] [..envelope..] ", non-printable bytes as '.', or "(no reply)".
std::string show_frames(const std::vector<std::string>& frames);

/// The envelope frame of `m` as a producer sends it.
std::string envelope_of(const ferry::message& m);

/// One queue's counters from ferryd's STATS; all 0 while ferryd does not know the queue (a queue appears
/// with its first SEND or CONSUME).
ferry::queue_stats queue_stats_of(ferry::admin& admin, const std::string& queue);

/// A MessagePack map of str and int values, for option frames.
std::string msgpack_map(const std::map<std::string, std::string>& strings,
                        const std::map<std::string, std::int64_t>& integers);
/// The entries of a MessagePack map frame, each value as text (integers in decimal, booleans as
/// "true"/"false", strings as they are; other types as "?"). Fails the test when it is not a map.
std::map<std::string, std::string> msgpack_fields(const std::string& map);
/// The same over a connection made for this one question.
ferry::queue_stats queue_stats_of(const std::string& endpoint, const std::string& queue);
/// The queue's depth, or -1 while ferryd does not know the queue.
std::int64_t depth_of(ferry::admin& admin, const std::string& queue);

}  // namespace ferry::test
