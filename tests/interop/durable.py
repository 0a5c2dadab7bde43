"""Scenarios for tests/interop_ferryd_test.cpp: ferryd_py's durable producer and consumer against a real ferryd.

usage: durable.py [--protocol 1|2] SCENARIO ENDPOINT QUEUE [ARGS...]

--protocol is the highest forwarder protocol version the client speaks (default 2). Producers print
`protocol N` (the version WELCOME agreed on) and `sends v1 N v2 M` (SENDs by form) before they exit;
consumers print `delivers v1 N v2 M` (DELIVERs by form).

  produce                  sends a fixed set of messages (several SENDs), sends some again with the same ids,
                           prints `msg ...` per message (ferry_py.describe), `confirmed N`, `reconfirmed N`
  resend COUNT             prints `ready`, waits for a `go` line on stdin, sends COUNT messages with a 200 ms
                           confirm timeout, prints `resent N` once it has sent copies, waits for `continue`,
                           then flushes and prints `confirmed N` and `resent N`
  consume COUNT            prints `ready` once subscribed, takes COUNT messages (printing `msg ...` lines),
                           acknowledges them in groups, then waits for STATS to show them all acknowledged
  nack-reject              takes 3 messages: NACKs the one whose payload is `bad`, REJECTs its redelivery,
                           ACKs the rest; checks the dead letter with DLQ list, replays it, ACKs it again
  silent                   holds a delivery without answering until a `wake` line on stdin (so ferryd declares
                           it dead), then answers it, and once idle goes silent again until the next `wake`
  fallback PROTOCOL_MD     ENDPOINT and QUEUE unused: against a fake ferryd of protocol v1 (a ROUTER in this
                           process), a v2 producer and consumer fall back to v1 (HELLO v1, frame pairs only)
                           and lose nothing, and the page's hello() returns 1; prints `fallback ok`
  stats KEY=VALUE...       polls STATS until the queue's fields have these values; prints `stat KEY VALUE`
  snippet PROTOCOL_MD      runs the ```python forwarder-v2 block of docs/protocol.md as it stands: hello(),
                           send_frames() for the produce set, CONSUME, deliveries() and ACK; checks every
                           message came back intact once; prints `protocol N`, `delivers v1 N v2 M`,
                           `snippet N ok`

Every wait is bounded; on failure a scenario prints what it saw and exits with 3."""

import re
import sys
import threading
import time

import msgpack
import zmq

import ferry_py as f
import ferryd_py as fd

WAIT_MS = 20_000
PROTOCOL = fd.FORWARDER_PROTOCOL_VERSION  # --protocol


def fail(what):
    print(f"FAILED: {what}", flush=True)
    sys.exit(3)


def describe_delivery(d):
    print(f.describe(d.message), flush=True)


def queue_stats(conn, queue):
    return conn.stats()["queues"].get(queue, {})


