"""A tiny pure-Python client of the forwarder, ferryd, written from docs/protocol.md alone.

The forwarder half of ferry_py.py (messages, envelopes and blocks come from there); the interop tests
run it against a real ferryd and the C++ producer and consumer. Needs only pyzmq and msgpack
(python3-zmq, python3-msgpack on Debian).

Through the forwarder, ferryd (docs/protocol.md, "The forwarder protocol"), in protocol v2 (messages in
one block frame per SEND and DELIVER), or v1 with protocol=FORWARDER_PROTOCOL_V1:

    producer = DurableProducer("tcp://127.0.0.1:5570")
    producer.send("jobs", [msg])              # HELLO first: the version both sides speak decides the SEND form
    producer.flush(5000)                      # True once ferryd confirmed (or refused) every message
    consumer = DurableConsumer("tcp://127.0.0.1:5570", "jobs")
    consumer.start()                          # CONSUME asks for v2 DELIVERs; a v1 ferryd sends frame pairs
    delivery = consumer.receive(1000)         # a Delivery: .message, .token; answer it
    consumer.ack(delivery)
"""

import collections
import time

import msgpack
import zmq

from ferry_py import (DEFAULT_LIMITS, SPLIT_PAYLOAD, DecodeError, Message, _packer, _text, block_header,
                      decode_block, decode_envelope, encode_envelope)


# --- the forwarder protocol (ferryd), versions 1 and 2 ---------------------------------------------------
# docs/protocol.md, "The forwarder protocol (ferryd)". A DEALER socket per connection; every message starts
# with an ASCII verb frame, with no empty delimiter frame. Version 2 carries a SEND's or a DELIVER's messages
# in one block frame (the block of wire v2, without topic); version 1 in envelope and payload frame pairs.

FORWARDER_PROTOCOL_V1 = 1
FORWARDER_PROTOCOL_V2 = 2
FORWARDER_PROTOCOL_VERSION = FORWARDER_PROTOCOL_V2  # the highest this client speaks
MAX_BATCH = 4096  # messages per SEND
MAX_SEND_BLOCK_BYTES = 1 << 20  # a v2 SEND's block stays near this (ferryd drops frames over its ZMQ_MAXMSGSIZE)
ID_SIZE = 16
TOKEN_SIZE = 8

# Refusal codes a retry of the same message (same id) may cure; the others need a different message.
RETRYABLE_REFUSALS = {"queue_full", "disk_full", "io_error", "shutting_down"}


def valid_queue_name(name):
    """1..200 bytes of [A-Za-z0-9._-], not starting with '.'."""
    b = _text(name)
    return 0 < len(b) <= 200 and not b.startswith(b".") and all(
        c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in b)


class ForwarderError(Exception):
    """ferryd answered a request with ERROR | code | text."""

    def __init__(self, code, text):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class Delivery:
    """One message of a DELIVER: `token` (8 bytes) answers it on `queue`; `message.attempt` counts deliveries."""

    def __init__(self, queue, token, message):
        self.queue = queue
        self.token = token
        self.message = message

    def __repr__(self):
        return f"Delivery({self.queue!r}, token={self.token.hex()}, {self.message!r})"


def _unpack_map(frame):
    value = msgpack.unpackb(bytes(frame), raw=False, unicode_errors="surrogateescape")
    if not isinstance(value, dict):
        raise ValueError("expected a MessagePack map")
    return value


