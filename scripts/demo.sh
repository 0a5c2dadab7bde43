#!/usr/bin/env bash
# The main job, end to end on loopback: ferryd with an on-disk data directory in a temporary folder, a
# producer sending a stream of orders durably, and a pool of three workers. Mid-run one worker is killed
# (kill -9) and so is ferryd (kill -9, then restarted on the same data directory). The summary checks
# that every order ferryd confirmed was processed, and processed once.
#
#   scripts/demo.sh                      FERRY_DEMO_ORDERS=20000 (default 10000), FERRY_DEMO_KEEP=1 keeps the files
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ferry_install_deps

build=${FERRY_BUILD_DIR:-build}
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "== building ferryd and the ferry tool (in $build/)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${FERRY_BUILD_TYPE:-RelWithDebInfo}" "${launcher[@]}" >/dev/null
cmake --build "$build" -j2 --target ferryd ferry_cli >/dev/null
ferryd=$build/apps/ferryd/ferryd
ferry=$build/apps/ferry/ferry

orders=${FERRY_DEMO_ORDERS:-10000}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${FERRY_DEMO_KEEP:-0}" = 1 ]; then echo "files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint=tcp://127.0.0.1:$port
mkdir -p "$work/data"

# Waits up to $2 seconds for $1 (a file) to contain $3.
wait_for() {
  local deadline=$((SECONDS + $2))
  until grep -q "$3" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for '$3' in $1" >&2; cat "$1" >&2; exit 1; fi
    sleep 0.05
  done
}

starts=0
start_ferryd() {
  starts=$((starts + 1))
  ferryd_log=$work/ferryd.$starts.log
  "$ferryd" --data-dir "$work/data" --bind "$endpoint" --heartbeat-timeout-ms 2000 >"$ferryd_log" 2>&1 &
  ferryd_pid=$!
  pids+=("$ferryd_pid")
  wait_for "$ferryd_log" 20 "ready"
}

# kill -9, and reap quietly (no "Killed" notice from the shell).
kill_hard() {
  kill -9 "$1"
  { wait "$1"; } 2>/dev/null || true
}

start_worker() {
  "$ferry" consume --forwarder "$endpoint" --queue orders --format json --prefetch 32 \
    >"$work/worker$1.jsonl" 2>"$work/worker$1.log" &
  pids+=("$!")
  eval "worker$1_pid=$!"
}

echo "== ferryd on $endpoint, data in $work/data (fsync always)"
start_ferryd
for i in 1 2 3; do start_worker "$i"; done
echo "== 3 workers consuming queue 'orders'; sending $orders orders"

# The order stream: one JSON order per line, paced so the failures below happen mid-run.
generate_orders() {
  local i
  for ((i = 1; i <= orders; i++)); do
    printf '{"order":%d,"customer":"c%d","amount":%d.%02d}\n' "$i" $((i % 97)) $((i % 500)) $((i % 100))
    if ((i % 500 == 0)); then sleep 0.1; fi
  done
}
generate_orders | "$ferry" send --forwarder "$endpoint" --queue orders --id-file "$work/confirmed.txt" \
  --timeout-ms 120000 --stats 2>"$work/producer.log" &
producer_pid=$!
pids+=("$producer_pid")

sleep 0.7
echo "== kill -9 worker 2 (pid $worker2_pid) in the middle of the stream"
kill_hard "$worker2_pid"
sleep 0.6
echo "== kill -9 ferryd (pid $ferryd_pid), then restart it on the same data directory"
kill_hard "$ferryd_pid"
start_ferryd
grep -E "recovered|torn|damaged" "$ferryd_log" | sed 's/^.*\] /   ferryd: /' || true

if ! wait "$producer_pid"; then
  echo "the producer did not get every order confirmed:" >&2
  cat "$work/producer.log" >&2
  exit 1
fi
sed -e 's/^.*\] producer: /   producer: /' -e 's/^ferry: /   producer: /' "$work/producer.log"

# Let the workers drain the queue, then stop them cleanly.
deadline=$((SECONDS + 120))
until "$ferry" stats --forwarder "$endpoint" --format json --queue orders 2>/dev/null |
  /usr/bin/python3 -c 'import json,sys; q=json.load(sys.stdin)["queues"]["orders"]; sys.exit(0 if q["depth"]==0 else 1)'; do
  if [ $SECONDS -ge $deadline ]; then echo "the queue did not drain" >&2; exit 1; fi
  sleep 0.2
done
echo "== the queue is drained; ferryd's counters since its restart:"
"$ferry" stats --forwarder "$endpoint" --queue orders |
  grep -E "depth|in flight|consumers|confirmed|delivered|acked|deduplicated" | sed 's/^ */   /'
kill -TERM "$worker1_pid" "$worker3_pid"
wait "$worker1_pid" "$worker3_pid" 2>/dev/null || true
kill -TERM "$ferryd_pid"
wait "$ferryd_pid" 2>/dev/null || true

echo "== summary"
/usr/bin/python3 - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
confirmed = {line.split()[1] for line in (work / "confirmed.txt").read_text().split("\n") if line.strip()}
deliveries, by_worker, attempts = {}, {}, {}
for f in sorted(work.glob("worker*.jsonl")):
    for line in f.read_text().splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue  # a line cut short by kill -9
        deliveries[m["id"]] = deliveries.get(m["id"], 0) + 1
        by_worker[f.stem] = by_worker.get(f.stem, 0) + 1
        attempts[m["attempt"]] = attempts.get(m["attempt"], 0) + 1
# "Processed" is what an idempotent handler keyed by the order's id applies: each id once.
processed = set(deliveries)
missing = confirmed - processed
again = sum(n - 1 for n in deliveries.values())
print(f"orders confirmed by ferryd: {len(confirmed)}")
print(f"deliveries handled:         {sum(deliveries.values())}  " +
      ", ".join(f"{w}: {n}" for w, n in sorted(by_worker.items())))
print(f"by attempt number:          " + ", ".join(f"{a}: {n}" for a, n in sorted(attempts.items())))
print(f"delivered again after the crashes (at-least-once; applied once by id): {again}")
print(f"processed exactly once:     {len(processed & confirmed)} of {len(confirmed)}; lost: {len(missing)}")
if missing or not confirmed:
    print("FAILED: confirmed orders were not processed", file=sys.stderr)
    sys.exit(1)
print("OK: every confirmed order was processed exactly once, despite a killed worker and a killed ferryd")
PY
