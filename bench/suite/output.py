"""Aggregating a case's repetitions into one JSON line (medians, min, max, ratios per repetition), the
machine record, the markdown tables and the targets."""

import datetime
import os
import platform
import statistics
import subprocess

from .model import Variant, KINDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    good = [r for r in reps if "error" not in r and "skipped" not in r]
    for variant in case.variants:
        for metric in kind.metrics:
            values = [r[variant.label][metric] for r in good if metric in r[variant.label]]
            if values:
                med, lo, hi = summarize(values)
                name = variant.prefix + metric
                line[name], line[name + "_min"], line[name + "_max"] = med, lo, hi
    subject = case.variants[0]
    for baseline in case.variants[1:]:
        for ratio_name, metric in kind.ratios.items():
            ratios = [r[subject.label][metric] / r[baseline.label][metric] for r in good
                      if metric in r[subject.label] and r[baseline.label].get(metric, 0) > 0]
            if ratios:
                med, lo, hi = summarize(ratios)
                name = ratio_name + baseline.ratio_suffix
                line[name], line[name + "_min"], line[name + "_max"] = round(med, 4), round(lo, 4), round(hi, 4)
    info = {v.label: good[-1][v.label]["info"] for v in case.variants if good and "info" in good[-1][v.label]}
    if info:
        line["info"] = info
    line["repetitions"] = len(good)
    line["mode"] = settings["mode"]
    skipped = [r["skipped"] for r in reps if "skipped" in r]
    if skipped and not good:
        line["skipped"] = skipped[0]
    elif errors:
        line["error"] = errors[0]
    line["machine"] = dict(machine, libzmq=settings.get("zmq_version", ""))
    line["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return line


def fmt_rate(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.0f} k"
    if v >= 1e3:
        return f"{v / 1e3:.2f} k"
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


def fmt_s(v):
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def median_cell(line, name, fmt):
    return fmt.format(line[name]) if name in line else "–"


def ratio_cell(line, name):
    return with_range(line, name, lambda v: f"{v:.2f}")


def print_tables(lines, cases):
    for kind_name, kind in KINDS.items():
        rows = [l for l in lines if next(c for c in cases if c.name == l["case"]).kind == kind_name]
        if not rows:
            continue
        # Every variant any case of this kind has (durable cases differ in which peers they have).
        variants = []
        for c in cases:
            if c.kind == kind_name:
                variants += [v for v in c.variants if v not in variants]
        # Variants of different cases that share a prefix (each case's subject has "") share a column.
        by_prefix = {}
        for v in variants:
            by_prefix.setdefault(v.prefix, []).append(v)
        variants = [Variant(" / ".join(dict.fromkeys(x.label for x in vs)), vs[0].impl, p, vs[0].ratio_suffix)
                    for p, vs in by_prefix.items()]
        baselines = variants[1:]
        ratio_names = list(kind.ratios)
        if kind_name == "throughput":
            # The CPU figures are medians only: they vary less than the rates.
            head = [v.label for v in variants] + [f"CPU ns/msg {v.label}" for v in variants] + \
                   [f"{variants[0].label} frames/msg"]

            def cells_for(l):
                frames = l.get("info", {}).get(variants[0].label, {}).get("frames_per_msg")
                return [with_range(l, v.prefix + "msgs_per_s", fmt_rate) for v in variants] + \
                       [f"{l[v.prefix + 'cpu_ns_per_msg']:.0f}" if v.prefix + "cpu_ns_per_msg" in l else "–"
                        for v in variants] + [f"{frames:.3g}" if frames is not None else "–"]
        elif kind_name in ("durable_produce", "replay"):
            head = [v.label for v in variants] + [f"CPU ns/msg {v.label}" for v in variants]

            def cells_for(l):
                return [with_range(l, v.prefix + "msgs_per_s", fmt_rate) for v in variants] + \
                       [median_cell(l, v.prefix + "cpu_ns_per_msg", "{:.0f}") for v in variants]
        elif kind_name == "durable_e2e":
            head = [f"{v.label} msgs/s" for v in variants] + \
                   [f"{v.label} p50 / p99 / p99.9 µs" for v in variants] + ["paced at msgs/s"] + \
                   [f"CPU ns/msg {v.label}" for v in variants]

            def cells_for(l):
                return [with_range(l, v.prefix + "msgs_per_s", fmt_rate) for v in variants] + \
                       [f"{fmt_us(l[v.prefix + 'p50_us'])} / {with_range(l, v.prefix + 'p99_us', fmt_us)} / "
                        f"{fmt_us(l[v.prefix + 'p999_us'])}" if v.prefix + "p50_us" in l else "–"
                        for v in variants] + \
                       [median_cell(l, "paced_rate", "{:.0f}")] + \
                       [median_cell(l, v.prefix + "cpu_ns_per_msg", "{:.0f}") for v in variants]
        elif kind_name == "recovery":
            head = [f"{v.label} s (own figure)" for v in variants] + [f"{v.label} peak MiB" for v in variants]

            def cells_for(l):
                return [f"{with_range(l, v.prefix + 'recovery_s', fmt_s)} ({median_cell(l, v.prefix + 'startup_s', '{:.3f}')})"
                        if v.prefix + "recovery_s" in l else "–" for v in variants] + \
                       [median_cell(l, v.prefix + "hwm_mib", "{:.1f}") for v in variants]
        elif kind_name == "memory":
            head = [f"{v.label} peak / end MiB" for v in variants] + \
                   [f"{v.label} restart s / peak MiB" for v in variants]

            def cells_for(l):
                return [f"{median_cell(l, v.prefix + 'hwm_mib', '{:.1f}')} / {median_cell(l, v.prefix + 'rss_mib', '{:.1f}')}"
                        for v in variants] + \
                       [f"{median_cell(l, v.prefix + 'restart_s', '{:.3f}')} / "
                        f"{median_cell(l, v.prefix + 'restart_hwm_mib', '{:.1f}')}" for v in variants]
        else:
            head = [f"{v.label} p50 / p99 / p99.9" for v in variants]

            def cells_for(l):
                out = []
                for v in variants:
                    p = v.prefix
                    out.append(f"{with_range(l, p + 'p50_us', fmt_us)} / {fmt_us(l[p + 'p99_us'])} / "
                               f"{fmt_us(l[p + 'p999_us'])}" if p + "p50_us" in l else "–")
                return out
        ratio_cols = list(dict.fromkeys((r + b.ratio_suffix, f"{r + b.ratio_suffix}")
                                        for r in ratio_names for b in baselines))
        head = ["case", "transport", "size"] + head + [title for _, title in ratio_cols]
        print(f"\n### {kind.title}\n")
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for l in rows:
            cells = [l["case"], l["transport"], str(l["size"])] + cells_for(l) + \
                    [ratio_cell(l, name) for name, _ in ratio_cols]
            if "error" in l:
                cells[-1] += f" **FAILED: {l['error']}**"
            if "skipped" in l:
                cells[-1] += f" skipped: {l['skipped']}"
            print("| " + " | ".join(cells) + " |")


# Issue 7's targets: (case names, ratio field, ">=" or "<=", threshold, what the ratio is of, label). Every
# transport and size a case ran is checked: each row gets a line.
TARGETS = [
    (("pushpull", "pubsub"), "ratio", ">=", 0.90, "raw 1-frame", "one message per send"),
    (("pushpull-batch64", "pubsub-batch64"), "ratio", ">=", 2.0, "raw 1-frame", "batches of 64"),
    (("latency",), "p50_ratio", "<=", 1.05, "raw 1-frame's p50", "one-way latency p50"),
    (("pushpull-large",), "ratio", ">=", 0.95, "raw 1-frame", "large payloads"),
    (("durable-produce-8",), "ratio", ">=", 1.0, "the raw baseline", "durable produce, 8 producers"),
    (("durable-e2e",), "ratio", ">=", 0.8, "the raw baseline", "durable end to end, flat out"),
    (("durable-e2e",), "p99_ratio", "<=", 1.5, "raw's p99 at the same rate", "durable end to end p99, paced"),
    # Issue 8: durable topics.
    (("topic-publish-8",), "ratio_queue", ">=", 0.9, "durable produce to a queue", "topic publish, 8 producers"),
    (("topic-fanout-4",), "p50_ratio_queue", "<=", 1.5, "the queue's end-to-end p50",
     "fan-out to 4 subscriptions, p50 produce to handler"),
    (("topic-idle-100",), "ratio_none", ">=", 0.9, "the same topic without subscriptions",
     "publish with 100 idle subscriptions"),
    # Issue 10: metrics on and scraped every second cost at most 3%.
    (("metrics-produce-8",), "ratio_off", ">=", 0.97, "ferryd without metrics", "durable produce, metrics scraped"),
    (("metrics-e2e",), "ratio_off", ">=", 0.97, "ferryd without metrics", "durable end to end, metrics scraped"),
]


def size_text(size):
    if size >= 2**20 and size % 2**20 == 0:
        return f"{size // 2**20} MiB"
    if size >= 2**10 and size % 2**10 == 0:
        return f"{size // 2**10} KiB"
    return f"{size} B"


def target_detail(l, field):
    """What a target line adds after its verdict: the figures the ratio comes from."""
    if l["case"] in ("pushpull", "pubsub") and "ratio_same_frames" in l:
        return f"{l['ratio_same_frames']:.2f} of raw 3-frame (wire v1's shape)"
    if field == "p50_ratio" and "p50_us" in l and "raw_p50_us" in l:
        return f"p50 {fmt_us(l['p50_us'])} µs vs raw {fmt_us(l['raw_p50_us'])} µs"
    if field == "p99_ratio":
        return (f"p99 {l['p99_us'] / 1000:.2f} ms vs raw {l['raw_p99_us'] / 1000:.2f} ms at "
                f"{l['paced_rate']:.0f} msgs/s" if "p99_us" in l and "raw_p99_us" in l else "")
    if "msgs_per_s" in l and "raw_msgs_per_s" in l:
        return f"{fmt_rate(l['msgs_per_s'])} vs raw {fmt_rate(l['raw_msgs_per_s'])} msgs/s"
    return ""


def not_measured(l, field):
    if "error" in l:
        return f"FAILED: {l['error']}"
    if "skipped" in l:
        return f"skipped: {l['skipped']}"
    if field == "p99_ratio":
        info = l.get("info", {})
        slow = [v for v, i in info.items() if i.get("saturated_at_paced_rate")]
        if slow:
            return f"{' and '.join(slow)} could not keep up with the paced rate ({l.get('paced_rate', 0):.0f} msgs/s)"
    return "no ratio in this run"


def target_lines(lines):
    """One line per measured row of a target's cases: met or MISSED, with the same-run ratio (median, and
    its range over repetitions)."""
    out = []
    for cases, field, op, threshold, of, label in TARGETS:
        for l in lines:
            if l["case"] not in cases:
                continue
            durable = l["case"].startswith(("durable", "topic", "metrics"))
            head = label if durable else f"{label}: {l['case']} {l['transport']} {size_text(l['size'])}"
            goal = f"target {'≥' if op == '>=' else '≤'} {threshold:.2f}"
            if field not in l:
                out.append(f"{head}: not measured, {not_measured(l, field)} ({goal})")
                continue
            v = l[field]
            met = v >= threshold if op == ">=" else v <= threshold
            detail = target_detail(l, field)
            out.append(f"{head}: {ratio_cell(l, field)} of {of}: {'met' if met else 'MISSED'} ({goal})"
                       + (f"; {detail}" if detail else ""))
    return out


def other_lines(lines):
    """Earlier issues' absolute figures, kept as information (recovery and memory are still checked)."""
    out = []
    for l in lines:
        if l["case"] == "durable-produce-8" and "msgs_per_s" in l:
            out.append(f"durable produce, 8 producers: {l['msgs_per_s']:.0f} confirmed msgs/s "
                       f"(information: the earlier absolute target was >= 500,000)")
        if l["case"] == "durable-e2e" and "msgs_per_s" in l:
            p99 = (f"; p99 {l['p99_us'] / 1000:.2f} ms at {l['paced_rate']:.0f} msgs/s" if "p99_us" in l else "")
            out.append(f"durable end to end: {l['msgs_per_s']:.0f} msgs/s{p99} (information: the earlier absolute "
                       f"targets were >= 250,000 msgs/s and p99 < 5 ms at >= 125,000 msgs/s)")
        info = l.get("info", {})
        if l["case"] == "topic-fanout-4" and "ferry topic" in info:
            v = info["ferry topic"].get("per_subscription_vs_publish")
            if v is not None:
                out.append(f"fan-out to 4 subscriptions: each handled {v:.2f} of the publish rate in the same "
                           f"run ({'met' if v >= 0.8 else 'MISSED'}, target >= 0.80)")
        if l["case"] == "topic-replay" and "msgs_per_s" in l:
            out.append(f"catch-up replay of the stored messages: {l['msgs_per_s']:.0f} msgs/s "
                       f"({'met' if l['msgs_per_s'] >= 1_000_000 else 'MISSED'}, target >= 1,000,000 msgs/s; "
                       f"{l.get('ratio_queue', 0):.2f} of a queue's drain, {l.get('ratio', 0):.2f} of raw)")
        if l["case"] == "topic-idle-100" and "ferry topic" in info and "ferry topic, no subscription" in info:
            g = info["ferry topic"].get("server_rss_growth_mib")
            g0 = info["ferry topic, no subscription"].get("server_rss_growth_mib")
            if g is not None and g0 is not None:
                out.append(f"100 idle subscriptions: ferryd's RSS grew {g:.1f} MiB over the run, {g - g0:+.1f} MiB "
                           f"more than without them ({g0:.1f} MiB; last repetition) "
                           f"({'met' if g - g0 < 20 else 'MISSED'}, target < 20 MiB)")
        if l["case"] == "delayed-due-50k" and "p99_us" in l:
            early = l.get("info", {}).get("ferry", {}).get("early", "?")
            out.append(f"delayed messages falling due at 50,000/s: p99 lateness {l['p99_us'] / 1000:.2f} ms "
                       f"({'met' if l['p99_us'] < 50_000 else 'MISSED'}, target < 50 ms); {early} delivered early")
        if l["case"] == "recovery" and "recovery_s" in l:
            out.append(f"recovery of {l.get('info', {}).get('ferry', {}).get('records', '?')} unsettled: "
                       f"{l['recovery_s']:.3f} s ({'met' if l['recovery_s'] < 1 else 'MISSED'}, target < 1 s "
                       f"at 1,000,000)")
        if l["case"] == "memory" and "hwm_mib" in l:
            peak = max(l["hwm_mib"], l.get("restart_hwm_mib", 0))
            out.append(f"memory with a backlog: peak {l['hwm_mib']:.1f} MiB, after a restart on it "
                       f"{l.get('restart_hwm_mib', 0):.1f} MiB ({'met' if peak < 256 else 'MISSED'}, "
                       f"target < 256 MiB at 10,000,000)")
    return out


def print_targets(lines):
    quick = any(l.get("mode") == "quick" for l in lines)
    note = " A quick run's counts are a smoke test's, not the targets' sizes." if quick else ""
    checks = target_lines(lines)
    if checks:
        print(f"\nTargets (issue 7; ratios of this run, median (min–max) over repetitions; every transport).{note}\n")
        for c in checks:
            print(f"- {c}")
    others = other_lines(lines)
    if others:
        print(f"\nOther figures (earlier issues).{note}\n")
        for c in others:
            print(f"- {c}")


def print_report(lines, cases, machine, mode, reps, peers_skipped):
    """The markdown report on stdout: machine, disk, case notes, one table per kind, the targets."""
    m = lines[0]["machine"] if lines else dict(machine)
    print(f"## ferry benchmarks ({mode}, {reps} repetition(s) per case; median (min–max))\n")
    print(f"Machine: {m['cpu_model']}, {m['nproc']} CPUs, Linux {m['kernel']}, libzmq {m.get('libzmq', '?')}, "
          f"load average at start {m['loadavg_at_start']} (at the end {os.getloadavg()[0]:.2f}), "
          f"commit {m['commit']}. "
          f"tcp = 127.0.0.1 loopback; tcp and ipc run sender and receiver as separate processes, inproc as "
          f"two threads of one process.")
    if "fsync_p50_us" in m:
        print(f"\nDisk: a 4 KiB write + fdatasync in the temporary folder took {m['fsync_p50_us']} µs "
              f"(median of {m['fsync_count']}; p99 {m['fsync_p99_us']} µs) at the start of the run.")
    for case in cases:
        if case.note:
            print(f"\n- {case.name}: {case.note}")
    for label, why in peers_skipped.items():
        print(f"\n- not measured: {label}: {why}")
    print_tables(lines, cases)
    print_targets(lines)