def wait_stats(conn, queue, want, timeout_ms=WAIT_MS):
    """Polls STATS until every (key, value) of `want` matches; returns the last per-queue map."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        got = queue_stats(conn, queue)
        if all(got.get(k) == v for k, v in want.items()):
            return got
        if time.monotonic() >= deadline:
            fail(f"STATS of {queue} is {got}, wanted {want}")
        conn.poll(20)  # keeps heartbeats going while we wait


def print_stats(stats):
    for k in sorted(stats):
        print(f"stat {k} {stats[k]}", flush=True)


def print_forms(what, counts):
    print(f"{what} v1 {counts[fd.FORWARDER_PROTOCOL_V1]} v2 {counts[fd.FORWARDER_PROTOCOL_V2]}", flush=True)


def producer(endpoint, **options):
    """A DurableProducer that has said HELLO; prints the agreed version."""
    p = fd.DurableProducer(endpoint, protocol=PROTOCOL, **options)
    welcome = p.hello()
    if welcome["version"] != PROTOCOL or p.version != PROTOCOL or welcome["max_batch"] != fd.MAX_BATCH:
        fail(f"WELCOME {welcome} to HELLO v{PROTOCOL}")
    print(f"protocol {p.version}", flush=True)
    return p


def consumer(endpoint, queue, **options):
    return fd.DurableConsumer(endpoint, queue, protocol=PROTOCOL, **options)


def messages(queue):
    yield f.Message(queue, b"hello")
    yield f.Message(queue, b'{"total":42}', key="customer-17",
                    headers={"trace-id": "4bf92f3577b34da6", "content-type": "application/json"})
    yield f.Message(queue, bytes(range(256)), key="cl\u00e9-\u00fc", attempt=3)  # ferryd ignores the attempt
    yield f.Message(queue, b"", headers={"empty": ""})
    yield f.Message(queue, b"x" * 100_000, key="k" * 200, headers={f"h{i:02}": f"v{i}" for i in range(20)})
    yield f.Message(queue, b"negative timestamp", timestamp_us=-1234)
    yield f.Message(queue, b"stream fields", origin=(1 << 64) - 1, sequence=1 << 40)
    for i in range(60):
        yield f.Message(queue, f"bulk-{i}".encode(), key=f"key-{i % 3}")


def produce(endpoint, queue):
    p = producer(endpoint, max_batch=7)  # several SENDs, and a partial last one
    sent = list(messages(queue))
    p.send(queue, sent)
    if not p.flush(WAIT_MS) or p.refused:
        fail(f"unconfirmed {len(p.unconfirmed)}, refused {p.refused}")
    for m in sent:
        print(f.describe(m), flush=True)
    print(f"confirmed {len(p.confirmed)}", flush=True)
    # What a producer does when it has no answer: the same messages again, same ids. Each is confirmed again
    # and stored once.
    again = sent[:5]
    p.confirmed.clear()
    p.send(queue, again)
    if not p.flush(WAIT_MS) or sorted(p.confirmed) != sorted(m.id for m in again):
        fail(f"resent copies: confirmed {len(p.confirmed)} of {len(again)}")
    print(f"reconfirmed {len(p.confirmed)}", flush=True)
    print_forms("sends", p.sends)
    print_stats(wait_stats(p, queue, {"confirmed": len(sent), "deduplicated": len(again), "depth": len(sent)}))


def resend(endpoint, queue, count):
    p = producer(endpoint, confirm_timeout_ms=200)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        fail("expected go")
    sent = [f.Message(queue, f"resend-{i}".encode()) for i in range(count)]
    p.send(queue, sent)
    # ferryd is stopped (SIGSTOP): nothing is confirmed, and overdue messages are sent again.
    deadline = time.monotonic() + WAIT_MS / 1000
    while p.resent < count:
        if time.monotonic() >= deadline:
            fail(f"resent only {p.resent}")
        p.flush(50)
    print(f"resent {p.resent}", flush=True)
    if sys.stdin.readline().strip() != "continue":
        fail("expected continue")
    if not p.flush(WAIT_MS) or p.refused:
        fail(f"unconfirmed {len(p.unconfirmed)}, refused {p.refused}")
    print(f"confirmed {len(set(p.confirmed))}", flush=True)
    print(f"total_resent {p.resent}", flush=True)
    for m in sent:
        print(f.describe(m), flush=True)
    print_forms("sends", p.sends)
    print_stats(wait_stats(p, queue, {"confirmed": count, "deduplicated": p.resent, "depth": count}))


def consume(endpoint, queue, count):
    c = consumer(endpoint, queue, prefetch=16)
    options = c.start()
    if options["prefetch"] != 16:
        fail(f"CONSUMING {options}")
    print("ready", flush=True)
    pending = []
    received = 0
    deadline = time.monotonic() + WAIT_MS / 1000
    while received < count:
        if time.monotonic() >= deadline:
            fail(f"received {received} of {count}")
        d = c.receive(50)
        if d is None:
            # Never wait for more with answers held back: the next message of a key waits for this answer.
            c.ack(*pending)
            pending.clear()
            continue
        describe_delivery(d)
        received += 1
        pending.append(d)
        if len(pending) == 5:  # several tokens in one ACK
            c.ack(*pending)
            pending.clear()
    c.ack(*pending)
    if c.malformed:
        fail(f"{c.malformed} malformed deliveries")
    print_forms("delivers", c.delivers)
    print_stats(wait_stats(c, queue, {"depth": 0, "acked": count, "in_flight": 0}))
    c.cancel()


def nack_reject(endpoint, queue):
    c = consumer(endpoint, queue, prefetch=4)
    c.start()
    print("ready", flush=True)
    acked = 0
    bad_id = None
    while acked < 2 or bad_id is None:
        d = c.receive(WAIT_MS)
        if d is None:
            fail("no delivery")
        m = d.message
        print(f"delivery {m.id.hex()} attempt {m.attempt} payload {m.payload.decode()}", flush=True)
        if m.payload != b"bad":
            c.ack(d)
            acked += 1
        elif m.attempt == 1:
            c.nack(d, "temporary failure")
        else:
            c.reject(d, "permanent failure")
            bad_id = m.id
    listing = wait_dlq(c, queue, 1)
    for entry in listing["messages"]:
        h = entry["headers"]
        print(f"dlq queue {listing['queue']} id {entry['id'].hex()} payload {entry['payload'].decode()} "
              f"attempts {h.get('ferry-attempts')} source {h.get('ferry-source-queue')}", flush=True)
        print(f"dlq reason {h.get('ferry-dead-letter-reason')}", flush=True)
    print_stats(wait_stats(c, queue, {"depth": 0, "acked": 2, "nacked": 1, "redelivered": 1, "dead_lettered": 1}))
    # Replay: back in the queue without the ferry-* headers, delivered from attempt 1 again.
    print(f"replayed {c.dlq_replay(queue)}", flush=True)
    d = c.receive(WAIT_MS)
    if d is None or d.message.id != bad_id:
        fail(f"replayed message not delivered: {d}")
    print(f"replay attempt {d.message.attempt} headers {len(d.message.headers)}", flush=True)
    c.ack(d)
    wait_dlq(c, queue, 0)
    wait_stats(c, queue, {"depth": 0, "acked": 3})
    print("done", flush=True)


def wait_dlq(conn, queue, depth):
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        listing = conn.dlq_list(queue)
        if listing["depth"] == depth and len(listing["messages"]) == depth:
            return listing
        if time.monotonic() >= deadline:
            fail(f"DLQ list {listing}")
        conn.poll(20)


def silent(endpoint, queue):
    c = consumer(endpoint, queue, prefetch=1)
    c.start()
    print("ready", flush=True)
    d = c.receive(WAIT_MS)
    if d is None:
        fail("no delivery")
    print(f"held {d.message.id.hex()} attempt {d.message.attempt}", flush=True)
    # Silent: no PING, no answer, until the test says so. ferryd declares this consumer dead meanwhile.
    if sys.stdin.readline().strip() != "wake":
        fail("expected wake")
    c.ack(d)  # a token of a dropped subscription: ERROR not_consuming, and we subscribe again
    if not c.wait_for(lambda: c.resubscribed >= 1 and c.subscriptions >= 2, WAIT_MS):
        fail(f"no resubscription; errors {c.errors}")
    print(f"errors {' '.join(code for code, _ in c.errors)}", flush=True)
    print("idle", flush=True)
    # Silent again, holding nothing: only the heartbeat's empty ACK reveals that ferryd dropped us.
    if sys.stdin.readline().strip() != "wake":
        fail("expected wake")
    d = c.receive(WAIT_MS)
    if d is None:
        fail(f"nothing delivered after waking; resubscribed {c.resubscribed}, errors {c.errors}")
    c.ack(d)
    print(f"got {d.message.id.hex()} attempt {d.message.attempt} resubscribed {c.resubscribed}", flush=True)
    wait_stats(c, queue, {"depth": 0})
    c.cancel()
    print("done", flush=True)


def page_snippet(protocol_md):
    """The functions of the page's ```python forwarder-v2 block, run as it stands."""
    text = open(protocol_md, encoding="utf-8").read()
    code = re.search(r"^```python forwarder-v2\n(.*?)^```", text, re.S | re.M)
    if not code:
        fail("no ```python forwarder-v2 block in the page")
    ns = {}
    exec(compile(code.group(1), "protocol.md: python forwarder-v2", "exec"), ns)
    return ns


