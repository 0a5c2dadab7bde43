"""What a case is: its kind (metrics, ratios taken, table title), its variants, and the errors a measurement
raises."""

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Kind:
    """What a case measures: its metrics, the ratios taken of them (subject / baseline, per repetition)
    as {JSON name: metric}, and the table title. The first metric is the one progress lines show."""
    metrics: list
    ratios: dict
    title: str


KINDS = {
    "throughput": Kind(["msgs_per_s", "cpu_ns_per_msg"], {"ratio": "msgs_per_s", "cpu_ratio": "cpu_ns_per_msg"},
                       "Throughput (messages/s received; higher is better)"),
    "latency": Kind(["p50_us", "p99_us", "p999_us"], {"p50_ratio": "p50_us"},
                    "One-way latency (µs = round trip / 2; lower is better)"),
    "durable_produce": Kind(["msgs_per_s", "cpu_ns_per_msg"], {"ratio": "msgs_per_s", "cpu_ratio": "cpu_ns_per_msg"},
                            "Durable produce (messages/s confirmed durable, first send to last confirm; "
                            "higher is better)"),
    "durable_e2e": Kind(["msgs_per_s", "cpu_ns_per_msg", "p50_us", "p99_us", "p999_us", "paced_rate"],
                        {"ratio": "msgs_per_s", "p50_ratio": "p50_us", "p99_ratio": "p99_us"},
                        "Durable end to end (produce -> store -> handler -> ack: messages/s handled flat out; "
                        "produce-to-handler latency in µs at the paced rate)"),
    "replay": Kind(["msgs_per_s", "cpu_ns_per_msg"], {"ratio": "msgs_per_s"},
                   "Catch-up replay (messages/s a new subscription reads back from disk; higher is better)"),
    "recovery": Kind(["recovery_s", "startup_s", "hwm_mib"], {"ratio": "recovery_s"},
                     "Recovery (seconds from start to ready on a data dir of unsettled messages; lower is better)"),
    "delayed": Kind(["p50_us", "p99_us", "p999_us"], {},
                    "Delayed messages (lateness in µs: handler's clock minus the message's due time, while "
                    "messages fall due at the case's rate; lower is better)"),
    "memory": Kind(["hwm_mib", "rss_mib", "restart_s", "restart_hwm_mib"], {"ratio": "hwm_mib"},
                   "Server memory with a backlog (MiB; lower is better)"),
}


DURABLE_KINDS = {"durable_produce", "durable_e2e", "replay", "recovery", "memory", "delayed"}


@dataclass
class Variant:
    """One implementation measured in a case. `prefix` names its JSON fields ("" for the subject, "raw_"
    for `raw_msgs_per_s`); `ratio_suffix` names the subject's ratio against it ("" gives "ratio",
    "_same_frames" gives "ratio_same_frames")."""
    label: str
    impl: str
    prefix: str
    ratio_suffix: str = ""


FERRY = Variant("ferry", "ferry", "")
RAW1 = Variant("raw 1-frame", "raw1", "raw_", "")
RAW3 = Variant("raw 3-frame", "raw3", "raw3_", "_same_frames")
# Durable: ferry through ferryd, the raw cppzmq baseline (bench_durable --role raw-server), and the peers
# scripts/bench.sh --peers adds.
FERRY_D = Variant("ferry", "ferry", "")
RAW_D = Variant("raw", "raw", "raw_")
REDIS = Variant("redis (fsync always)", "redis", "redis_", "_redis")
NATS = Variant("nats js (not syncing each write)", "nats", "nats_", "_nats")
NATS_SYNC = Variant("nats js (sync always)", "nats-sync", "nats_sync_", "_nats_sync")
# Durable topics: ferry publishing to a topic (the subject), next to ferry sending to a queue in the same run.
FERRY_T = Variant("ferry topic", "ferry-topic", "")
FERRY_Q = Variant("ferry queue", "ferry", "queue_", "_queue")
FERRY_T_NONE = Variant("ferry topic, no subscription", "ferry-topic", "none_", "_none")
# Issue 10: ferryd with --metrics, scraped every second (the subject), next to the same ferryd without it.
FERRY_M = Variant("ferry, /metrics scraped every 1 s", "ferry-metrics", "")
FERRY_NO_M = Variant("ferry, no metrics", "ferry", "off_", "_off")


@dataclass
class Case:
    name: str
    kind: str
    transports: list
    sizes: list
    variants: list
    # run(case, variant, transport, size, settings) -> dict with the kind's metrics; raises on failure.
    run: Callable
    # counts[mode](size) -> how much work one measurement does (messages, round trips, ...)
    counts: dict = field(default_factory=dict)
    note: str = ""
    # Settings for the runner (brokerless: pattern, batch; durable: producers, ...), the variants --peers
    # adds (durable cases), and a cap on repetitions for the long ones.
    params: dict = field(default_factory=dict)
    peer_variants: list = field(default_factory=list)
    max_reps: int = 0

    @property
    def durable(self):
        """Whether it runs servers on a data dir (the run then measures the disk's sync latency first)."""
        return self.kind in DURABLE_KINDS


class BenchError(Exception):
    pass


class Skip(Exception):
    """A measurement that cannot run here (not enough disk, say); reported, not counted as a failure."""