class ForwarderClient:
    """One DEALER connection to ferryd, enough for STATS and DLQ; the base of the durable producer and consumer.
    Not thread-safe: one thread drives it through the calls below.

    While it waits for anything it sends PING every `heartbeat_ms` and watches the instance in PONG:
    a new instance means ferryd restarted (see instance_changed).

    `protocol` is the highest forwarder protocol version it speaks (2, or 1 to behave as a client that
    predates v2); hello() negotiates the version both sides speak and keeps it in `version`."""

    def __init__(self, endpoint, *, ctx=None, heartbeat_ms=1000, protocol=FORWARDER_PROTOCOL_VERSION):
        if protocol not in (FORWARDER_PROTOCOL_V1, FORWARDER_PROTOCOL_V2):
            raise ValueError(f"protocol is {FORWARDER_PROTOCOL_V1} or {FORWARDER_PROTOCOL_V2}")
        self.ctx = ctx or zmq.Context.instance()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)  # what was not confirmed is resent by us, not flushed by libzmq
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.connect(endpoint)
        self.heartbeat_ms = heartbeat_ms
        self.protocol = protocol
        self.version = None   # the version WELCOME agreed on; None before (or while renegotiating)
        self.welcome = None   # the last WELCOME map
        self.fallbacks = 0    # HELLOs refused by a ferryd that speaks only older versions
        self._hello_version = protocol
        self.instance = None
        self.instance_changes = 0
        self.errors = []    # (code, text) of every ERROR, in order
        self._replies = collections.deque(maxlen=256)  # (verb, frames) of recent replies, for _request
        self._next_ping = 0.0

    def close(self):
        self.socket.close()

    def send_frames(self, frames):
        self.socket.send_multipart([_text(f) if isinstance(f, str) else bytes(f) for f in frames])

    def poll(self, timeout_ms):
        """Pings when due, waits up to `timeout_ms` for input, then handles every message that arrived."""
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.heartbeat_ms / 1000
            self._heartbeat()
        wait = max(0, min(timeout_ms, int((self._next_ping - now) * 1000) + 1))
        if not self.socket.poll(wait):
            return
        while self.socket.poll(0):
            frames = self.socket.recv_multipart()
            self._handle(frames[0], frames[1:])

    def wait_for(self, condition, timeout_ms):
        """Handles input until `condition()` is true or `timeout_ms` passed. Returns condition()."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not condition():
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return condition()
            self.poll(left)
        return True

    def _heartbeat(self):
        self.send_frames([b"PING"])

    def _handle(self, verb, rest):
        if verb == b"WELCOME" and rest:
            self._on_welcome(_unpack_map(rest[0]))
            self._replies.append((verb, rest))
        elif verb == b"ERROR" and len(rest) >= 2 and self._refuses_hello(rest):
            # A ferryd older than the version asked for: ask for the one below (each HELLO names the highest
            # version the client is willing to speak).
            self.errors.append((rest[0].decode("ascii", "replace"), rest[1].decode("utf-8", "replace")))
            self.fallbacks += 1
            self._hello_version -= 1
            self._send_hello()
        elif verb == b"PONG" and len(rest) == 1 and len(rest[0]) == 8:
            instance = int.from_bytes(rest[0], "big")
            changed = self.instance is not None and instance != self.instance
            self.instance = instance
            if changed:
                self.instance_changes += 1
                self.instance_changed()
            self._replies.append((verb, rest))
        elif verb == b"ERROR" and len(rest) >= 2:
            code, text = rest[0].decode("ascii", "replace"), rest[1].decode("utf-8", "replace")
            self.errors.append((code, text))
            self.on_error(code, text)
            self._replies.append((verb, rest))
        else:
            self._replies.append((verb, rest))

    def instance_changed(self):
        """ferryd restarted: what it knew about this connection is gone. Subclasses recover here."""

    def _send_hello(self):
        self.send_frames([b"HELLO", msgpack.packb({"version": self._hello_version})])

    def _refuses_hello(self, rest):
        # What a ferryd of protocol v1 answers to HELLO v2: ERROR bad_frames "protocol version 2 is not
        # supported; this ferryd speaks version 1". Only while no WELCOME has agreed on a version.
        return (self.version is None and self._hello_version > FORWARDER_PROTOCOL_V1 and rest[0] == b"bad_frames"
                and b"protocol version" in bytes(rest[1]))

    def _on_welcome(self, welcome):
        self.welcome = welcome
        # min(): a WELCOME never names more than was asked for; a ferryd that predates HELLO's negotiation
        # answers version 1 to HELLO v1.
        self.version = min(welcome.get("version", FORWARDER_PROTOCOL_V1), self._hello_version)
        self.heartbeat_ms = welcome.get("heartbeat_ms", self.heartbeat_ms)
        if self.instance is None:
            self.instance = welcome.get("instance")

    def renegotiate(self):
        """Sends HELLO again without waiting (after ferryd restarted, perhaps as another release); until
        WELCOME arrives `version` is None, and what is sent meanwhile must be v1, which every ferryd takes."""
        self.version = None
        self._hello_version = self.protocol
        self._send_hello()

    def on_error(self, code, text):
        """An ERROR arrived (it names no request; see docs/protocol.md)."""

    def _request(self, frames, reply_verb, timeout_ms):
        """Sends `frames` and returns the frames after the verb of the next `reply_verb` reply. Raises
        ForwarderError on ERROR and TimeoutError when nothing comes."""
        self._replies.clear()
        self.send_frames(frames)
        if not self.wait_for(lambda: any(v in (reply_verb, b"ERROR") for v, _ in self._replies), timeout_ms):
            raise TimeoutError(f"no {reply_verb.decode()} from ferryd in {timeout_ms} ms")
        verb, rest = next((v, r) for v, r in self._replies if v in (reply_verb, b"ERROR"))
        self._replies.clear()
        if verb == b"ERROR":
            raise ForwarderError(rest[0].decode("ascii", "replace"), rest[1].decode("utf-8", "replace"))
        return rest

    def hello(self, timeout_ms=5000):
        """HELLO | {version: protocol} -> the WELCOME map (version, server, instance, heartbeat_ms, lease_ms,
        ...). WELCOME's version, the one both sides speak, is kept in `version`. A ferryd that speaks only
        older versions refuses the HELLO (ERROR bad_frames "protocol version ..."): then the next lower
        version is asked for. Raises ForwarderError for any other ERROR, TimeoutError when nothing comes."""
        errors, fallbacks = len(self.errors), self.fallbacks
        self.renegotiate()

        def other_error():  # an ERROR that is not a refused version
            return len(self.errors) - errors > self.fallbacks - fallbacks

        if not self.wait_for(lambda: self.version is not None or other_error(), timeout_ms):
            raise TimeoutError(f"no WELCOME from ferryd in {timeout_ms} ms")
        if self.version is None:
            code, text = self.errors[-1]
            raise ForwarderError(code, text)
        return self.welcome

    def ping(self, timeout_ms=5000):
        """PING -> the instance number of the ferryd process that answered."""
        return int.from_bytes(self._request([b"PING"], b"PONG", timeout_ms)[0], "big")

    def stats(self, timeout_ms=5000):
        return _unpack_map(self._request([b"STATS"], b"STATS", timeout_ms)[0])

    def _dlq(self, queue, op, limit, timeout_ms):
        return _unpack_map(self._request([b"DLQ", queue, op, msgpack.packb({"limit": limit})], b"DLQ",
                                         timeout_ms)[0])

    def dlq_list(self, queue, limit=100, timeout_ms=5000):
        """{queue: '<queue>.dlq', depth, messages: [{seq, id (hex), timestamp_us, key, headers, stored_at_us,
        payload}]} -- `queue` is the source queue's name, without the suffix."""
        return self._dlq(queue, b"list", limit, timeout_ms)

    def dlq_replay(self, queue, limit=100, timeout_ms=5000):
        return self._dlq(queue, b"replay", limit, timeout_ms)["replayed"]

    def dlq_purge(self, queue, limit=100, timeout_ms=5000):
        return self._dlq(queue, b"purge", limit, timeout_ms)["purged"]