def snippet(endpoint, queue, protocol_md):
    ns = page_snippet(protocol_md)
    ctx = zmq.Context.instance()
    producer_socket, consumer_socket = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for s in (producer_socket, consumer_socket):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, WAIT_MS)
        s.connect(endpoint)
    version = ns["hello"](producer_socket, PROTOCOL)
    print(f"protocol {version}", flush=True)
    sent = {m.id: m for m in messages(queue)}
    entries = [(f.encode_envelope(m), m.payload) for m in sent.values()]
    for start in range(0, len(entries), 25):
        producer_socket.send_multipart(ns["send_frames"](queue.encode(), entries[start:start + 25], version))
    unconfirmed = set(sent)
    while unconfirmed:
        verb, *rest = producer_socket.recv_multipart()
        if verb != b"CONFIRM":
            fail(f"{verb} {rest} to a SEND")
        unconfirmed -= {rest[0][i:i + 16] for i in range(0, len(rest[0]), 16)}
    options = {"prefetch": 16} if PROTOCOL < 2 else {"prefetch": 16, "version": PROTOCOL}
    consumer_socket.send_multipart([b"CONSUME", queue.encode(), msgpack.packb(options)])
    forms = {1: 0, 2: 0}
    got = {}
    while len(got) < len(sent):
        verb, *rest = consumer_socket.recv_multipart()
        if verb != b"DELIVER":
            continue
        forms[2 if len(rest) == 3 else 1] += 1
        tokens = []
        for token, envelope, payload in ns["deliveries"](rest):
            m = f.Message(queue, payload, **f.decode_envelope(envelope))
            if m.id in got:
                fail(f"delivered twice: {m}")
            got[m.id] = m
            tokens.append(token)
        consumer_socket.send_multipart([b"ACK", rest[0], b"".join(tokens)])
    for id_, m in sent.items():
        m.attempt = 1  # ferryd stores attempt 0 and delivers the first attempt as 1
        if vars(got[id_]) != vars(m):
            fail(f"sent {m}, delivered {got[id_]}")
    print_forms("delivers", forms)
    print(f"snippet {len(got)} ok", flush=True)


