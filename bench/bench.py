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
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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
    "durable_produce": Kind(["msgs_per_s", "cpu_ns_per_msg"], {"ratio": "msgs_per_s", "cpu_ratio": "cpu_ns_per_msg"},
                            "Durable produce (messages/s confirmed durable, first send to last confirm; "
                            "higher is better)"),
    "durable_e2e": Kind(["msgs_per_s", "cpu_ns_per_msg", "p50_us", "p99_us", "p999_us", "paced_rate"],
                        {"ratio": "msgs_per_s", "p99_ratio": "p99_us"},
                        "Durable end to end (produce -> store -> handler -> ack: messages/s handled flat out; "
                        "produce-to-handler latency in µs at the paced rate)"),
    "recovery": Kind(["recovery_s", "startup_s", "hwm_mib"], {"ratio": "recovery_s"},
                     "Recovery (seconds from start to ready on a data dir of unsettled messages; lower is better)"),
    "memory": Kind(["hwm_mib", "rss_mib", "restart_s", "restart_hwm_mib"], {"ratio": "hwm_mib"},
                   "Server memory with a backlog (MiB; lower is better)"),
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
# Durable: ferry through ferryd, the raw cppzmq baseline (bench_durable --role raw-server), and the peers
# scripts/bench.sh --peers adds.
FERRY_D = Variant("ferry", "ferry", "")
RAW_D = Variant("raw", "raw", "raw_")
REDIS = Variant("redis (fsync always)", "redis", "redis_", "_redis")
NATS = Variant("nats js (not syncing each write)", "nats", "nats_", "_nats")
NATS_SYNC = Variant("nats js (sync always)", "nats-sync", "nats_sync_", "_nats_sync")


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
    # Durable cases: settings for the runner (producers, ...), the variants --peers adds, and a cap on
    # repetitions for the long ones.
    params: dict = field(default_factory=dict)
    peer_variants: list = field(default_factory=list)
    max_reps: int = 0


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


# --- durable cases: servers and runners --------------------------------------------------------------------

class Skip(Exception):
    """A measurement that cannot run here (not enough disk, say); reported, not counted as a failure."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process (ferryd, the raw server, redis-server, nats-server). Its output is read by threads
    (so a chatty server never blocks on a full pipe); start() waits for the line `ready` accepts."""

    def __init__(self, argv, ready, timeout, name):
        self.name = name
        self.lines = []
        self.started = time.monotonic()
        self.ready_at = None
        self._ready = ready
        self._event = threading.Event()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._readers = [threading.Thread(target=self._read, args=(f,), daemon=True)
                         for f in (self.proc.stdout, self.proc.stderr)]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + timeout
        while not self._event.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise BenchError(f"{name} did not get ready: {' | '.join(self.lines[-3:]).strip()[-400:]}")

    def _read(self, f):
        for line in f:
            self.lines.append(line.rstrip("\n"))
            if self.ready_at is None and self._ready(line):
                self.ready_at = time.monotonic()
                self._event.set()

    def find(self, pattern):
        """The first match of `pattern` in the output so far, or None."""
        for line in list(self.lines):
            m = re.search(pattern, line)
            if m:
                return m
        return None

    def cpu_ns(self):
        """CPU time of every thread so far (schedstat: nanoseconds, unlike /proc/PID/stat's ticks)."""
        total = 0
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
        return total

    def memory_mib(self):
        """(VmHWM, VmRSS) in MiB."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) / 1024
        return out.get("VmHWM", 0.0), out.get("VmRSS", 0.0)

    def stop(self, timeout=60):
        """SIGTERM and wait: a clean shutdown, as an operator does it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise BenchError(f"{self.name} did not stop within {timeout} s of SIGTERM")
        for t in self._readers:
            t.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_ferryd(settings, data_dir, timeout=120):
    srv = Server([os.path.join(settings["apps"], "ferryd", "ferryd"), "--data-dir", data_dir,
                  "--bind", "tcp://127.0.0.1:*", "--log-level", "info"],
                 lambda line: line.rstrip().endswith("] ready"), timeout, "ferryd")
    m = srv.find(r"listening on (tcp://\S+)")
    if not m:
        srv.kill()
        raise BenchError("ferryd did not say where it listens")
    srv.endpoint = m.group(1)
    return srv


