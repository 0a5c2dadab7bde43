"""One measurement of each kind of case. A runner takes (case, variant, transport, size, settings) and returns
the kind's metrics as a dict (and optionally "info"); it raises BenchError on failure and Skip when the
measurement cannot run here."""

import os
import shutil
import threading
import time

from .model import BenchError, Skip
from .processes import (data_dir, durable_client, endpoint_for, result_line, run_client, run_one_process,
                        run_two_processes, start_server)


def run_roles(exe, transport, common, settings, server_role, client_role, endpoints):
    """Runs a two-sided bench program: inproc as one process (--role=both), returning (its output, None);
    otherwise a server process, which binds the endpoints and prints where, and a client process told
    them, returning (server output, client output). `endpoints`: result key -> (flag, endpoint name)."""
    if transport == "inproc":
        return run_one_process([exe, "--role=both", "--transport=inproc"] + common, settings["timeout"] + 10), None
    server = ([exe, f"--role={server_role}"] +
              [f"{flag}={endpoint_for(transport, settings, name)}" for flag, name in endpoints.values()] + common)
    client = [exe, f"--role={client_role}"] + common
    return run_two_processes(server, client, {key: flag for key, (flag, _) in endpoints.items()},
                             settings["timeout"] + 10)


def run_thr(case, variant, transport, size, settings):
    """One bench_thr run: messages/s received and CPU per message of both sides; `info` has the ZeroMQ
    frames per message the receiver saw. params: pattern (default: the case's name), batch (ferry only:
    the raw baselines always send one message per frame)."""
    exe = os.path.join(settings["bin"], "bench_thr")
    count = case.counts[settings["mode"]](size)
    batch = case.params.get("batch", 1) if variant.impl == "ferry" else 1
    common = [f"--pattern={case.params.get('pattern', case.name)}", f"--impl={variant.impl}", f"--size={size}",
              f"--count={count}", f"--batch={batch}", f"--timeout={settings['timeout']}"]
    server_out, client_out = run_roles(exe, transport, common, settings, "recv", "send",
                                       {"endpoint": ("--endpoint", "thr-data"), "control": ("--control", "thr-ctl")})
    if client_out is None:
        j = result_line(server_out, "bench_thr")
    else:
        sender = result_line(client_out, "bench_thr sender")
        j = result_line(server_out, "bench_thr receiver")
        # CPU of both processes; with --role both the receiver's figure already covers the whole process.
        j["cpu_ns_per_msg"] += sender["cpu_ns_per_msg"]
    settings["zmq_version"] = j.get("zmq_version", settings.get("zmq_version"))
    return {"msgs_per_s": j["msgs_per_s"], "cpu_ns_per_msg": j["cpu_ns_per_msg"],
            "info": {"frames_per_msg": round(j.get("frames_per_msg", 0), 4), "batch": batch}}


def run_lat(case, variant, transport, size, settings):
    """One bench_lat run: one-way latency percentiles (half the round trip) after a warm-up."""
    exe = os.path.join(settings["bin"], "bench_lat")
    count = case.counts[settings["mode"]](size)
    common = [f"--impl={variant.impl}", f"--size={size}", f"--count={count}",
              f"--warmup={max(count // 10, 100)}", f"--timeout={settings['timeout']}"]
    server_out, client_out = run_roles(exe, transport, common, settings, "echo", "ping",
                                       {"endpoint": ("--endpoint", "lat-ping"),
                                        "reply_endpoint": ("--reply-endpoint", "lat-pong")})
    if client_out is None:
        j = result_line(server_out, "bench_lat")
    else:
        j = result_line(client_out, "bench_lat pinger")
        result_line(server_out, "bench_lat echo")
    settings["zmq_version"] = j.get("zmq_version", settings.get("zmq_version"))
    return {m: j[m] for m in ("p50_us", "p99_us", "p999_us")}


# --- durable cases ---------------------------------------------------------------------------------------

def run_durable_produce(case, variant, transport, size, settings):
    """One produce measurement on a fresh server: confirmed msgs/s, and CPU per message of the producers
    plus the server."""
    count = case.counts[settings["mode"]](size)
    # A topic case's subject may first create idle subscriptions (its "none_" variant does not).
    idle = case.params.get("idle_subscriptions", 0) if variant.impl == "ferry-topic" and variant.prefix == "" else 0
    extra = [f"--idle-subscriptions={idle}"] if idle else []
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d)
        try:
            rss0 = srv.memory_mib()[1]
            cpu0 = srv.cpu_ns()
            j = run_client(durable_client(variant, settings, "produce", srv.endpoint, count, size,
                                          case.params["producers"], extra), settings, f"{variant.label} producers")
            server_cpu = srv.cpu_ns() - cpu0
            rss1 = srv.memory_mib()[1]
        finally:
            srv.stop()
    return {"msgs_per_s": j["msgs_per_s"], "cpu_ns_per_msg": j["client_cpu_ns_per_msg"] + server_cpu / count,
            "info": {"server_rss_start_mib": round(rss0, 1), "server_rss_end_mib": round(rss1, 1),
                     "server_rss_growth_mib": round(rss1 - rss0, 1), "idle_subscriptions": idle,
                     **scrape_info(srv)}}