class DurableProducer(ForwarderClient):
    """Sends messages to ferryd and tracks each one until it is confirmed (on disk) or refused.

    Unconfirmed messages are sent again, with the same id and envelope, after `confirm_timeout_ms` and
    whenever ferryd's instance changes; ferryd's dedup window stores each id once and confirms every copy.

    The first send() says HELLO and waits for WELCOME: in protocol v2 a SEND carries its messages in one
    block (up to max_batch messages and about MAX_SEND_BLOCK_BYTES), in v1 as envelope and payload frames.
    A payload of `large_payload` bytes or more goes in a v1 SEND of its own, as ferry's producer sends it
    (ferryd takes either form at any time); None packs every message into blocks."""

    def __init__(self, endpoint, *, ctx=None, confirm_timeout_ms=5000, max_batch=512, heartbeat_ms=1000,
                 protocol=FORWARDER_PROTOCOL_VERSION, large_payload=SPLIT_PAYLOAD):
        super().__init__(endpoint, ctx=ctx, heartbeat_ms=heartbeat_ms, protocol=protocol)
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch is 1..{MAX_BATCH}")
        self.confirm_timeout_ms = confirm_timeout_ms
        self.max_batch = max_batch
        self.large_payload = large_payload
        self.unconfirmed = {}  # id -> [queue, envelope, payload, sent_at]
        self.confirmed = []    # ids, in the order their CONFIRM arrived
        self.refused = {}      # id -> (code, text)
        self.resent = 0
        self.sends = {FORWARDER_PROTOCOL_V1: 0, FORWARDER_PROTOCOL_V2: 0}  # SENDs by form
        # REFUSEs for ids we were not waiting for, such as the all-zero id of a malformed envelope
        self.stray_refusals = []

    def send(self, queue, messages):
        """Sends `messages` (Message objects; their topic is ignored) to `queue`, max_batch per SEND."""
        if not valid_queue_name(queue):
            raise ValueError(f"bad queue name {queue!r}")
        items = [(m.id, encode_envelope(m), m.payload) for m in messages]
        for id_, envelope, payload in items:
            if len(id_) != ID_SIZE or id_ == bytes(ID_SIZE):
                raise ValueError("every message needs its own 16-byte id, never all zeros")
        if self.version is None and self.welcome is None:
            self.hello()  # the form of a SEND depends on the version ferryd speaks
        for id_, envelope, payload in items:
            self.unconfirmed[id_] = [queue, envelope, payload, 0.0]
        self._transmit(queue, [i for i, _, _ in items])

    def _transmit(self, queue, ids):
        """SENDs for `ids` (all of `queue`), in order: v2 blocks, or v1 frame pairs while no v2 is agreed."""
        now = time.monotonic()
        name = _text(queue)
        packed = self.version is not None and self.version >= FORWARDER_PROTOCOL_V2
        batch, size = [], 0

        def flush():
            nonlocal batch, size
            if not batch:
                return
            if packed:
                entries = b"".join(e[1] + _packer.pack(e[2]) for e in batch)
                self.send_frames([b"SEND", name, block_header(len(batch)) + entries])
            else:
                frames = [b"SEND", name]
                for e in batch:
                    frames += [e[1], e[2]]
                self.send_frames(frames)
            self.sends[FORWARDER_PROTOCOL_V2 if packed else FORWARDER_PROTOCOL_V1] += 1
            batch, size = [], 0

        for id_ in ids:
            entry = self.unconfirmed[id_]
            entry[3] = now
            if packed and self.large_payload is not None and len(entry[2]) >= self.large_payload:
                flush()
                self.send_frames([b"SEND", name, entry[1], entry[2]])  # v1 form, alone
                self.sends[FORWARDER_PROTOCOL_V1] += 1
                continue
            batch.append(entry)
            size += len(entry[1]) + len(entry[2])
            if len(batch) == self.max_batch or (packed and size >= MAX_SEND_BLOCK_BYTES):
                flush()
        flush()

    def _resend(self, ids):
        by_queue = {}
        for id_ in ids:
            by_queue.setdefault(self.unconfirmed[id_][0], []).append(id_)
        for queue, group in by_queue.items():
            self.resent += len(group)
            self._transmit(queue, group)

    def instance_changed(self):
        # A new ferryd may have lost what it had not confirmed, and may be another release: say HELLO again
        # and resend at once, in v1 form until WELCOME says more.
        self.renegotiate()
        self._resend(list(self.unconfirmed))

    def _handle(self, verb, rest):
        if verb == b"CONFIRM" and rest:
            ids = bytes(rest[0])
            for off in range(0, len(ids) - ID_SIZE + 1, ID_SIZE):
                id_ = ids[off:off + ID_SIZE]
                if self.unconfirmed.pop(id_, None) is not None:
                    self.confirmed.append(id_)  # a second CONFIRM of a resent copy changes nothing
        elif verb == b"REFUSE" and len(rest) >= 3:
            id_ = bytes(rest[0])
            code, text = rest[1].decode("ascii", "replace"), rest[2].decode("utf-8", "replace")
            if self.unconfirmed.pop(id_, None) is not None:
                self.refused[id_] = (code, text)
            else:
                self.stray_refusals.append((id_, code, text))
        else:
            super()._handle(verb, rest)

    def flush(self, timeout_ms):
        """Waits until every message sent is confirmed or refused, resending those whose confirmation is
        overdue. True when nothing is left unconfirmed."""
        deadline = time.monotonic() + timeout_ms / 1000
        while self.unconfirmed:
            now = time.monotonic()
            if now >= deadline:
                return False
            overdue = [i for i, e in self.unconfirmed.items() if now - e[3] >= self.confirm_timeout_ms / 1000]
            if overdue:
                self._resend(overdue)
            self.poll(min(100, int((deadline - now) * 1000) + 1))
        return True


