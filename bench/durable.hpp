#pragma once
// What bench_durable's two sources share: its options, and the raw baseline's protocol between the raw
// clients (durable.cpp) and the raw server (durable_raw_server.cpp).
//
// The raw protocol is plain cppzmq, DEALER clients and a ROUTER server, one frame per request; the first
// byte of a frame says what it is. It carries the minimum a durable queue must move and nothing else: no
// envelope, checksum, dedup, lease or redelivery, which is ferry's work that the ratio puts a price on.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace bench::durable {

struct options {
  std::string role = "produce";
  std::string impl = "ferry";
  std::string forwarder;
  unsigned producers = 1;
  std::uint64_t count = 100'000;
  std::size_t size = 256;
  std::size_t window = 10'000;  // ferry::producer's default max_in_flight
  double rate = 0;
  unsigned threads = 2;
  std::uint32_t prefetch = 1024;
  std::string endpoint = "tcp://127.0.0.1:*";
  std::string data_dir;
  int timeout_s = 300;
  // Durable topics (ferry only): publish instead of send; e2e and replay read through this many durable
  // subscriptions (each gets every message); produce first creates this many idle subscriptions.
  bool topic = false;
  unsigned subscriptions = 1;
  unsigned idle_subscriptions = 0;
  bool backlog = false;  // raw-server: keep what is stored while no consumer is attached, for a later one

  [[nodiscard]] std::chrono::seconds timeout() const { return std::chrono::seconds(timeout_s); }
};

// Raw protocol: the first byte of a frame says what it is.
constexpr char verb_send = 'S';     // producer -> server: id (16) + payload
constexpr char verb_confirm = 'K';  // server -> producer: ids (16 each)
constexpr char verb_hello = 'H';    // either way: connection check
constexpr char verb_consume = 'C';  // consumer -> server: credit (u32)
constexpr char verb_deliver = 'D';  // server -> consumer: then one frame per message: seq (8) + id + payload
constexpr char verb_ack = 'A';      // consumer -> server: seqs (8 each); gives the credit back
constexpr char verb_bye = 'X';      // consumer -> server: unsubscribe (the raw server has no heartbeats)
constexpr std::size_t id_size = 16;

/// Runs the raw baseline's server (--role raw-server) on --endpoint with its files in --data-dir: prints a
/// "ready" line (endpoint and what it recovered), serves until SIGTERM or SIGINT, then prints one result
/// line. Returns the exit status. Throws std::runtime_error when its files cannot be opened.
int run_raw_server(const options& o);

}  // namespace bench::durable
