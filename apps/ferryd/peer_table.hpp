#pragma once
// The consumers ferryd watches: when each was last heard from and which queues it consumes. A consumer
// silent for longer than the heartbeat timeout is declared dead and its deliveries go back to its queues.
//
// Thread safety: the forwarder's loop thread only.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace ferry::ferryd {

class peer_table {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  /// Any frame from `identity` counts as a sign of life (only for peers that consume).
  void heard_from(const std::string& identity, time_point now) {
    if (const auto p = peers_.find(identity); p != peers_.end()) p->second.last_seen = now;
  }
  /// `identity` consumes queue `index` (idempotent).
  void consuming(const std::string& identity, std::uint32_t index, time_point now) {
    peer& p = peers_[identity];
    p.last_seen = now;
    if (std::find(p.queues.begin(), p.queues.end(), index) == p.queues.end()) p.queues.push_back(index);
  }
  /// `identity` cancelled queue `index`; a peer with no queue left is forgotten.
  void cancelled(const std::string& identity, std::uint32_t index) {
    const auto p = peers_.find(identity);
    if (p == peers_.end()) return;
    std::erase(p->second.queues, index);
    if (p->second.queues.empty()) peers_.erase(p);
  }
  /// Forgets every peer silent since before `now - timeout`, calling `dead(identity, queue index)` for
  /// each queue it consumed.
  template <typename Dead>
  void expire(time_point now, std::chrono::milliseconds timeout, Dead&& dead) {
    for (auto it = peers_.begin(); it != peers_.end();) {
      if (now - it->second.last_seen > timeout) {
        for (const std::uint32_t index : it->second.queues) dead(it->first, index);
        it = peers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  /// Counts `stall` (time the owner was not running) as heard from everyone: nobody's silence grows by it.
  void forgive(std::chrono::steady_clock::duration stall) {
    for (auto& [identity, p] : peers_) p.last_seen += stall;
  }
  [[nodiscard]] std::size_t size() const noexcept { return peers_.size(); }

 private:
  struct peer {
    time_point last_seen;
    std::vector<std::uint32_t> queues;
  };
  std::unordered_map<std::string, peer> peers_;
};

}  // namespace ferry::ferryd