class FakeV1Ferryd:
    """A ROUTER that answers as a ferryd of protocol v1 does: HELLO with any version but 1 is refused with
    that ferryd's text, a SEND must be frame pairs (anything else: its ERROR), every message is confirmed and
    delivered in frame pairs to the last connection that said CONSUME. Serves on its own thread."""

    def __init__(self, ctx):
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.hellos = {}       # version -> count
        self.sends_v1 = self.sends_other = 0
        self.stored = []       # (envelope, payload)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self):
        self._stop = True
        self._thread.join()
        self.socket.close()

    def _reply(self, peer, *frames):
        self.socket.send_multipart([peer, *frames])

    def _serve(self):
        consumer, delivered = None, 0
        welcome = msgpack.packb({"version": 1, "server": "ferryd 0.0.9", "instance": 77, "heartbeat_ms": 1000,
                                 "lease_ms": 30000, "max_message_bytes": 16 << 20, "max_batch": 4096})
        while not self._stop:
            if self.socket.poll(20):
                peer, verb, *rest = self.socket.recv_multipart()
                if verb == b"HELLO":
                    version = msgpack.unpackb(rest[0]).get("version", 1) if rest else 1
                    self.hellos[version] = self.hellos.get(version, 0) + 1
                    if version == 1:
                        self._reply(peer, b"WELCOME", welcome)
                    else:
                        text = f"protocol version {version} is not supported; this ferryd speaks version 1"
                        self._reply(peer, b"ERROR", b"bad_frames", text.encode())
                elif verb == b"SEND":
                    if len(rest) < 3 or len(rest) % 2 == 0:
                        self.sends_other += 1
                        self._reply(peer, b"ERROR", b"bad_frames",
                                    b"SEND needs: queue, then envelope and payload frames in pairs")
                        continue
                    self.sends_v1 += 1
                    pairs = list(zip(rest[1::2], rest[2::2]))
                    self.stored += pairs
                    self._reply(peer, b"CONFIRM", b"".join(f.decode_envelope(e)["id"] for e, _ in pairs))
                elif verb == b"CONSUME":
                    consumer = peer
                    self._reply(peer, b"CONSUMING", rest[0], msgpack.packb({"prefetch": 64, "instance": 77}))
                elif verb == b"PING":
                    self._reply(peer, b"PONG", (77).to_bytes(8, "big"))
            if consumer is not None and delivered < len(self.stored):
                batch = self.stored[delivered:]
                tokens = b"".join((delivered + i + 1).to_bytes(8, "big") for i in range(len(batch)))
                self._reply(consumer, b"DELIVER", b"jobs", tokens, *[x for pair in batch for x in pair])
                delivered = len(self.stored)


