#include "detail/stats_schema.hpp"

#include <msgpack.hpp>

#include <exception>
#include <type_traits>

#include "detail/msgpack_read.hpp"

namespace ferry::detail::stats_schema {
namespace rd = msgpack_read;

namespace {

template <class T>
void read_value(const msgpack::object* o, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    out = std::string(rd::text(o));
  } else if constexpr (std::is_same_v<T, double>) {
    out = rd::f64(o);
  } else {
    out = rd::u64(o);
  }
}

}  // namespace

std::string encode_stats(const forwarder_stats& stats) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<std::uint32_t>(forwarder_fields.size() + 2));
  for (const auto& f : forwarder_fields) {
    pk.pack(f.name);
    std::visit([&](auto member) { pk.pack(stats.*member); }, f.member);
  }
  // A map of names to maps of fields, as decode_stats reads them.
  auto pack_entries = [&](std::string_view key, const auto& entries, const auto& fields) {
    pk.pack(key);
    pk.pack_map(static_cast<std::uint32_t>(entries.size()));
    for (const auto& [name, entry] : entries) {
      pk.pack(name);
      pk.pack_map(static_cast<std::uint32_t>(fields.size()));
      for (const auto& f : fields) {
        pk.pack(f.name);
        pk.pack(entry.*f.member);
      }
    }
  };
  pack_entries("queues", stats.queues, queue_fields);
  pack_entries("topics", stats.topics, topic_fields);
  return std::string(buf.data(), buf.size());
}

std::optional<forwarder_stats> decode_stats(std::string_view bytes) {
  msgpack::object_handle oh;
  try {
    oh = msgpack::unpack(bytes.data(), bytes.size());
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const msgpack::object& root = oh.get();
  if (root.type != msgpack::type::MAP) return std::nullopt;

  forwarder_stats out;
  for (const auto& f : forwarder_fields) {
    const msgpack::object* v = rd::find(root, f.name);
    if (v == nullptr && !f.old_name.empty()) v = rd::find(root, f.old_name);
    std::visit([&](auto member) { read_value(v, out.*member); }, f.member);
  }
  // Each entry of a map of names to maps of fields.
  auto read_entries = [&](std::string_view key, auto& into, const auto& fields) {
    const msgpack::object* m = rd::find(root, key);
    if (m == nullptr || m->type != msgpack::type::MAP) return;
    for (std::uint32_t i = 0; i < m->via.map.size; ++i) {
      const auto& kv = m->via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR || kv.val.type != msgpack::type::MAP) continue;
      auto& entry = into[std::string(rd::text(kv.key))];
      for (const auto& f : fields) entry.*f.member = rd::u64(rd::find(kv.val, f.name));
    }
  };
  read_entries("queues", out.queues, queue_fields);
  read_entries("topics", out.topics, topic_fields);
  return out;
}

}  // namespace ferry::detail::stats_schema
