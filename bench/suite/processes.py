"""Running the benchmark programs (bench_thr, bench_lat, bench_durable, bench_peers) and the servers the
durable cases measure (ferryd, the raw server, redis-server, nats-server)."""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

from .model import BenchError


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

    def start_scraper(self, url, interval_s):
        """GETs `url` at once and every `interval_s` on a thread of its own until stop(), as a Prometheus
        server does."""
        self.scrapes = 0
        self.scrape_errors = 0
        self._scraping = threading.Event()

        def scrape():
            while True:  # at once, then every interval_s
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        body = r.read()
                        if r.status == 200 and b"ferry_build_info" in body:
                            self.scrapes += 1
                        else:
                            self.scrape_errors += 1
                except OSError:
                    self.scrape_errors += 1
                if self._scraping.wait(interval_s):
                    return

        self._scraper = threading.Thread(target=scrape, daemon=True)
        self._scraper.start()

    def stop_scraper(self):
        if getattr(self, "_scraper", None) is not None:
            self._scraping.set()
            self._scraper.join(10)
            self._scraper = None

    def stop(self, timeout=60):
        """SIGTERM and wait: a clean shutdown, as an operator does it."""
        self.stop_scraper()
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


def start_ferryd(settings, data_dir, timeout=120, metrics=False):
    """ferryd on a free port; with `metrics`, also --metrics on a free port and a thread scraping /metrics
    every second until stop() (srv.scrapes counts the answers, srv.scrape_errors the failures)."""
    argv = [os.path.join(settings["apps"], "ferryd", "ferryd"), "--data-dir", data_dir,
            "--bind", "tcp://127.0.0.1:*", "--log-level", "info"]
    if metrics:
        argv += ["--metrics", "127.0.0.1:0"]
    srv = Server(argv, lambda line: line.rstrip().endswith("] ready"), timeout, "ferryd")
    m = srv.find(r"listening on (tcp://\S+)")
    if not m:
        srv.kill()
        raise BenchError("ferryd did not say where it listens")
    srv.endpoint = m.group(1)
    if metrics:
        m = srv.find(r"metrics on (http://\S+/metrics)")
        if not m:
            srv.kill()
            raise BenchError("ferryd did not say where it serves metrics")
        srv.start_scraper(m.group(1), 1.0)
    return srv


def start_raw_server(settings, data_dir, timeout=120, extra=()):
    srv = Server([os.path.join(settings["bin"], "bench_durable"), "--role=raw-server", f"--data-dir={data_dir}",
                  "--endpoint=tcp://127.0.0.1:*"] + list(extra), lambda line: '"ready":true' in line, timeout,
                 "raw server")
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


def start_server(variant, settings, data_dir, raw_extra=()):
    if variant.impl in ("ferry", "ferry-topic", "ferry-metrics"):
        return start_ferryd(settings, data_dir, metrics=variant.impl == "ferry-metrics")
    if variant.impl == "raw":
        return start_raw_server(settings, data_dir, extra=raw_extra)
    if variant.impl == "redis":
        return start_redis(settings, data_dir)
    if variant.impl in ("nats", "nats-sync"):
        return start_nats(settings, data_dir, variant.impl == "nats-sync")
    raise BenchError(f"no server for {variant.impl}")


def durable_client(variant, settings, role, endpoint, count, size, producers, extra=()):
    """argv of the client program for `variant`: bench_durable for ferry and raw, bench_peers for the peers."""
    common = [f"--role={role}", f"--count={count}", f"--size={size}", f"--producers={producers}",
              f"--timeout={settings['durable_timeout']}"] + list(extra)
    if variant.impl == "ferry-topic":
        return [os.path.join(settings["bin"], "bench_durable"), "--impl=ferry", "--topic",
                f"--forwarder={endpoint}"] + common
    if variant.impl in ("ferry", "ferry-metrics", "raw"):
        return [os.path.join(settings["bin"], "bench_durable"), "--impl=" + variant.impl.replace("-metrics", ""),
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
