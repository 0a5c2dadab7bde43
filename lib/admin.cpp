#include "ferry/admin.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <exception>
#include <iterator>
#include <optional>
#include <string_view>
#include <zmq_addon.hpp>

#include "detail/connection_monitor.hpp"
#include "detail/forwarder_protocol.hpp"
#include "detail/log.hpp"
#include "detail/msgpack_read.hpp"
#include "detail/stats_schema.hpp"
#include "ferry/error.hpp"

namespace ferry {
namespace fwd = detail::fwd;
namespace rd = detail::msgpack_read;
using std::chrono::milliseconds;

namespace {

socket_options admin_socket_options() {
  socket_options so;
  so.linger = milliseconds(0);  // nothing to deliver once we stop waiting
  so.max_message_size = -1;     // a dead-letter listing holds whole payloads
  so.send_hwm = 0;
  so.receive_hwm = 0;
  return so;
}

std::string advice(std::string_view code) {
  if (code == fwd::code::bad_queue)
    return " (give the source queue: 1-200 characters of A-Z a-z 0-9 . _ -, not starting with '.' and not "
           "ending in .dlq)";
  if (code == fwd::code::bad_frames || code == fwd::code::unknown_verb)
    return " (this client and ferryd disagree on the protocol: run versions that match)";
  return "";
}

}  // namespace

struct admin::impl {
  context* ctx;
  std::string endpoint;
  zmq::socket_t socket;
  std::optional<detail::connection_monitor> monitor;  // of `socket`

  impl(context& c, const std::string& ep) : ctx(&c), endpoint(ep) { open(); }

  void open() {
    monitor.reset();  // before the socket it watches closes
    socket = ctx->make_socket(zmq::socket_type::dealer, admin_socket_options());
    monitor.emplace(*ctx, socket, "admin");
    connect(socket, endpoint);
  }

  // Waits up to `timeout` for a reply; meanwhile says, after a second and then every few, that ferryd is
  // unreachable or has not answered yet, as the producer and consumer do.
  bool wait_for_reply(const std::string& what, milliseconds timeout) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + timeout;
    auto next_log = start + detail::unreachable_after;
    for (;;) {
      zmq::pollitem_t items[2] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, monitor->poll_item()};
      const auto now = clock::now();
      if (now >= deadline) return false;
      const auto wait = std::chrono::ceil<milliseconds>(std::min(deadline, next_log) - now);
      zmq::poll(items, 2, wait);
      if (items[0].revents & ZMQ_POLLIN) return true;
      monitor->drain();
      if (clock::now() >= next_log && clock::now() < deadline) {
        next_log += detail::unreachable_repeat;
        if (monitor->connections() == 0) {
          detail::logger().warn("admin: cannot reach ferryd at {} (retrying)", endpoint);
        } else {
          detail::logger().warn(
              "admin: ferryd at {} has not answered {} for {} ms (waiting up to {} ms)", endpoint, what,
              std::chrono::duration_cast<milliseconds>(clock::now() - start).count(), timeout.count());
        }
      }
    }
  }

  // Sends `request` and returns the frames of the reply after its verb, which must be `reply`. `what`
  // names the request in errors ("STATS", "DLQ list").
  std::vector<zmq::message_t> ask(std::vector<zmq::message_t> request, std::string_view reply,
                                  const std::string& what, milliseconds timeout) {
    if (!zmq::send_multipart(socket, request, zmq::send_flags::dontwait)) {
      open();  // cannot happen with no high-water mark; start afresh rather than wait
      throw error("ferryd at " + endpoint + " did not take the " + what + " request");
    }
    if (!wait_for_reply(what, timeout)) {
      // A fresh connection, so that this answer, if it still comes, is not read as the next one's.
      open();
      throw error("ferryd at " + endpoint + " did not answer within " + std::to_string(timeout.count()) +
                  " ms");
    }
    std::vector<zmq::message_t> frames;
    (void)zmq::recv_multipart(socket, std::back_inserter(frames));
    const std::string_view verb = frames.empty() ? std::string_view() : frames.front().to_string_view();
    if (verb == fwd::error) {
      const std::string code(frames.size() > 1 ? frames[1].to_string_view() : "?");
      const std::string text(frames.size() > 2 ? frames[2].to_string_view() : "");
      throw error("ferryd at " + endpoint + " refused " + what + ": " + code + ": " + text + advice(code));
    }
    if (verb != reply) {
      open();
      throw error("ferryd at " + endpoint + " answered " + std::string(verb.substr(0, 32)) + " to " + what +
                  " (is it a ferryd?)");
    }
    frames.erase(frames.begin());
    return frames;
  }

  [[noreturn]] void undecodable(const std::string& what) const {
    throw error("ferryd at " + endpoint + " sent a " + what +
                " reply that does not decode (is it a ferryd?)");
  }

  // The reply map of a DLQ operation.
  msgpack::object_handle dlq(const std::string& queue, std::string_view op, const dlq_filter& filter,
                             milliseconds timeout) {
    msgpack::sbuffer options;
    msgpack::packer<msgpack::sbuffer> pk(options);
    const bool bounded = filter.before_seq != ~0ull;
    pk.pack_map(1 + (filter.from_seq != 0 ? 1 : 0) + (bounded ? 1 : 0) + (filter.reason.empty() ? 0 : 1));
    pk.pack("limit");
    pk.pack(filter.limit);
    if (filter.from_seq != 0) {
      pk.pack("from");
      pk.pack(filter.from_seq);
    }
    if (bounded) {
      pk.pack("before");
      pk.pack(filter.before_seq);
    }
    if (!filter.reason.empty()) {
      pk.pack("reason");
      pk.pack(filter.reason);
    }
    std::vector<zmq::message_t> request;
    request.emplace_back(fwd::dlq.data(), fwd::dlq.size());
    request.emplace_back(queue.data(), queue.size());
    request.emplace_back(op.data(), op.size());
    request.emplace_back(options.data(), options.size());
    const std::string what = "DLQ " + std::string(op) + " of queue " + queue;
    const auto reply = ask(std::move(request), fwd::dlq_reply, what, timeout);
    try {
      if (reply.empty()) undecodable(what);
      msgpack::object_handle oh = msgpack::unpack(static_cast<const char*>(reply[0].data()), reply[0].size());
      if (oh.get().type != msgpack::type::MAP) undecodable(what);
      return oh;
    } catch (const ferry::error&) {
      throw;
    } catch (const std::exception&) {
      undecodable(what);
    }
  }
};

