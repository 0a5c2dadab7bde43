#!/usr/bin/env bash
# Builds the benchmark programs in Release (-O2) and runs the suite (see bench/README.md).
#   scripts/bench.sh                 full run: 5 repetitions per case, about 1-2 s per measurement
#   scripts/bench.sh --quick         smoke run: 1 repetition, small counts (what CI runs)
#   scripts/bench.sh --only pubsub --transports tcp --reps 3    extra arguments go to bench/bench.py
#   scripts/bench.sh --only pushpull-batch64,pubsub-batch64,pushpull-large   cases: bench/suite/cases.py
#   scripts/bench.sh --peers         durable cases also run Redis Streams and NATS JetStream (installed
#                                    from Debian: redis-server, nats-server, libhiredis-dev, libnats-dev)
# Writes bench/results/latest.jsonl (one JSON line per case; --output elsewhere) and prints markdown tables
# and the targets' verdicts.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
peers=()
for arg in "$@"; do
  [ "$arg" = "--peers" ] && peers=(redis-server nats-server libhiredis-dev libnats-dev)
done
ferry_install_deps "${peers[@]}"

build=${FERRY_BENCH_BUILD_DIR:-build-release}
# ferryd is built in Release too: the durable cases run it.
bench_targets=(bench_thr bench_lat bench_durable ferryd)
[ ${#peers[@]} -gt 0 ] && bench_targets+=(bench_peers)
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
  -DFERRY_BUILD_BENCH=ON -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_EXAMPLES=OFF -DFERRY_BUILD_APPS=ON \
  "${launcher[@]}" >/dev/null
# Build output goes to stderr: stdout carries only the results table.
cmake --build "$build" -j2 --target "${bench_targets[@]}" >&2

# The Debian interpreter: the suite needs only the standard library, not whatever python3 is first in PATH.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
exec "$python" bench/bench.py --build-dir "$build" "$@"
