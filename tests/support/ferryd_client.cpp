#include "support/ferryd_client.hpp"

#include <catch2/catch.hpp>

#include <iterator>
#include <msgpack.hpp>
#include <zmq_addon.hpp>

#include "ferry/envelope.hpp"

namespace ferry::test {

raw_client::raw_client(const std::string& endpoint)
    : endpoint_(endpoint),
      socket_(ctx_.make_socket(zmq::socket_type::dealer, {.linger = std::chrono::milliseconds(0)})) {
  ferry::connect(socket_, endpoint);
}

void raw_client::send(const std::vector<std::string>& frames) {
  std::vector<zmq::const_buffer> parts;
  for (const auto& f : frames) parts.push_back(zmq::buffer(f.data(), f.size()));
  REQUIRE(zmq::send_multipart(socket_, parts));
}

std::vector<std::string> raw_client::receive(std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) == 0) return {};
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(socket_, std::back_inserter(parts))) return {};
  std::vector<std::string> out;
  for (const auto& p : parts) out.push_back(p.to_string());
  return out;
}

std::vector<std::string> raw_client::exchange(const std::vector<std::string>& frames,
                                              std::chrono::milliseconds timeout) {
  send(frames);
  return receive(timeout);
}

std::string show_frames(const std::vector<std::string>& frames) {
  if (frames.empty()) return "(no reply)";
  std::string out;
  for (const auto& f : frames) {
    std::string shown = f.substr(0, 120);
    for (auto& c : shown)
      if (c < ' ' || c > '~') c = '.';
    out += "[" + shown + "] ";
  }
  return out;
}

std::string envelope_of(const ferry::message& m) {
  return encode_envelope(m).to_string();
}

ferry::queue_stats queue_stats_of(ferry::admin& admin, const std::string& queue) {
  const ferry::forwarder_stats stats = admin.stats();
  const auto it = stats.queues.find(queue);
  return it == stats.queues.end() ? ferry::queue_stats{} : it->second;
}

ferry::queue_stats queue_stats_of(const std::string& endpoint, const std::string& queue) {
  ferry::context ctx;
  ferry::admin admin(ctx, endpoint);
  return queue_stats_of(admin, queue);
}

std::int64_t depth_of(ferry::admin& admin, const std::string& queue) {
  const ferry::forwarder_stats stats = admin.stats();
  const auto it = stats.queues.find(queue);
  return it == stats.queues.end() ? -1 : static_cast<std::int64_t>(it->second.depth);
}

std::string msgpack_map(const std::map<std::string, std::string>& strings,
                        const std::map<std::string, std::int64_t>& integers) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<std::uint32_t>(strings.size() + integers.size()));
  for (const auto& [k, v] : strings) {
    pk.pack(k);
    pk.pack(v);
  }
  for (const auto& [k, v] : integers) {
    pk.pack(k);
    pk.pack(v);
  }
  return std::string(buf.data(), buf.size());
}

std::map<std::string, std::string> msgpack_fields(const std::string& map) {
  const msgpack::object_handle oh = msgpack::unpack(map.data(), map.size());
  const msgpack::object& o = oh.get();
  REQUIRE(o.type == msgpack::type::MAP);
  std::map<std::string, std::string> out;
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) continue;
    std::string value = "?";
    switch (kv.val.type) {
      case msgpack::type::POSITIVE_INTEGER:
        value = std::to_string(kv.val.via.u64);
        break;
      case msgpack::type::NEGATIVE_INTEGER:
        value = std::to_string(kv.val.via.i64);
        break;
      case msgpack::type::BOOLEAN:
        value = kv.val.via.boolean ? "true" : "false";
        break;
      case msgpack::type::STR:
        value.assign(kv.val.via.str.ptr, kv.val.via.str.size);
        break;
      default:
        break;
    }
    out.emplace(std::string(kv.key.via.str.ptr, kv.key.via.str.size), value);
  }
  return out;
}

}  // namespace ferry::test
