#include "ferry/worker_pool.hpp"

#include "detail/receiver.hpp"
#include "ferry/error.hpp"

namespace ferry {

worker_pool::worker_pool(context& ctx, const endpoints& where, message_handler handler,
                         worker_pool_options options) {
  if (where.empty()) throw error("worker_pool: give at least one endpoint to bind or connect");
  socket_options so = options.socket;
  so.linger = std::chrono::milliseconds(0);  // it only receives: nothing of ours is queued to linger for
  zmq::socket_t socket = ctx.make_socket(zmq::socket_type::pull, so);
  bound_ = ctx.attach(socket, where);
  detail::receiver_config config;
  config.name = "worker_pool";
  config.threads = options.threads;
  config.dedup = options.dedup;
  config.limits = options.limits;
  receiver_ = std::make_unique<detail::receiver>(std::move(socket), std::move(config), std::move(handler));
}

worker_pool::~worker_pool() {
  stop();
}
worker_pool::worker_pool(worker_pool&&) noexcept = default;
worker_pool& worker_pool::operator=(worker_pool&&) noexcept = default;

void worker_pool::stop() {
  if (receiver_) receiver_->stop();
}

receive_stats worker_pool::stats() const noexcept {
  return receiver_ ? receiver_->stats() : receive_stats{};
}

}  // namespace ferry