def start_raw_server(settings, data_dir, timeout=120):
    srv = Server([os.path.join(settings["bin"], "bench_durable"), "--role=raw-server", f"--data-dir={data_dir}",
                  "--endpoint=tcp://127.0.0.1:*"], lambda line: '"ready":true' in line, timeout, "raw server")
    info = next(json.loads(line) for line in srv.lines if '"ready":true' in line)
    srv.endpoint = info["endpoint"]
    srv.info = info
    return srv


def start_redis(settings, data_dir, timeout=60):
    port = free_port()
    srv = Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
                  "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"],
                 lambda line: "Ready to accept connections" in line, timeout, "redis-server")
    srv.endpoint = f"127.0.0.1:{port}"
    return srv


def nats_config(data_dir, port, synced):
    # sync_interval (nats-server 2.10+): "always" fsyncs every write before the PubAck; the default syncs
    # every 2 minutes, so a PubAck then means "written to the OS", not "on disk".
    sync = "\n  sync_interval: always" if synced else ""
    path = os.path.join(data_dir, "nats.conf")
    with open(path, "w") as f:
        f.write(f'listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: "{data_dir}/js"{sync}\n}}\n')
    return path


def start_nats(settings, data_dir, synced, timeout=60):
    port = free_port()
    srv = Server(["nats-server", "-c", nats_config(data_dir, port, synced)],
                 lambda line: "Server is ready" in line, timeout, "nats-server")
    srv.endpoint = f"127.0.0.1:{port}"
    return srv


def start_server(variant, settings, data_dir):
    if variant.impl == "ferry":
        return start_ferryd(settings, data_dir)
    if variant.impl == "raw":
        return start_raw_server(settings, data_dir)
    if variant.impl == "redis":
        return start_redis(settings, data_dir)
    if variant.impl in ("nats", "nats-sync"):
        return start_nats(settings, data_dir, variant.impl == "nats-sync")
    raise BenchError(f"no server for {variant.impl}")


def durable_client(variant, settings, role, endpoint, count, size, producers, extra=()):
    """argv of the client program for `variant`: bench_durable for ferry and raw, bench_peers for the peers."""
    common = [f"--role={role}", f"--count={count}", f"--size={size}", f"--producers={producers}",
              f"--timeout={settings['durable_timeout']}"] + list(extra)
    if variant.impl in ("ferry", "raw"):
        return [os.path.join(settings["bin"], "bench_durable"), f"--impl={variant.impl}",
                f"--forwarder={endpoint}"] + common
    system = "redis" if variant.impl == "redis" else "nats"
    return [os.path.join(settings["bin"], "bench_peers"), f"--system={system}", f"--server={endpoint}"] + common


class data_dir:
    """A fresh directory under the run's temporary folder (same filesystem as /tmp), removed afterwards."""

    def __init__(self, settings, name):
        self.path = tempfile.mkdtemp(prefix=name + "-", dir=settings["tmpdir"])

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def run_client(argv, settings, what):
    j = result_line(run_one_process(argv, settings["durable_timeout"] + 30), what)
    settings["zmq_version"] = j.get("zmq_version", settings.get("zmq_version"))
    return j


def run_durable_produce(case, variant, transport, size, settings):
    """One produce measurement on a fresh server: confirmed msgs/s, and CPU per message of the producers
    plus the server."""
    count = case.counts[settings["mode"]](size)
    with data_dir(settings, variant.impl) as d:
        srv = start_server(variant, settings, d)
        try:
            cpu0 = srv.cpu_ns()
            j = run_client(durable_client(variant, settings, "produce", srv.endpoint, count, size,
                                          case.params["producers"]), settings, f"{variant.label} producers")
            server_cpu = srv.cpu_ns() - cpu0
        finally:
            srv.stop()
    return {"msgs_per_s": j["msgs_per_s"], "cpu_ns_per_msg": j["client_cpu_ns_per_msg"] + server_cpu / count}


