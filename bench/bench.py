#!/usr/bin/env python3
"""Runs ferry's benchmark suite and aggregates it (python3 standard library only).

scripts/bench.sh builds the programs and calls this. Every case runs ferry and its raw ZeroMQ baselines
alternately (the order rotates each repetition), several times; the results file gets one JSON line per
case with medians, min and max, and a markdown table goes to stdout. Progress goes to stderr.

Adding a case (for example a durable one through ferryd) means adding an entry to CASES below: a name, a
kind (which metrics and table it has), transports, sizes, its variants (the first is the subject, the rest
are baselines its ratios are computed against) and a runner that performs one measurement.
"""

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- metric kinds ----------------------------------------------------------------------------------------

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
}


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


# --- running the programs --------------------------------------------------------------------------------

class BenchError(Exception):
    pass


def parse_json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def result_line(text, what):
    lines = [j for j in parse_json_lines(text) if not j.get("ready")]
    if not lines:
        raise BenchError(f"{what} printed no result")
    j = lines[-1]
    if not j.get("ok"):
        raise BenchError(f"{what}: {j.get('error', 'failed')}")
    return j


def run_one_process(argv, timeout):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout} s: {' '.join(argv)}")
    if p.returncode != 0 and not parse_json_lines(p.stdout):
        raise BenchError(f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return p.stdout


def run_two_processes(server_argv, client_argv, endpoint_keys, timeout):
    """Starts the binding side, waits for its "ready" line, starts the connecting side with the endpoints
    it printed (mapped to flags by endpoint_keys), and returns both outputs (server, client)."""
    server = subprocess.Popen(server_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        line = server.stdout.readline() if ready else ""
        try:
            info = json.loads(line)
        except json.JSONDecodeError:
            info = {}
        if not info.get("ready"):
            raise BenchError(f"{os.path.basename(server_argv[0])} did not get ready: {line.strip()}")
        extra = []
        for key, flag in endpoint_keys.items():
            extra += [flag, info[key]]
        client_out = run_one_process(client_argv + extra, timeout)
        server_out, _ = server.communicate(timeout=timeout)
        return line + server_out, client_out
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout} s: {' '.join(server_argv)}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def endpoint_for(transport, settings, name):
    if transport == "tcp":
        return "tcp://127.0.0.1:*"
    if transport == "ipc":
        return f"ipc://{settings['tmpdir']}/{name}"
    return f"inproc://{name}"


def run_thr(case, variant, transport, size, settings):
    exe = os.path.join(settings["bin"], "bench_thr")
    count = case.counts[settings["mode"]](size)
    common = [f"--pattern={case.name}", f"--impl={variant.impl}", f"--size={size}", f"--count={count}",
              f"--timeout={settings['timeout']}"]
    if transport == "inproc":
        out = run_one_process([exe, "--role=both", "--transport=inproc"] + common, settings["timeout"] + 10)
        j = result_line(out, "bench_thr")
    else:
        server = [exe, "--role=recv", f"--endpoint={endpoint_for(transport, settings, 'thr-data')}",
                  f"--control={endpoint_for(transport, settings, 'thr-ctl')}"] + common
        client = [exe, "--role=send"] + common
        server_out, client_out = run_two_processes(
            server, client, {"endpoint": "--endpoint", "control": "--control"}, settings["timeout"] + 10)
        sender = result_line(client_out, "bench_thr sender")
        j = result_line(server_out, "bench_thr receiver")
        # CPU of both processes; with --role both the receiver's figure already covers the whole process.
        j["cpu_ns_per_msg"] += sender["cpu_ns_per_msg"]
    settings["zmq_version"] = j.get("zmq_version", settings.get("zmq_version"))
    return {"msgs_per_s": j["msgs_per_s"], "cpu_ns_per_msg": j["cpu_ns_per_msg"]}


def run_lat(case, variant, transport, size, settings):
    exe = os.path.join(settings["bin"], "bench_lat")
    count = case.counts[settings["mode"]](size)
    common = [f"--impl={variant.impl}", f"--size={size}", f"--count={count}",
              f"--warmup={max(count // 10, 100)}", f"--timeout={settings['timeout']}"]
    if transport == "inproc":
        out = run_one_process([exe, "--role=both", "--transport=inproc"] + common, settings["timeout"] + 10)
        j = result_line(out, "bench_lat")
    else:
        server = [exe, "--role=echo", f"--endpoint={endpoint_for(transport, settings, 'lat-ping')}",
                  f"--reply-endpoint={endpoint_for(transport, settings, 'lat-pong')}"] + common
        client = [exe, "--role=ping"] + common
        server_out, client_out = run_two_processes(
            server, client, {"endpoint": "--endpoint", "reply_endpoint": "--reply-endpoint"},
            settings["timeout"] + 10)
        j = result_line(client_out, "bench_lat pinger")
        result_line(server_out, "bench_lat echo")
    settings["zmq_version"] = j.get("zmq_version", settings.get("zmq_version"))
    return {m: j[m] for m in ("p50_us", "p99_us", "p999_us")}


# --- the suite: add cases here ---------------------------------------------------------------------------

TRANSPORTS = ["tcp", "ipc", "inproc"]
SIZES = [16, 256, 4096]


def thr_counts(quick, full):
    """Messages per measurement: fewer for 4 KiB payloads, which move at a fraction of the message rate."""
    return {"quick": lambda size: quick if size < 4096 else quick // 4,
            "full": lambda size: full if size < 4096 else full // 4}


CASES = [
    Case("pushpull", "throughput", TRANSPORTS, SIZES, [FERRY, RAW1, RAW3], run_thr, thr_counts(100_000, 1_000_000),
         "pusher -> worker_pool (1 handler thread) vs raw PUSH -> PULL"),
    Case("pubsub", "throughput", TRANSPORTS, SIZES, [FERRY, RAW1, RAW3], run_thr, thr_counts(100_000, 1_000_000),
         "publisher (when_full::block) -> subscriber vs raw XPUB (XPUB_NODROP) -> SUB; subscribed before the "
         "first send, nothing dropped: rates count delivered messages"),
    Case("latency", "latency", TRANSPORTS, SIZES, [FERRY, RAW1, RAW3], run_lat,
         {"quick": lambda size: 2_000, "full": lambda size: 20_000},
         "ping-pong over two push/pull pairs; one-way = round trip / 2"),
    # Durable cases (produce to ferryd, end to end, recovery, memory) go here: a runner that starts ferryd
    # on a temporary data directory and a kind for their metrics (add one to KINDS when none fits).
]


# --- aggregation and output ------------------------------------------------------------------------------

def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "loadavg_at_start": round(os.getloadavg()[0], 2), "commit": commit}


def summarize(values):
    return statistics.median(values), min(values), max(values)


def aggregate(case, transport, size, reps, settings, machine):
    """One JSON object for a case: per variant and metric the median, min and max over repetitions, and
    per baseline the subject's ratio, taken per repetition (adjacent runs) and then summarized."""
    kind = KINDS[case.kind]
    line = {"case": case.name, "transport": transport, "size": size}
    errors = [r["error"] for r in reps if "error" in r]
    good = [r for r in reps if "error" not in r]
    for variant in case.variants:
        for metric in kind.metrics:
            values = [r[variant.label][metric] for r in good]
            if values:
                med, lo, hi = summarize(values)
                name = variant.prefix + metric
                line[name], line[name + "_min"], line[name + "_max"] = med, lo, hi
    subject = case.variants[0]
    for baseline in case.variants[1:]:
        for ratio_name, metric in kind.ratios.items():
            ratios = [r[subject.label][metric] / r[baseline.label][metric] for r in good
                      if r[baseline.label][metric] > 0]
            if ratios:
                med, lo, hi = summarize(ratios)
                name = ratio_name + baseline.ratio_suffix
                line[name], line[name + "_min"], line[name + "_max"] = round(med, 4), round(lo, 4), round(hi, 4)
    line["repetitions"] = len(good)
    line["mode"] = settings["mode"]
    if errors:
        line["error"] = errors[0]
    line["machine"] = dict(machine, libzmq=settings.get("zmq_version", ""))
    line["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return line


def fmt_rate(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.0f} k"
    return f"{v:.0f}"


def fmt_us(v):
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def with_range(line, name, fmt):
    if name not in line:
        return "–"
    med, lo, hi = line[name], line[name + "_min"], line[name + "_max"]
    if line["repetitions"] <= 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


def ratio_cell(line, name):
    return with_range(line, name, lambda v: f"{v:.2f}")


def print_tables(lines, cases):
    for kind_name, kind in KINDS.items():
        rows = [l for l in lines if next(c for c in cases if c.name == l["case"]).kind == kind_name]
        if not rows:
            continue
        variants = next(c for c in cases if c.kind == kind_name).variants
        baselines = variants[1:]
        ratio_names = list(kind.ratios)
        if kind_name == "throughput":
            # The CPU figures are medians only: they vary less than the rates.
            head = [v.label for v in variants] + [f"CPU ns/msg {v.label}" for v in variants]

            def cells_for(l):
                return [with_range(l, v.prefix + "msgs_per_s", fmt_rate) for v in variants] + \
                       [f"{l[v.prefix + 'cpu_ns_per_msg']:.0f}" if v.prefix + "cpu_ns_per_msg" in l else "–"
                        for v in variants]
        else:
            head = [f"{v.label} p50 / p99 / p99.9" for v in variants]

            def cells_for(l):
                out = []
                for v in variants:
                    p = v.prefix
                    out.append(f"{with_range(l, p + 'p50_us', fmt_us)} / {fmt_us(l[p + 'p99_us'])} / "
                               f"{fmt_us(l[p + 'p999_us'])}" if p + "p50_us" in l else "–")
                return out
        ratio_cols = [(r + b.ratio_suffix, f"{r + b.ratio_suffix}") for r in ratio_names for b in baselines]
        head = ["case", "transport", "size"] + head + [title for _, title in ratio_cols]
        print(f"\n### {kind.title}\n")
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for l in rows:
            cells = [l["case"], l["transport"], str(l["size"])] + cells_for(l) + \
                    [ratio_cell(l, name) for name, _ in ratio_cols]
            if "error" in l:
                cells[-1] += f" **FAILED: {l['error']}**"
            print("| " + " | ".join(cells) + " |")


def print_targets(lines):
    """The issue's targets, checked on tcp loopback."""
    checks = []
    for l in lines:
        if l["transport"] != "tcp":
            continue
        if l["case"] in ("pushpull", "pubsub") and "ratio" in l:
            checks.append(f"{l['case']} tcp {l['size']} B: ratio {l['ratio']:.2f} vs raw 1-frame "
                          f"({'met' if l['ratio'] >= 0.90 else 'MISSED'}, target >= 0.90); "
                          f"{l.get('ratio_same_frames', 0):.2f} vs raw 3-frame")
        if l["case"] == "latency" and "p50_ratio" in l:
            checks.append(f"latency tcp {l['size']} B: p50 {l['p50_us']:.1f} µs vs raw {l['raw_p50_us']:.1f} µs, "
                          f"ratio {l['p50_ratio']:.2f} ({'met' if l['p50_ratio'] <= 1.10 else 'MISSED'}, "
                          f"target <= 1.10); {l.get('p50_ratio_same_frames', 0):.2f} vs raw 3-frame")
    if checks:
        print("\nTargets (tcp loopback):\n")
        for c in checks:
            print(f"- {c}")


# --- main -------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, small counts")
    ap.add_argument("--reps", type=int, help="repetitions per case (default: 1 quick, 5 full)")
    ap.add_argument("--only", help="comma-separated case names to run (default: all)")
    ap.add_argument("--transports", help="comma-separated transports (default: tcp,ipc,inproc)")
    ap.add_argument("--sizes", help="comma-separated payload sizes (default: 16,256,4096)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-release"))
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "latest.jsonl"))
    ap.add_argument("--timeout", type=int, default=120, help="seconds one measurement may take")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    reps = args.reps or (1 if args.quick else 5)
    only = set(args.only.split(",")) if args.only else None
    transports = args.transports.split(",") if args.transports else None
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    cases = [c for c in CASES if only is None or c.name in only]
    if not cases:
        sys.exit(f"no case named {args.only}; cases: {', '.join(c.name for c in CASES)}")

    tmpdir = tempfile.mkdtemp(prefix="ferry-bench-")
    settings = {"mode": mode, "bin": os.path.join(os.path.abspath(args.build_dir), "bench"),
                "timeout": args.timeout, "tmpdir": tmpdir}
    machine = machine_info()
    print(f"ferry bench ({mode}, {reps} repetition(s)): {machine['cpu_model']}, {machine['nproc']} CPUs, "
          f"kernel {machine['kernel']}, load {machine['loadavg_at_start']}", file=sys.stderr)
    started = time.monotonic()
    lines = []
    try:
        for case in cases:
            for transport in case.transports:
                if transports and transport not in transports:
                    continue
                for size in case.sizes:
                    if sizes and size not in sizes:
                        continue
                    reps_out = []
                    for rep in range(reps):
                        # Rotate the order each repetition so no variant always runs first or last.
                        k = rep % len(case.variants)
                        order = case.variants[k:] + case.variants[:k]
                        out = {}
                        for variant in order:
                            try:
                                out[variant.label] = case.run(case, variant, transport, size, settings)
                            except BenchError as e:
                                out["error"] = f"{variant.label}: {e}"
                                break
                        reps_out.append(out)
                        metric = KINDS[case.kind].metrics[0]
                        shown = ", ".join(f"{v.label} {out[v.label][metric]:.4g}" for v in case.variants
                                          if v.label in out)
                        print(f"  {case.name} {transport} {size} B rep {rep + 1}/{reps}: {metric} {shown}"
                              + (f"  ERROR {out['error']}" if "error" in out else ""), file=sys.stderr)
                    lines.append(aggregate(case, transport, size, reps_out, settings, machine))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        for l in lines:
            f.write(json.dumps(l) + "\n")

    m = lines[0]["machine"] if lines else dict(machine)
    print(f"## ferry benchmarks ({mode}, {reps} repetition(s) per case; median (min–max))\n")
    print(f"Machine: {m['cpu_model']}, {m['nproc']} CPUs, Linux {m['kernel']}, libzmq {m.get('libzmq', '?')}, "
          f"load average at start {m['loadavg_at_start']}, commit {m['commit']}. "
          f"tcp = 127.0.0.1 loopback; tcp and ipc run sender and receiver as separate processes, inproc as "
          f"two threads of one process.")
    for case in cases:
        if case.note:
            print(f"\n- {case.name}: {case.note}")
    print_tables(lines, cases)
    print_targets(lines)
    failed = [l for l in lines if "error" in l]
    print(f"\n{len(lines)} cases in {time.monotonic() - started:.0f} s; results in "
          f"{os.path.relpath(args.output, ROOT)}" + (f"; {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
