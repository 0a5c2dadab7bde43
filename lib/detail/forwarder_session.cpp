#include "detail/forwarder_session.hpp"

#include <algorithm>
#include <cstring>
#include <msgpack.hpp>
#include <zmq_addon.hpp>

#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "ferry/error.hpp"

namespace ferry::detail {
namespace {

zmq::message_t frame(std::string_view s) {
  return zmq::message_t(s.data(), s.size());
}

// The value of `key` in a MessagePack map, or nullptr.
const msgpack::object* find(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key)
      return &kv.val;
  }
  return nullptr;
}

std::uint64_t uint_of(const msgpack::object* o, std::uint64_t fallback = 0) {
  return o != nullptr && o->type == msgpack::type::POSITIVE_INTEGER ? o->via.u64 : fallback;
}

}  // namespace

forwarder_session::forwarder_session(context& ctx, const std::string& endpoint, options o)
    : options_(std::move(o)),
      endpoint_(endpoint),
      socket_(make_socket(ctx, options_)),
      monitor_(ctx, socket_, options_.name),
      heartbeat_(options_.heartbeat_interval),
      hello_version_(fwd::protocol_version),
      started_(clock::now()) {
  if (endpoint_.empty())
    throw error(options_.name + ": ferryd's endpoint is required (e.g. tcp://127.0.0.1:5570)");
  ferry::connect(socket_, endpoint_);
  send_hello();
  next_unreachable_log_ = started_ + unreachable_after;
}

forwarder_session::~forwarder_session() = default;

zmq::socket_t forwarder_session::make_socket(context& ctx, const options& o) {
  if (o.heartbeat_interval.count() <= 0) throw error(o.name + ": heartbeat_interval must be positive");
  return ctx.make_socket(zmq::socket_type::dealer, o.socket);
}

bool forwarder_session::send(std::vector<zmq::message_t>& frames) {
  // Never waits: with libzmq's queue full, a blocking send would hold the I/O thread (and with it stop() and
  // every timer).
  try {
    if (frames.empty()) return true;
    const auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
    if (!socket_.send(frames[0], frames.size() > 1 ? more : zmq::send_flags::dontwait)) {
      ++unsent_;
      return false;
    }
    for (std::size_t i = 1; i < frames.size(); ++i)  // the rest of a message libzmq took goes through
      (void)socket_.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    logger().warn("{}: send to ferryd at {} failed: {}", options_.name, endpoint_, e.what());
  }
  return true;
}

bool forwarder_session::receive(std::vector<zmq::message_t>& frames) {
  frames.clear();
  const auto got = zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait);
  return got.has_value() && *got > 0;
}

void forwarder_session::send_hello() {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(1);
  pk.pack("version");
  pk.pack(hello_version_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame(fwd::hello));
  frames.emplace_back(buf.data(), buf.size());
  send(frames);
}

void forwarder_session::heard(std::uint64_t instance, clock::time_point now) {
  instance_changed_ = instance_ != 0 && instance != instance_;
  instance_ = instance;
  last_heard_ = now;
  up_.store(true, std::memory_order_relaxed);
  if (!ever_heard_ && now >= started_ + unreachable_after)
    logger().info("{}: reached ferryd at {}", options_.name, endpoint_);
  ever_heard_ = true;
  next_unreachable_log_ = now + std::max(unreachable_after, 3 * heartbeat_);
}