def scrape_info(srv):
    """How often a ferryd with --metrics was scraped during the run (nothing for other servers)."""
    if not hasattr(srv, "scrapes"):
        return {}
    return {"metrics_scrapes": srv.scrapes, "metrics_scrape_errors": srv.scrape_errors}


def run_replay(case, variant, transport, size, settings):
    """Stores `count` messages nobody reads (4 producer processes), then times one reader taking them all
    back on the same server: a new subscription of the topic from its first message, a consumer of the queue,
    or the raw server's consumer."""
    count = case.counts[settings["mode"]](size)
    extra = [f"--threads={case.params['threads']}", f"--prefetch={case.params['prefetch']}"]
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d, raw_extra=["--backlog"])
        try:
            j = run_client(durable_client(variant, settings, "replay", srv.endpoint, count, size, 4, extra),
                           settings, f"{variant.label} replay")
        finally:
            srv.stop()
    return {"msgs_per_s": j["msgs_per_s"], "cpu_ns_per_msg": j["client_cpu_ns_per_msg"],
            "info": {"fill_msgs_per_s": round(j["produce_msgs_per_s"])}}


def run_delayed(case, variant, transport, size, settings):
    """Messages scheduled (ferry-not-before) to fall due at the case's rate once all are stored, on a fresh
    ferryd, a consumer connected from the start: lateness percentiles. There is no raw-ZeroMQ baseline for
    this: raw ZeroMQ has no scheduled delivery; the target is absolute."""
    count = case.counts[settings["mode"]](size)
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d)
        try:
            j = run_client(durable_client(variant, settings, "delayed", srv.endpoint, count, size, 1,
                                          [f"--rate={case.params['rate']}", "--threads=2", "--prefetch=1024"]),
                           settings, f"{variant.label} delayed")
            rss = srv.memory_mib()
        finally:
            srv.stop()
    return {"p50_us": j["p50_us"], "p99_us": j["p99_us"], "p999_us": j["p999_us"],
            "info": {"max_us": j["max_us"], "early": j["early"], "due_rate": j["due_rate"],
                     "stored_before_first_due": j["stored_before_first_due"],
                     "server_hwm_mib": round(rss[0], 1)}}


def run_durable_e2e(case, variant, transport, size, settings):
    """Flat out (throughput), then paced at half of ferry's first flat-out rate in this case (latency), each
    on a fresh server. Every variant is paced at that same rate, so the latencies compare at equal load; a
    variant that cannot keep up with it reports no latency (its figures would measure a growing backlog)."""
    count = case.counts[settings["mode"]](size)
    extra = [f"--threads={case.params['threads']}"]
    if variant.impl in ("ferry", "ferry-metrics", "ferry-topic", "raw"):
        extra.append(f"--prefetch={case.params['prefetch']}")
    if variant.impl == "ferry-topic":
        extra.append(f"--subscriptions={case.params.get('subscriptions', 1)}")
    producers = case.params["producers"]
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d)
        try:
            cpu0 = srv.cpu_ns()
            flat = run_client(durable_client(variant, settings, "e2e", srv.endpoint, count, size, producers, extra),
                              settings, f"{variant.label} end to end")
            server_cpu = srv.cpu_ns() - cpu0
        finally:
            srv.stop()
    flat_scrapes = scrape_info(srv)
    # The case's first flat-out run (ferry's: repetition 1 starts with the first variant) sets the paced
    # rate for every variant and repetition.
    rates = settings.setdefault("paced_rate", {})
    if case.name not in rates:
        rates[case.name] = round(flat["msgs_per_s"] / 2)
    rate = rates[case.name]
    with data_dir(settings, variant.impl) as d:  # a fresh server and data dir for the paced run
        srv = start_server(variant, settings, d)
        try:
            paced = run_client(durable_client(variant, settings, "e2e", srv.endpoint, count, size, producers,
                                              extra + [f"--rate={rate}"]), settings, f"{variant.label} paced")
        finally:
            srv.stop()
    out = {"msgs_per_s": flat["msgs_per_s"], "cpu_ns_per_msg": flat["client_cpu_ns_per_msg"] + server_cpu / count,
           "paced_rate": rate, "info": {"paced_achieved_msgs_per_s": round(paced["msgs_per_s"]),
                                        "paced_max_us": paced["max_us"],
                                        "publish_msgs_per_s": round(flat["produce_msgs_per_s"]),
                                        "per_subscription_vs_publish": round(
                                            flat["msgs_per_s"] / flat["produce_msgs_per_s"], 3)
                                        if flat["produce_msgs_per_s"] else 0, **flat_scrapes}}
    if paced["msgs_per_s"] >= 0.95 * rate:
        out.update({m: paced[m] for m in ("p50_us", "p99_us", "p999_us")})
    else:
        # It could not keep up: its latencies measure a growing backlog, not latency at this load.
        out["info"]["saturated_at_paced_rate"] = True
    return out


