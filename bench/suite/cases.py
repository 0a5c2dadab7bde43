"""The suite: every case scripts/bench.sh runs. Add cases here."""

from .model import (Case, FERRY, RAW1, RAW3, FERRY_D, RAW_D, REDIS, NATS, NATS_SYNC, FERRY_T, FERRY_Q, FERRY_T_NONE,
                    FERRY_M, FERRY_NO_M)
from .runners import (run_delayed, run_durable_e2e, run_durable_produce, run_lat, run_memory, run_recovery, run_replay,
                      run_thr)

TRANSPORTS = ["tcp", "ipc", "inproc"]
SIZES = [16, 256, 4096]


def thr_counts(quick, full):
    """Messages per measurement: fewer for 4 KiB payloads, which move at a fraction of the message rate."""
    return {"quick": lambda size: quick if size < 4096 else quick // 4,
            "full": lambda size: full if size < 4096 else full // 4}


# Batches: ferry packs BATCH messages into one frame (send_batch / publish_batch); raw still sends one
# message per frame, as a raw ZeroMQ user does.
BATCH = 64
BATCH_SIZES = [16, 256]
# Large payloads: 64 KiB and 1 MiB, in ferry's split form (the payload its own frame, moved).
LARGE_SIZES = [64 * 1024, 1024 * 1024]


def large_counts(quick, full):
    """Messages per measurement of 64 KiB (and 1/10 of that at 1 MiB): about 1-2 s each on loopback."""
    return {"quick": lambda size: quick if size <= 64 * 1024 else quick // 10,
            "full": lambda size: full if size <= 64 * 1024 else full // 10}


CASES = [
    Case("pushpull", "throughput", TRANSPORTS, SIZES, [FERRY, RAW1, RAW3], run_thr, thr_counts(100_000, 1_000_000),
         "pusher -> worker_pool (1 handler thread) vs raw PUSH -> PULL"),
    Case("pubsub", "throughput", TRANSPORTS, SIZES, [FERRY, RAW1, RAW3], run_thr, thr_counts(100_000, 1_000_000),
         "publisher (when_full::block) -> subscriber vs raw XPUB (XPUB_NODROP) -> SUB; subscribed before the "
         "first send, nothing dropped: rates count delivered messages"),
    Case(f"pushpull-batch{BATCH}", "throughput", TRANSPORTS, BATCH_SIZES, [FERRY, RAW1], run_thr,
         thr_counts(400_000, 4_000_000),
         f"pusher::send_batch of {BATCH} messages (built per message, one frame per batch) -> worker_pool vs raw "
         f"PUSH -> PULL sending one message per frame",
         params={"pattern": "pushpull", "batch": BATCH}),
    Case(f"pubsub-batch{BATCH}", "throughput", TRANSPORTS, BATCH_SIZES, [FERRY, RAW1], run_thr,
         thr_counts(400_000, 4_000_000),
         f"publisher::publish_batch of {BATCH} messages -> subscriber vs raw XPUB -> SUB one message per frame; "
         f"no drops, as pubsub",
         params={"pattern": "pubsub", "batch": BATCH}),
    Case("pushpull-large", "throughput", TRANSPORTS, LARGE_SIZES, [FERRY, RAW1], run_thr,
         large_counts(2_500, 25_000),
         "pusher -> worker_pool with 64 KiB and 1 MiB payloads (ferry's split form: 2 frames, the payload "
         "moved) vs raw PUSH -> PULL, the payload copied into each frame in both",
         params={"pattern": "pushpull"}),
    Case("latency", "latency", TRANSPORTS, SIZES, [FERRY, RAW1, RAW3], run_lat,
         {"quick": lambda size: 2_000, "full": lambda size: 20_000},
         "ping-pong over two push/pull pairs; one-way = round trip / 2"),
    # Durable: a fresh server on a fresh data dir (under the run's temporary folder) per measurement.
    Case("durable-produce-1", "durable_produce", ["tcp"], [256], [FERRY_D, RAW_D], run_durable_produce,
         {"quick": lambda size: 20_000, "full": lambda size: 1_000_000},
         "1 producer process -> ferryd (fsync always) vs raw DEALER -> ROUTER + file + fdatasync per batch",
         params={"producers": 1}, peer_variants=[REDIS, NATS, NATS_SYNC]),
    Case("durable-produce-8", "durable_produce", ["tcp"], [256], [FERRY_D, RAW_D], run_durable_produce,
         {"quick": lambda size: 20_000, "full": lambda size: 1_000_000},
         "8 producer processes, same as above", params={"producers": 8}, peer_variants=[REDIS, NATS, NATS_SYNC]),
    Case("durable-e2e", "durable_e2e", ["tcp"], [256], [FERRY_D, RAW_D], run_durable_e2e,
         {"quick": lambda size: 20_000, "full": lambda size: 500_000},
         "2 producer processes -> server -> consumer process (ferry: 2 handler threads, prefetch 1024) -> ack; "
         "latency paced at half of ferry's first flat-out rate, every variant at that same rate (a fresh server; "
         "no latency for a variant that cannot keep up with it)",
         params={"producers": 2, "threads": 2, "prefetch": 1024}, peer_variants=[REDIS]),
    # Durable topics (issue 8): the subject publishes to a topic; the queue variant does the same work on a
    # queue in the same run (the ratio the targets name), the raw baseline as in the durable cases.
    Case("topic-publish-8", "durable_produce", ["tcp"], [256], [FERRY_T, FERRY_Q, RAW_D], run_durable_produce,
         {"quick": lambda size: 20_000, "full": lambda size: 1_000_000},
         "8 producer processes publishing to a durable topic (no subscription) vs sending to a durable queue, "
         "and the raw baseline", params={"producers": 8}),
    Case("topic-fanout-4", "durable_e2e", ["tcp"], [256], [FERRY_T, FERRY_Q, RAW_D], run_durable_e2e,
         {"quick": lambda size: 20_000, "full": lambda size: 250_000},
         "2 producer processes publish; 4 durable subscriptions (one consumer each, 2 handler threads, prefetch "
         "1024, all in one process) each handle every message: msgs/s is the slowest subscription's rate; "
         "ferry queue and raw are durable-e2e's single consumer; latency paced as durable-e2e",
         params={"producers": 2, "threads": 2, "prefetch": 1024, "subscriptions": 4}),
    Case("topic-replay", "replay", ["tcp"], [256], [FERRY_T, FERRY_Q, RAW_D], run_replay,
         {"quick": lambda size: 100_000, "full": lambda size: 1_000_000},
         "4 producer processes store N messages nobody reads; then one reader (2 handler threads, prefetch "
         "1024) takes them all back: a new subscription from the topic's first message (from disk), a consumer "
         "of the queue, the raw server's consumer (from its memory)",
         params={"threads": 2, "prefetch": 1024}, max_reps=3),
    Case("topic-idle-100", "durable_produce", ["tcp"], [256], [FERRY_T, FERRY_T_NONE, RAW_D], run_durable_produce,
         {"quick": lambda size: 20_000, "full": lambda size: 1_000_000},
         "8 producer processes publishing to a topic with 100 durable subscriptions nobody reads vs none; "
         "ferryd's RSS growth over the run in the info", params={"producers": 8, "idle_subscriptions": 100}),
    # Issue 10: the cost of monitoring. ferryd with --metrics, /metrics fetched every second during the run,
    # against the same ferryd without it (and the raw baseline), each on a fresh server.
    Case("metrics-produce-8", "durable_produce", ["tcp"], [256], [FERRY_M, FERRY_NO_M, RAW_D], run_durable_produce,
         {"quick": lambda size: 20_000, "full": lambda size: 1_000_000},
         "8 producer processes -> ferryd with --metrics scraped every 1 s vs without; info counts the scrapes",
         params={"producers": 8}),
    Case("metrics-e2e", "durable_e2e", ["tcp"], [256], [FERRY_M, FERRY_NO_M, RAW_D], run_durable_e2e,
         {"quick": lambda size: 20_000, "full": lambda size: 500_000},
         "durable-e2e's setup, ferryd with --metrics scraped every 1 s vs without",
         params={"producers": 2, "threads": 2, "prefetch": 1024}),
    # Issue 11: scheduled messages falling due at 50,000/s, all stored beforehand (ferryd holds them).
    Case("delayed-due-50k", "delayed", ["tcp"], [256], [FERRY_D], run_delayed,
         {"quick": lambda size: 50_000, "full": lambda size: 500_000},
         "1 producer stores messages with ferry-not-before times spread at 50,000/s, starting once all are "
         "stored; a consumer (2 threads, prefetch 1024) connected from the start; lateness = handler's clock - "
         "due time; no raw baseline (raw ZeroMQ has no scheduled delivery)",
         params={"rate": 50_000}, max_reps=3),
    Case("recovery", "recovery", ["tcp"], [256], [FERRY_D, RAW_D], run_recovery,
         {"quick": lambda size: 50_000, "full": lambda size: 1_000_000},
         "fill with unsettled messages, SIGTERM, time a new server from spawn to ready (warm page cache)",
         max_reps=3),
    Case("memory", "memory", ["tcp"], [256], [FERRY_D, RAW_D], run_memory,
         {"quick": lambda size: 200_000, "full": lambda size: 10_000_000},
         "server VmHWM / VmRSS after 4 producers (window 10,000 each, ferry's default) filled a backlog nobody "
         "consumes; then a restart on it", max_reps=1),
]