forwarder_session::event forwarder_session::handle(const std::vector<zmq::message_t>& frames,
                                                   clock::time_point now) {
  if (frames.empty()) return event::other;
  instance_changed_ = false;
  const std::string_view verb = frames[0].to_string_view();
  if (verb == fwd::pong && frames.size() >= 2 && frames[1].size() == 8) {
    heard(fwd::get_u64(static_cast<const char*>(frames[1].data())), now);
    return event::pong;
  }
  if (verb == fwd::welcome && frames.size() >= 2) {
    forwarder_welcome w;
    try {
      const msgpack::object_handle oh =
          msgpack::unpack(static_cast<const char*>(frames[1].data()), frames[1].size());
      const msgpack::object& map = oh.get();
      w.version = static_cast<std::uint32_t>(uint_of(find(map, "version"), 1));
      w.instance = uint_of(find(map, "instance"));
      if (const auto* s = find(map, "server"); s != nullptr && s->type == msgpack::type::STR)
        w.server.assign(s->via.str.ptr, s->via.str.size);
      w.heartbeat = std::chrono::milliseconds(uint_of(find(map, "heartbeat_ms")));
      w.lease = std::chrono::milliseconds(uint_of(find(map, "lease_ms")));
      w.max_message_bytes = uint_of(find(map, "max_message_bytes"));
      w.max_batch = uint_of(find(map, "max_batch"));
    } catch (const std::exception& e) {
      logger().warn("{}: ignored a WELCOME from ferryd at {} that does not decode: {}", options_.name,
                    endpoint_, e.what());
      return event::welcome;
    }
    welcome_ = w;
    if (w.heartbeat.count() > 0) adopt_heartbeat(w.heartbeat);
    if (w.instance != 0) heard(w.instance, now);
    logger().debug("{}: connected to {} at {} (protocol {}, heartbeat {} ms)", options_.name, w.server,
                   endpoint_, w.version, heartbeat_.count());
    return event::welcome;
  }
  if (verb == fwd::error && frames.size() >= 3 && welcome_.version == 0 &&
      hello_version_ > fwd::min_protocol_version && frames[1].to_string_view() == fwd::code::bad_frames &&
      frames[2].to_string_view().find("protocol version") != std::string_view::npos) {
    // A ferryd that predates this protocol version refuses the HELLO: speak the one it knows.
    --hello_version_;
    logger().info("{}: ferryd at {} does not speak protocol version {}; using version {}", options_.name,
                  endpoint_, hello_version_ + 1, hello_version_);
    send_hello();
    return event::fallback;
  }
  return event::other;
}

void forwarder_session::adopt_heartbeat(std::chrono::milliseconds announced) noexcept {
  // ferryd declares a client dead after its own timeout, which it derives from the interval it announces:
  // pinging less often than that would get a healthy client declared dead.
  if (announced.count() > 0 && announced < heartbeat_) {
    heartbeat_ = announced;
    next_ping_ = std::min(next_ping_, clock::now() + heartbeat_);
  }
}

bool forwarder_session::check_reconnect() {
  bool reconnected = false;
  connection_monitor::event ev;
  while (monitor_.next(ev)) {
    if (ev.what == connection_monitor::kind::disconnected) {
      if (!disconnected_)
        logger().info("{}: connection to ferryd at {} lost; reconnecting", options_.name, endpoint_);
      up_.store(false, std::memory_order_relaxed);
      disconnected_ = true;
    } else if (ev.what == connection_monitor::kind::connected && disconnected_) {
      disconnected_ = false;
      reconnected = true;
      logger().info("{}: reconnected to ferryd at {}", options_.name, endpoint_);
    }
  }
  if (reconnected) {
    // The ferryd at the other end may be another one (a downgrade, a failover): agree on the protocol again;
    // until its WELCOME, welcome().version is 0 and the producer sends nothing.
    welcome_ = forwarder_welcome{};
    hello_version_ = fwd::protocol_version;
    send_hello();
  }
  return reconnected;
}

void forwarder_session::tick(clock::time_point now) {
  if (now >= next_ping_) {
    next_ping_ = now + heartbeat_;
    std::vector<zmq::message_t> ping;
    ping.push_back(frame(fwd::ping));
    if (!options_.ping_queue.empty()) ping.push_back(frame(options_.ping_queue));
    send(ping);
    // No WELCOME yet: the HELLO may not have left (socket.immediate drops what it cannot queue) or may
    // have been lost with a connection; ask again. A second WELCOME changes nothing.
    if (welcome_.version == 0) send_hello();
    if (last_heard_ != clock::time_point{} && now - last_heard_ > 3 * heartbeat_)
      up_.store(false, std::memory_order_relaxed);
  }
  if (now >= next_unreachable_log_) {
    next_unreachable_log_ = now + unreachable_repeat;
    if (ever_heard_) {
      logger().warn("{}: ferryd at {} has not answered for {} ms (retrying)", options_.name, endpoint_,
                    std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard_).count());
    } else {
      logger().warn("{}: cannot reach ferryd at {} (retrying)", options_.name, endpoint_);
    }
  }
}

long forwarder_session::until_next_tick(clock::time_point now) const noexcept {
  const auto next = std::min(next_ping_, next_unreachable_log_);
  return std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count());
}

void forwarder_session::poll_items(zmq_pollitem_t* two) noexcept {
  two[0] = {socket_.handle(), 0, ZMQ_POLLIN, 0};
  two[1] = monitor_.poll_item();
}

}  // namespace ferry::detail