def fill(variant, settings, srv, count, size, window=10_000):
    """Stores `count` unsettled messages through `srv` (4 producer processes, nobody consuming)."""
    j = run_client(durable_client(variant, settings, "produce", srv.endpoint, count, size, 4,
                                  [f"--window={window}"]), settings, f"{variant.label} fill")
    return j["msgs_per_s"]


def restart(variant, settings, d):
    """Starts the server again on `d` and returns it with the seconds from spawn to its ready line."""
    srv = start_server(variant, settings, d)
    return srv, srv.ready_at - srv.started


def ferryd_recovery(srv):
    """What ferryd logged about its start: its own start-up time and the queue's recovery line."""
    started = srv.find(r"ferryd started in ([0-9.]+) s")
    queue = srv.find(r"queue bench: recovered (\d+) record\(s\) in (\d+) segment\(s\) \((\d+) bytes\) in "
                     r"([0-9.]+) s: (\d+) unsettled")
    out = {"startup_s": float(started.group(1)) if started else 0.0}
    if queue:
        out["info"] = {"records": int(queue.group(1)), "segments": int(queue.group(2)),
                       "bytes": int(queue.group(3)), "queue_recovery_s": float(queue.group(4)),
                       "unsettled": int(queue.group(5)), "log": queue.group(0)}
    return out


def run_recovery(case, variant, transport, size, settings):
    """Fills a data dir with unsettled messages through a real server, stops it with SIGTERM, and times a
    new server's start on that dir, from spawn to its ready line (the page cache still holds the files)."""
    count = case.counts[settings["mode"]](size)
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d)
        try:
            fill_rate = fill(variant, settings, srv, count, size)
        finally:
            srv.stop()
        srv, wall = restart(variant, settings, d)
        try:
            hwm, _ = srv.memory_mib()
            if variant.impl == "ferry":
                out = ferryd_recovery(srv)
                unsettled = out.get("info", {}).get("unsettled", -1)
            else:
                out = {"startup_s": srv.info["recovery_s"], "info": {"records": srv.info["recovered"]}}
                unsettled = srv.info["unsettled"]
        finally:
            srv.stop()
    if unsettled != count:
        raise BenchError(f"{variant.label} recovered {unsettled} unsettled messages, expected {count}")
    out.update({"recovery_s": wall, "hwm_mib": hwm})
    out.setdefault("info", {})["fill_msgs_per_s"] = round(fill_rate)
    return out


def run_memory(case, variant, transport, size, settings):
    """Fills a backlog nobody consumes and reports the server's peak and current resident memory (VmHWM,
    VmRSS from /proc/PID/status) at the end, sampling VmRSS while it fills; then restarts the server on
    that backlog and reports the recovery time and the new process's peak."""
    count = case.counts[settings["mode"]](size)
    need = 10 * 2**30 if count >= 5_000_000 else count * 1000
    free = shutil.disk_usage(settings["tmpdir"]).free
    if free < need:
        raise Skip(f"needs {need / 2**30:.1f} GiB free in {settings['tmpdir']}, has {free / 2**30:.1f} GiB")
    samples = []
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d)
        stop = threading.Event()

        def sample():
            t0 = time.monotonic()
            while not stop.wait(0.5):
                try:
                    samples.append((round(time.monotonic() - t0, 1), round(srv.memory_mib()[1], 1)))
                except OSError:
                    return
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            # ferry::producer's default window: what the server holds in flight then is 4 x 10,000
            # messages, so the figure shows the backlog's cost rather than the producers' windows.
            fill_rate = fill(variant, settings, srv, count, size, window=10_000)
            stop.set()
            sampler.join()
            hwm, rss = srv.memory_mib()
        finally:
            stop.set()
            srv.stop()
        disk = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs)
        srv, wall = restart(variant, settings, d)
        try:
            restart_hwm, _ = srv.memory_mib()
        finally:
            srv.stop()
    step = max(1, len(samples) // 10)
    return {"hwm_mib": hwm, "rss_mib": rss, "restart_s": wall, "restart_hwm_mib": restart_hwm,
            "info": {"disk_bytes": disk, "fill_msgs_per_s": round(fill_rate), "rss_samples_s_mib": samples[::step]}}