def run_durable_e2e(case, variant, transport, size, settings):
    """Flat out (throughput), then paced at half of ferry's first flat-out rate in this case (latency), each
    on a fresh server. Every variant is paced at that same rate, so the latencies compare at equal load; a
    variant that cannot keep up with it reports no latency (its figures would measure a growing backlog)."""
    count = case.counts[settings["mode"]](size)
    extra = [f"--threads={case.params['threads']}"]
    if variant.impl in ("ferry", "raw"):
        extra.append(f"--prefetch={case.params['prefetch']}")
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
                                        "paced_max_us": paced["max_us"]}}
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


def fsync_probe(settings, count):
    """Median latency of a 4 KiB write + fdatasync in the temporary folder: what one group commit costs."""
    with data_dir(settings, "fsync") as d:
        j = result_line(run_one_process([os.path.join(settings["bin"], "bench_durable"), "--role=fsync-probe",
                                         f"--data-dir={d}", f"--count={count}"], 120), "fsync probe")
    return {"fsync_p50_us": round(j["p50_us"], 1), "fsync_p99_us": round(j["p99_us"], 1), "fsync_count": count}


def peer_availability(settings):
    """Which peer variants can run here, and why the others cannot."""
    missing = {}
    if not os.path.exists(os.path.join(settings["bin"], "bench_peers")):
        reason = "bench_peers was not built (libhiredis-dev and libnats-dev are needed)"
        return {"redis": reason, "nats": reason, "nats-sync": reason}
    if not shutil.which("redis-server"):
        missing["redis"] = "redis-server is not installed"
    if not shutil.which("nats-server"):
        missing["nats"] = missing["nats-sync"] = "nats-server is not installed"
        return missing
    # sync_interval came with nats-server 2.10; older servers refuse the option at start-up.
    with data_dir(settings, "nats-check") as d:
        try:
            srv = start_nats(settings, d, True, timeout=10)
            srv.stop()
        except BenchError as e:
            version = subprocess.run(["nats-server", "--version"], capture_output=True, text=True).stdout.strip()
            missing["nats-sync"] = (f"{version or 'this nats-server'} does not accept jetstream sync_interval "
                                    f"(added in 2.10): {str(e)[-120:]}")
    return missing


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
    Case("recovery", "recovery", ["tcp"], [256], [FERRY_D, RAW_D], run_recovery,
         {"quick": lambda size: 50_000, "full": lambda size: 1_000_000},
         "fill with unsettled messages, SIGTERM, time a new server from spawn to ready (warm page cache)",
         max_reps=3),
    Case("memory", "memory", ["tcp"], [256], [FERRY_D, RAW_D], run_memory,
         {"quick": lambda size: 200_000, "full": lambda size: 10_000_000},
         "server VmHWM / VmRSS after 4 producers (window 10,000 each, ferry's default) filled a backlog nobody "
         "consumes; then a restart on it", max_reps=1),
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
        baselines = variants[1:]
        ratio_names = list(kind.ratios)
        if kind_name == "throughput":
            # The CPU figures are medians only: they vary less than the rates.
            head = [v.label for v in variants] + [f"CPU ns/msg {v.label}" for v in variants]

            def cells_for(l):
                return [with_range(l, v.prefix + "msgs_per_s", fmt_rate) for v in variants] + \
                       [f"{l[v.prefix + 'cpu_ns_per_msg']:.0f}" if v.prefix + "cpu_ns_per_msg" in l else "–"
                        for v in variants]
        elif kind_name == "durable_produce":
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
            if "skipped" in l:
                cells[-1] += f" skipped: {l['skipped']}"
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
        quick = " (quick counts, not the target's size)" if l.get("mode") == "quick" else ""
        if l["case"] == "durable-produce-8" and "msgs_per_s" in l:
            checks.append(f"durable produce, 8 producers: {l['msgs_per_s']:.0f} confirmed msgs/s "
                          f"({'met' if l['msgs_per_s'] >= 500_000 else 'MISSED'}, target >= 500,000){quick}")
        if l["case"] == "durable-e2e" and "msgs_per_s" in l and "p99_us" in l:
            checks.append(f"durable end to end: {l['msgs_per_s']:.0f} msgs/s "
                          f"({'met' if l['msgs_per_s'] >= 250_000 else 'MISSED'}, target >= 250,000); "
                          f"p99 {l['p99_us'] / 1000:.2f} ms at {l['paced_rate']:.0f} msgs/s "
                          f"({'met' if l['p99_us'] < 5000 and l['paced_rate'] >= 125_000 else 'MISSED'}, "
                          f"target < 5 ms at >= 125,000 msgs/s){quick}")
        if l["case"] == "recovery" and "recovery_s" in l:
            checks.append(f"recovery of {l.get('info', {}).get('ferry', {}).get('records', '?')} unsettled: "
                          f"{l['recovery_s']:.3f} s ({'met' if l['recovery_s'] < 1 else 'MISSED'}, target < 1 s)"
                          f"{quick}")
        if l["case"] == "memory" and "hwm_mib" in l:
            checks.append(f"memory with a backlog: peak {l['hwm_mib']:.1f} MiB, after a restart on it "
                          f"{l.get('restart_hwm_mib', 0):.1f} MiB "
                          f"({'met' if max(l['hwm_mib'], l.get('restart_hwm_mib', 0)) < 256 else 'MISSED'}, "
                          f"target < 256 MiB at 10,000,000){quick}")
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
    cases = [c for c in CASES if only is None or c.name in only]
    if not cases:
        sys.exit(f"no case named {args.only}; cases: {', '.join(c.name for c in CASES)}")

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
        durable = [c for c in cases if c.run in (run_durable_produce, run_durable_e2e, run_recovery, run_memory)]
        if durable:
            # What one group commit costs on this disk, measured now: durable figures depend on it.
            machine.update(fsync_probe(settings, 200 if args.quick else 1000))
            print(f"  fdatasync of 4 KiB in {tmpdir}: p50 {machine['fsync_p50_us']} µs, "
                  f"p99 {machine['fsync_p99_us']} µs", file=sys.stderr)
        if args.peers and durable:
            missing = peer_availability(settings)
            for c in durable:
                for v in c.peer_variants:
                    if v.impl in missing:
                        peers_skipped[v.label] = missing[v.impl]
                    else:
                        c.variants = c.variants + [v]
            for label, why in peers_skipped.items():
                print(f"  not measured: {label}: {why}", file=sys.stderr)
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
                    reps_out = []
                    for rep in range(case_reps):
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
                            except Skip as e:
                                out["skipped"] = str(e)
                                break
                        reps_out.append(out)
                        metric = KINDS[case.kind].metrics[0]
                        shown = ", ".join(f"{v.label} {out[v.label][metric]:.4g}" for v in case.variants
                                          if v.label in out)
                        print(f"  {case.name} {transport} {size} B rep {rep + 1}/{case_reps}: {metric} {shown}"
                              + (f"  ERROR {out['error']}" if "error" in out else "")
                              + (f"  SKIPPED {out['skipped']}" if "skipped" in out else ""), file=sys.stderr)
                        if "skipped" in out:
                            break
                    line = aggregate(case, transport, size, reps_out, settings, machine)
                    if peers_skipped and case.peer_variants:
                        line["peers_not_measured"] = peers_skipped
                    lines.append(line)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        for l in lines:
            f.write(json.dumps(l) + "\n")

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
    failed = [l for l in lines if "error" in l]
    print(f"\n{len(lines)} cases in {time.monotonic() - started:.0f} s; results in "
          f"{os.path.relpath(args.output, ROOT)}" + (f"; {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