def fallback(protocol_md):
    fake = FakeV1Ferryd(zmq.Context.instance())
    p = fd.DurableProducer(fake.endpoint, max_batch=7)  # protocol v2
    sent = [f.Message("jobs", f"job {i}".encode()) for i in range(20)] + [f.Message("jobs", b"L" * 40_000)]
    p.send("jobs", sent)
    if not p.flush(WAIT_MS) or p.version != 1 or p.fallbacks != 1 or p.sends[fd.FORWARDER_PROTOCOL_V2]:
        fail(f"producer: version {p.version}, fallbacks {p.fallbacks}, sends {p.sends}, errors {p.errors}")
    c = fd.DurableConsumer(fake.endpoint, "jobs")
    c.start()
    got = []
    while len(got) < len(sent):
        d = c.receive(WAIT_MS)
        if d is None:
            fail(f"consumer got {len(got)} of {len(sent)}")
        got.append(d.message)
        c.ack(d)
    if [(m.id, m.payload) for m in got] != [(m.id, m.payload) for m in sent] or c.version != 1 or c.delivers[2]:
        fail(f"consumer: version {c.version}, delivers {c.delivers}, {len(got)} messages")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(fake.endpoint)
    if page_snippet(protocol_md)["hello"](dealer) != 1:
        fail("the page's hello() does not fall back to 1")
    dealer.close()
    if fake.sends_other or fake.hellos.get(2) != 3 or not fake.hellos.get(1):
        fail(f"the fake saw HELLOs {fake.hellos}, {fake.sends_other} SENDs of another form")
    fake.close()
    print("fallback ok", flush=True)


def stats(endpoint, queue, conditions):
    want = {}
    for c in conditions:
        k, _, v = c.partition("=")
        want[k] = int(v)
    conn = fd.ForwarderClient(endpoint)
    print_stats(wait_stats(conn, queue, want))


def main():
    global PROTOCOL
    argv = sys.argv[1:]
    if argv[:1] == ["--protocol"]:
        PROTOCOL = int(argv[1])
        argv = argv[2:]
    scenario, endpoint, queue, *args = argv
    if scenario == "produce":
        produce(endpoint, queue)
    elif scenario == "resend":
        resend(endpoint, queue, int(args[0]))
    elif scenario == "consume":
        consume(endpoint, queue, int(args[0]))
    elif scenario == "nack-reject":
        nack_reject(endpoint, queue)
    elif scenario == "silent":
        silent(endpoint, queue)
    elif scenario == "fallback":
        fallback(args[0])
    elif scenario == "snippet":
        snippet(endpoint, queue, args[0])
    elif scenario == "stats":
        stats(endpoint, queue, args)
    else:
        fail(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
