#pragma once
/// @file Everything in ferry's public API.

#include "ferry/admin.hpp"
#include "ferry/consumer.hpp"
#include "ferry/context.hpp"
#include "ferry/dedup_window.hpp"
#include "ferry/envelope.hpp"
#include "ferry/error.hpp"
#include "ferry/log.hpp"
#include "ferry/message.hpp"
#include "ferry/message_id.hpp"
#include "ferry/producer.hpp"
#include "ferry/publisher.hpp"
#include "ferry/pusher.hpp"
#include "ferry/receive_stats.hpp"
#include "ferry/status.hpp"
#include "ferry/subscriber.hpp"
#include "ferry/worker_pool.hpp"