admin::admin(context& ctx, const std::string& forwarder) : impl_(std::make_unique<impl>(ctx, forwarder)) {}
admin::~admin() = default;
admin::admin(admin&&) noexcept = default;
admin& admin::operator=(admin&&) noexcept = default;

const std::string& admin::forwarder() const noexcept {
  return impl_->endpoint;
}

forwarder_stats admin::stats(milliseconds timeout) {
  std::vector<zmq::message_t> request;
  request.emplace_back(fwd::stats.data(), fwd::stats.size());
  const auto reply = impl_->ask(std::move(request), fwd::stats_reply, "STATS", timeout);
  auto stats = reply.empty() ? std::nullopt : detail::stats_schema::decode_stats(reply[0].to_string_view());
  if (!stats) impl_->undecodable("STATS");
  return std::move(*stats);
}

namespace {

dlq_position position_of(const msgpack::object& root, const dlq_filter& filter) {
  dlq_position at;
  const msgpack::object* next = rd::find(root, "next");
  at.next_seq = next != nullptr ? rd::u64(next) : filter.from_seq;
  const msgpack::object* more = rd::find(root, "more");
  at.more = more != nullptr && more->type == msgpack::type::BOOLEAN && more->via.boolean;
  return at;
}

}  // namespace

dlq_listing admin::dlq_list(const std::string& queue, std::uint64_t limit, milliseconds timeout) {
  return dlq_list(queue, dlq_filter{.limit = limit}, timeout);
}

dlq_listing admin::dlq_list(const std::string& queue, const dlq_filter& filter, milliseconds timeout) {
  const msgpack::object_handle oh = impl_->dlq(queue, "list", filter, timeout);
  const msgpack::object& root = oh.get();
  dlq_listing out;
  out.queue = std::string(rd::text(rd::find(root, "queue")));
  if (out.queue.empty()) out.queue = queue + std::string(fwd::dlq_suffix);
  out.depth = rd::u64(rd::find(root, "depth"));
  out.position = position_of(root, filter);
  const msgpack::object* messages = rd::find(root, "messages");
  if (messages == nullptr || messages->type != msgpack::type::ARRAY) return out;
  out.messages.reserve(messages->via.array.size);
  for (std::uint32_t i = 0; i < messages->via.array.size; ++i) {
    const msgpack::object& m = messages->via.array.ptr[i];
    dead_letter d;
    d.seq = rd::u64(rd::find(m, "seq"));
    d.id = message_id::from_bytes(rd::text(rd::find(m, "id"))).value_or(message_id());
    d.timestamp_us = rd::i64(rd::find(m, "timestamp_us"));
    d.key = std::string(rd::text(rd::find(m, "key")));
    if (const msgpack::object* h = rd::find(m, "headers"); h != nullptr && h->type == msgpack::type::MAP)
      for (std::uint32_t j = 0; j < h->via.map.size; ++j)
        d.headers.emplace(rd::text(h->via.map.ptr[j].key), rd::text(h->via.map.ptr[j].val));
    d.stored_at_us = rd::i64(rd::find(m, "stored_at_us"));
    d.payload = std::string(rd::text(rd::find(m, "payload")));
    out.messages.push_back(std::move(d));
  }
  return out;
}

std::uint64_t admin::dlq_replay(const std::string& queue, std::uint64_t limit, milliseconds timeout) {
  return dlq_replay(queue, dlq_filter{.limit = limit}, timeout).done;
}

std::uint64_t admin::dlq_purge(const std::string& queue, std::uint64_t limit, milliseconds timeout) {
  return dlq_purge(queue, dlq_filter{.limit = limit}, timeout).done;
}

dlq_result admin::dlq_replay(const std::string& queue, const dlq_filter& filter, milliseconds timeout) {
  const msgpack::object_handle oh = impl_->dlq(queue, "replay", filter, timeout);
  return {rd::u64(rd::find(oh.get(), "replayed")), rd::u64(rd::find(oh.get(), "depth")),
          rd::u64(rd::find(oh.get(), "end")), position_of(oh.get(), filter)};
}

dlq_result admin::dlq_purge(const std::string& queue, const dlq_filter& filter, milliseconds timeout) {
  const msgpack::object_handle oh = impl_->dlq(queue, "purge", filter, timeout);
  return {rd::u64(rd::find(oh.get(), "purged")), rd::u64(rd::find(oh.get(), "depth")),
          rd::u64(rd::find(oh.get(), "end")), position_of(oh.get(), filter)};
}

}  // namespace ferry
