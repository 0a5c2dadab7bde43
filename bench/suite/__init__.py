"""ferry's benchmark suite, driven by bench/bench.py (python3 standard library only).

model       what a case is: its kind (metrics, ratios, table), variants (subject and baselines), errors
processes   running the benchmark programs and the servers (ferryd, the raw server, Redis, NATS)
runners     one measurement of each kind of case: throughput, latency, durable produce / end to end,
            recovery, memory
cases       the suite: every case with its transports, sizes, variants and counts (add cases there)
output      aggregating repetitions into one JSON line per case, the markdown tables, the targets
"""
