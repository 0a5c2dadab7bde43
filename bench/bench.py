#!/usr/bin/env python3
"""Runs ferry's benchmark suite and aggregates it (python3 standard library only).

scripts/bench.sh builds the programs and calls this. Every case runs ferry and its raw ZeroMQ baselines
alternately (the order rotates each repetition), several times; the results file gets one JSON line per
case and transport and size, with medians, min and max, and a markdown table goes to stdout. Progress goes
to stderr.

The suite lives in bench/suite/: the cases in suite/cases.py (adding one is adding an entry there: a name, a
kind, transports, sizes, its variants, the first the subject and the rest the baselines its ratios are
taken against, and a runner), the runners in suite/runners.py, the programs and servers they start in
suite/processes.py, tables and targets in suite/output.py.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/suite/ from a benchmark run

from suite.cases import CASES  # noqa: E402 (after the bytecode setting)
from suite.model import KINDS, BenchError, Skip  # noqa: E402
from suite.output import ROOT, aggregate, machine_info, print_report  # noqa: E402
from suite.processes import fsync_probe, peer_availability  # noqa: E402


def measure(case, transport, size, reps, settings):
    """`reps` repetitions of every variant of `case`, the order rotated each time so no variant always
    runs first or last. Returns one dict per repetition: {variant label: metrics} plus "error" or
    "skipped"; a repetition stops at its first failing variant, the case at its first skip."""
    reps_out = []
    for rep in range(reps):
        k = rep % len(case.variants)
        order = case.variants[k:] + case.variants[:k]
        out = {}
        for variant in order:
            try:
                out[variant.label] = case.run(case, variant, transport, size, settings)
            except BenchError as e:
                out["error"] = f"{variant.label}: {e}"
                break
            except Skip as e:
                out["skipped"] = str(e)
                break
        reps_out.append(out)
        metric = KINDS[case.kind].metrics[0]
        shown = ", ".join(f"{v.label} {out[v.label][metric]:.4g}" for v in case.variants
                          if v.label in out and metric in out[v.label])
        print(f"  {case.name} {transport} {size} B rep {rep + 1}/{reps}: {metric} {shown}"
              + (f"  ERROR {out['error']}" if "error" in out else "")
              + (f"  SKIPPED {out['skipped']}" if "skipped" in out else ""), file=sys.stderr)
        if "skipped" in out:
            break
    return reps_out


def add_peers(durable, settings):
    """Adds the peer variants that can run here to the durable cases; returns {label: why not} for the
    others."""
    missing = peer_availability(settings)
    skipped = {}
    for c in durable:
        for v in c.peer_variants:
            if v.impl in missing:
                skipped[v.label] = missing[v.impl]
            else:
                c.variants = c.variants + [v]
    for label, why in skipped.items():
        print(f"  not measured: {label}: {why}", file=sys.stderr)
    return skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, small counts")
    ap.add_argument("--reps", type=int, help="repetitions per case (default: 1 quick, 5 full)")
    ap.add_argument("--only", help="comma-separated case names to run (default: all): "
                    + ", ".join(c.name for c in CASES))
    ap.add_argument("--transports", help="comma-separated transports (default: each case's)")
    ap.add_argument("--sizes", help="comma-separated payload sizes (default: each case's)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-release"))
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "latest.jsonl"))
    ap.add_argument("--timeout", type=int, default=120, help="seconds one measurement may take (durable cases: "
                    "at least 1 s per 10,000 messages)")
    ap.add_argument("--peers", action="store_true", help="durable cases also measure Redis Streams and NATS "
                    "JetStream (servers started on loopback; scripts/bench.sh --peers installs them)")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    reps = args.reps or (1 if args.quick else 5)
    only = set(args.only.split(",")) if args.only else None
    transports = args.transports.split(",") if args.transports else None
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    if only and only - {c.name for c in CASES}:
        sys.exit(f"no case named {', '.join(sorted(only - {c.name for c in CASES}))}; "
                 f"cases: {', '.join(c.name for c in CASES)}")
    cases = [c for c in CASES if only is None or c.name in only]

    tmpdir = tempfile.mkdtemp(prefix="ferry-bench-")
    settings = {"mode": mode, "bin": os.path.join(os.path.abspath(args.build_dir), "bench"),
                "apps": os.path.join(os.path.abspath(args.build_dir), "apps"),
                "timeout": args.timeout, "tmpdir": tmpdir}
    machine = machine_info()
    print(f"ferry bench ({mode}, {reps} repetition(s)): {machine['cpu_model']}, {machine['nproc']} CPUs, "
          f"kernel {machine['kernel']}, load {machine['loadavg_at_start']}", file=sys.stderr)
    started = time.monotonic()
    lines = []
    peers_skipped = {}
    try:
        durable = [c for c in cases if c.durable]
        if durable:
            # What one group commit costs on this disk, measured now: durable figures depend on it.
            machine.update(fsync_probe(settings, 200 if args.quick else 1000))
            print(f"  fdatasync of 4 KiB in {tmpdir}: p50 {machine['fsync_p50_us']} µs, "
                  f"p99 {machine['fsync_p99_us']} µs", file=sys.stderr)
        if args.peers and durable:
            peers_skipped = add_peers(durable, settings)
        for case in cases:
            # Durable runs grow with their counts: at least 1 s per 10,000 messages.
            settings["durable_timeout"] = max(args.timeout, case.counts[mode](256) // 10_000)
            case_reps = min(reps, case.max_reps) if case.max_reps else reps
            for transport in case.transports:
                if transports and transport not in transports:
                    continue
                for size in case.sizes:
                    if sizes and size not in sizes:
                        continue
                    reps_out = measure(case, transport, size, case_reps, settings)
                    line = aggregate(case, transport, size, reps_out, settings, machine)
                    if peers_skipped and case.peer_variants:
                        line["peers_not_measured"] = peers_skipped
                    lines.append(line)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")

    print_report(lines, cases, machine, mode, reps, peers_skipped)
    failed = [line for line in lines if "error" in line]
    print(f"\n{len(lines)} cases in {time.monotonic() - started:.0f} s; results in "
          f"{os.path.relpath(args.output, ROOT)}" + (f"; {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