class DurableConsumer(ForwarderClient):
    """Takes messages of one queue from ferryd: CONSUME with a prefetch (credit), then DELIVER after DELIVER;
    every delivery must be answered with ack, nack or reject.

    When ferryd forgets this connection (ERROR not_consuming, or a new instance in PONG), it subscribes again
    and drops the deliveries it holds: their tokens settle nothing any more, and ferryd delivers them again.

    In protocol v2 it says HELLO, then asks in CONSUME for DELIVERs as one block ("version": 2); a ferryd
    that predates v2 ignores that and sends frame pairs. It takes either form, told apart by frame count
    (counted in `delivers`). With protocol v1 it behaves as a client that predates v2: no HELLO, and CONSUME
    holds only the prefetch."""

    def __init__(self, endpoint, queue, *, ctx=None, prefetch=64, heartbeat_ms=1000, limits=None,
                 protocol=FORWARDER_PROTOCOL_VERSION):
        super().__init__(endpoint, ctx=ctx, heartbeat_ms=heartbeat_ms, protocol=protocol)
        if not valid_queue_name(queue):
            raise ValueError(f"bad queue name {queue!r}")
        self.queue = queue
        self.prefetch = prefetch
        self.limits = limits or DEFAULT_LIMITS
        self.options = None       # the CONSUMING map
        self.subscriptions = 0    # CONSUMING replies seen
        self.resubscribed = 0
        self.malformed = 0
        self.cancelled = False
        self.delivers = {FORWARDER_PROTOCOL_V1: 0, FORWARDER_PROTOCOL_V2: 0}  # well-formed DELIVERs by form
        self._deliveries = []

    def start(self, timeout_ms=5000):
        """[HELLO,] CONSUME | queue | {prefetch[, version]}; waits for CONSUMING. Returns its map (prefetch,
        lease_ms, heartbeat_ms, instance)."""
        if self.protocol >= FORWARDER_PROTOCOL_V2 and self.welcome is None:
            self.hello()
        seen = self.subscriptions
        self._consume()
        if not self.wait_for(lambda: self.subscriptions > seen, timeout_ms):
            raise TimeoutError("no CONSUMING from ferryd")
        return self.options

    def _consume(self):
        options = {"prefetch": self.prefetch}
        if self.protocol >= FORWARDER_PROTOCOL_V2:
            options["version"] = self.protocol  # the highest DELIVER form we take; ferryd sends min(it, its own)
        self.send_frames([b"CONSUME", self.queue, msgpack.packb(options)])

    def _resubscribe(self):
        self.resubscribed += 1
        self._deliveries.clear()
        self._consume()

    def _heartbeat(self):
        super()._heartbeat()
        if self.options is not None and not self.cancelled:
            # An ACK with no tokens settles nothing but is answered with ERROR not_consuming when ferryd has
            # dropped this subscription (heartbeat timeout), which PONG alone would never reveal.
            self.send_frames([b"ACK", self.queue, b""])

    def instance_changed(self):
        if self.protocol >= FORWARDER_PROTOCOL_V2:
            self.renegotiate()  # for `version`; CONSUME does not wait for it
        self._resubscribe()

    def on_error(self, code, text):
        if code == "not_consuming" and not self.cancelled:
            self._resubscribe()

    def _handle(self, verb, rest):
        if verb == b"DELIVER":
            self._on_deliver(rest)
        elif verb == b"CONSUMING" and len(rest) >= 2:
            self.options = _unpack_map(rest[1])
            self.subscriptions += 1
            self.heartbeat_ms = self.options.get("heartbeat_ms", self.heartbeat_ms)
            if self.instance is None:
                self.instance = self.options.get("instance")
        elif verb == b"CANCELLED":
            self._replies.append((verb, rest))
        else:
            super()._handle(verb, rest)

    def _on_deliver(self, rest):
        # v2: DELIVER | queue | tokens | block          v1: DELIVER | queue | tokens | (envelope | payload) x n
        packed = len(rest) == 3
        n = len(rest[1]) // TOKEN_SIZE if packed else (len(rest) - 2) // 2
        if len(rest) < 3 or (not packed and len(rest) % 2 != 0) or n == 0 or len(rest[1]) != TOKEN_SIZE * n:
            self.malformed += 1
            return
        queue = rest[0].decode("utf-8", "surrogateescape")
        tokens = [bytes(rest[1][i * TOKEN_SIZE:(i + 1) * TOKEN_SIZE]) for i in range(n)]
        if packed:
            try:
                entries = decode_block(rest[2], self.limits)
                if len(entries) != n:
                    raise DecodeError("batch_count")  # one token per message
            except DecodeError as e:
                # Nothing in a bad block can be handled: every delivery goes to the dead-letter queue.
                self.malformed += n
                why = f"consumer could not decode the DELIVER block: {e.reason}"
                for token in tokens:
                    self.reject(Delivery(queue, token, None), why)
                return
            self.delivers[FORWARDER_PROTOCOL_V2] += 1
            for token, (fields, payload) in zip(tokens, entries):
                self._deliveries.append(Delivery(queue, token, Message(queue, payload, **fields)))
            return
        self.delivers[FORWARDER_PROTOCOL_V1] += 1
        for i, token in enumerate(tokens):
            try:
                fields = decode_envelope(rest[2 + 2 * i], self.limits)
            except DecodeError as e:
                self.malformed += 1
                self.reject(Delivery(queue, token, None), f"consumer could not decode the envelope: {e.reason}")
                continue
            self._deliveries.append(Delivery(queue, token, Message(queue, bytes(rest[3 + 2 * i]), **fields)))

    def receive(self, timeout_ms):
        """The next Delivery, or None when none came in `timeout_ms`."""
        if not self.wait_for(lambda: bool(self._deliveries), timeout_ms):
            return None
        return self._deliveries.pop(0)

    def ack(self, *deliveries):
        """One ACK for any number of deliveries of this queue: the tokens, concatenated."""
        if deliveries:
            self.send_frames([b"ACK", self.queue, b"".join(d.token for d in deliveries)])

    def nack(self, delivery, reason=""):
        """Asks for a redelivery; the attempt counts (after --max-attempts the message is dead-lettered)."""
        self.send_frames([b"NACK", self.queue, delivery.token, reason])

    def reject(self, delivery, reason=""):
        """Sends the message to <queue>.dlq now, with `reason`."""
        self.send_frames([b"REJECT", self.queue, delivery.token, reason])

    def cancel(self, timeout_ms=5000):
        """CANCEL | queue; waits for CANCELLED. Unanswered deliveries go back without counting an attempt."""
        self.cancelled = True
        self._deliveries.clear()
        self._request([b"CANCEL", self.queue], b"CANCELLED", timeout_ms)
