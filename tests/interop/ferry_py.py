"""A tiny pure-Python ferry client, written from docs/protocol.md alone.

It exists to prove the document is enough: the interop tests run it against the C++ library in both
directions. Needs only pyzmq and msgpack (python3-zmq, python3-msgpack on Debian).

    msg = Message("jobs", b"hello", key="customer-17", headers={"content-type": "text/plain"})
    Pusher("tcp://127.0.0.1:5555").send(msg)
"""

import os
import struct
import threading
import time

import msgpack
import zmq

ENVELOPE_VERSION = 1
STORAGE_ATTEMPT_OFFSET = 29

# Receiver limits ("Limits" in docs/protocol.md); bigger inputs are rejected, never allocated.
DEFAULT_LIMITS = {"max_topic": 255, "max_key": 255, "max_headers": 64, "max_envelope": 64 * 1024}

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class DecodeError(Exception):
    """A rejected frame set; `reason` is one of the decode_error names of docs/protocol.md."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Message:
    """One ferry message. Strings (topic, key, header names and values) are str; bytes that are not valid
    UTF-8 survive a round trip as surrogate escapes."""

    def __init__(self, topic, payload=b"", *, id=None, timestamp_us=None, attempt=0, key=None, headers=None,
                 origin=0, sequence=0):
        self.topic = topic
        self.payload = bytes(payload)
        self.id = id if id is not None else new_id()
        self.timestamp_us = timestamp_us if timestamp_us is not None else time.time_ns() // 1000
        self.attempt = attempt
        self.key = key or None  # "" and None both mean "no key"
        self.headers = dict(headers or {})
        self.origin = origin
        self.sequence = sequence

    def __repr__(self):
        return (f"Message(topic={self.topic!r}, id={self.id.hex()}, ts={self.timestamp_us}, "
                f"attempt={self.attempt}, key={self.key!r}, headers={self.headers!r}, origin={self.origin}, "
                f"sequence={self.sequence}, payload={self.payload!r})")


# --- ids -------------------------------------------------------------------------------------------------

class IdGenerator:
    """Time-ordered 128-bit ids: 48-bit Unix ms, version 7, 30-bit counter, variant 0b10, 44-bit random tag.

    The tag is drawn once per generator and again after fork(); the counter orders ids within one
    millisecond and borrows the next millisecond when it overflows (or when the clock steps back)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._last_ms = 0
        self._counter = 0
        self._tag = 0

    def new_id(self):
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._tag = int.from_bytes(os.urandom(6), "big") & ((1 << 44) - 1)
                self._counter = 0
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, 0
            else:
                self._counter += 1
                if self._counter == 1 << 30:
                    self._last_ms, self._counter = self._last_ms + 1, 0
            return make_id(self._last_ms, self._counter, self._tag)


def make_id(unix_ms, counter, tag):
    """The 16 bytes of an id from its three parts (docs/protocol.md, "Message ids")."""
    value = ((unix_ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | ((counter >> 18) << 64) | (0b10 << 62) \
        | ((counter & 0x3FFFF) << 44) | (tag & ((1 << 44) - 1))
    return value.to_bytes(16, "big")


def id_parts(id_bytes):
    """(unix_ms, version, counter, variant, tag) of a 16-byte id."""
    v = int.from_bytes(id_bytes, "big")
    counter = (((v >> 64) & 0xFFF) << 18) | ((v >> 44) & 0x3FFFF)
    return v >> 80, (v >> 76) & 0xF, counter, (v >> 62) & 0b11, v & ((1 << 44) - 1)


_generator = IdGenerator()


def new_id():
    return _generator.new_id()


# --- envelope v1 -----------------------------------------------------------------------------------------

def _text(s):
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def _pack_str(packer, s):
    b = _text(s)
    # Pack as MessagePack str (never bin): ferry's decoder accepts only str for key and headers.
    return packer.pack(b.decode("utf-8", "surrogateescape"))


def encode_envelope(msg, storage=False):
    """Envelope v1 bytes of `msg`, written the way ferry's encoder writes them (so they match byte for
    byte): timestamp always 9 bytes, attempt minimal (or 5 bytes in the storage form), headers sorted."""
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
    stream = msg.origin != 0 or msg.sequence != 0
    out = bytearray(b"\x98" if stream else b"\x96")
    out += packer.pack(ENVELOPE_VERSION)
    if len(msg.id) != 16:
        raise ValueError("an id is 16 bytes")
    out += packer.pack(bytes(msg.id))
    ts = msg.timestamp_us
    out += b"\xcf" + struct.pack(">Q", ts) if ts >= 0 else b"\xd3" + struct.pack(">q", ts)
    if not 0 <= msg.attempt <= _UINT32_MAX:
        raise ValueError("attempt is a uint32")
    out += b"\xce" + struct.pack(">I", msg.attempt) if storage else packer.pack(msg.attempt)
    out += _pack_str(packer, msg.key) if msg.key else b"\xc0"
    items = sorted((_text(k), _text(v)) for k, v in msg.headers.items())
    out += packer.pack_map_header(len(items))
    for name, value in items:
        out += _pack_str(packer, name) + _pack_str(packer, value)
    if stream:
        out += packer.pack(msg.origin) + packer.pack(msg.sequence)
    return bytes(out)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def decode_envelope(data, limits=None):
    """Decodes envelope v1 `data`. Returns a dict of the fields (id, timestamp_us, attempt, key, headers,
    origin, sequence). Raises DecodeError naming the first problem in field order, as ferry does."""
    limits = limits or DEFAULT_LIMITS
    data = bytes(data)
    if len(data) > limits["max_envelope"]:
        raise DecodeError("envelope_too_large")
    u = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=True,
                         max_buffer_size=max(len(data), 1))
    u.feed(data)

    def value():
        try:
            return u.unpack()
        except msgpack.OutOfData:
            raise DecodeError("truncated") from None
        except (ValueError, msgpack.UnpackException):
            raise DecodeError("bad_field") from None

    def peek():
        if u.tell() >= len(data):
            raise DecodeError("truncated")
        return data[u.tell()]

    try:
        count = u.read_array_header()
    except msgpack.OutOfData:
        raise DecodeError("truncated") from None
    except ValueError:
        raise DecodeError("not_an_array") from None
    if count not in (6, 8):
        raise DecodeError("not_an_array")

    try:
        version = value()
    except DecodeError as e:
        raise DecodeError("truncated" if e.reason == "truncated" else "unknown_version") from None
    if not _is_int(version) or version != ENVELOPE_VERSION:
        raise DecodeError("unknown_version")

    try:
        id_ = value()
    except DecodeError as e:
        raise DecodeError("truncated" if e.reason == "truncated" else "bad_id") from None
    if not isinstance(id_, bytes) or len(id_) != 16:
        raise DecodeError("bad_id")

    ts = value()
    if not _is_int(ts) or not _INT64_MIN <= ts <= _INT64_MAX:
        raise DecodeError("bad_field")

    attempt = value()
    if not _is_int(attempt) or not 0 <= attempt <= _UINT32_MAX:
        raise DecodeError("bad_field")

    key = value()
    if key is not None and not isinstance(key, str):
        raise DecodeError("bad_field")
    if key is not None and len(_text(key)) > limits["max_key"]:
        raise DecodeError("key_too_long")

    headers = {}
    if peek() == 0xC0:  # nil means no headers
        value()
    else:
        try:
            n = u.read_map_header()
        except msgpack.OutOfData:
            raise DecodeError("truncated") from None
        except ValueError:
            raise DecodeError("bad_field") from None
        if n > limits["max_headers"]:
            raise DecodeError("too_many_headers")
        for _ in range(n):
            name, val = value(), value()
            if not isinstance(name, str) or not isinstance(val, str):
                raise DecodeError("bad_field")
            headers[name] = val  # a repeated name: the last value wins

    origin = sequence = 0
    if count == 8:
        origin, sequence = value(), value()
        for v in (origin, sequence):
            if not _is_int(v) or not 0 <= v <= _UINT64_MAX:
                raise DecodeError("bad_field")
    if u.tell() != len(data):
        raise DecodeError("trailing_bytes")
    return {"id": id_, "timestamp_us": ts, "attempt": attempt, "key": key or None, "headers": headers,
            "origin": origin, "sequence": sequence}


def to_frames(msg, storage=False):
    return [_text(msg.topic), encode_envelope(msg, storage), msg.payload]


def from_frames(frames, limits=None):
    """A Message from the three frames of one ZeroMQ message; raises DecodeError."""
    limits = limits or DEFAULT_LIMITS
    if len(frames) != 3:
        raise DecodeError("frame_count")
    topic, envelope, payload = (bytes(f) for f in frames)
    if len(topic) > limits["max_topic"]:
        raise DecodeError("topic_too_long")
    fields = decode_envelope(envelope, limits)
    return Message(topic.decode("utf-8", "surrogateescape"), payload, **fields)


# --- sockets ---------------------------------------------------------------------------------------------

def _socket(ctx, kind, hwm=1000):
    s = ctx.socket(kind)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.LINGER, 1000)
    s.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
    return s


def _attach(s, bind=(), connect=()):
    bound = []
    for ep in bind:
        s.bind(ep)
        bound.append(s.getsockopt_string(zmq.LAST_ENDPOINT))
    for ep in connect:
        s.connect(ep)
    return bound


class _Endpoint:
    def __init__(self, kind, bind, connect, ctx):
        self.ctx = ctx or zmq.Context.instance()
        self.socket = _socket(self.ctx, kind)
        self.bound = _attach(self.socket, bind, connect)

    def close(self):
        self.socket.close()


class Pusher(_Endpoint):
    """Work queue sender (PUSH)."""

    def __init__(self, *, bind=(), connect=(), ctx=None):
        super().__init__(zmq.PUSH, bind, connect, ctx)

    def send(self, msg):
        self.socket.send_multipart(to_frames(msg))

    def send_frames(self, frames):
        """Sends arbitrary frames (for malformed-input tests)."""
        self.socket.send_multipart([bytes(f) for f in frames])


class _Receiver(_Endpoint):
    def __init__(self, kind, bind, connect, ctx, limits):
        super().__init__(kind, bind, connect, ctx)
        self.limits = limits or DEFAULT_LIMITS
        self.rejected = {}

    def receive(self, timeout_ms=-1):
        """The next well-formed Message, or None on timeout. Malformed frame sets are dropped and counted
        in self.rejected by reason."""
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(left):
                return None
            frames = self.socket.recv_multipart(copy=True)
            try:
                return from_frames(frames, self.limits)
            except DecodeError as e:
                self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1


class Puller(_Receiver):
    """Work queue receiver (PULL)."""

    def __init__(self, *, bind=(), connect=(), ctx=None, limits=None):
        super().__init__(zmq.PULL, bind, connect, ctx, limits)


class Subscriber(_Receiver):
    """Topic receiver (SUB) with per-(origin, topic) gap counting."""

    def __init__(self, prefixes, *, bind=(), connect=(), ctx=None, limits=None):
        super().__init__(zmq.SUB, bind, connect, ctx, limits)
        for p in prefixes:
            self.socket.setsockopt(zmq.SUBSCRIBE, _text(p))
        self.last = {}
        self.gaps = 0

    def receive(self, timeout_ms=-1):
        msg = super().receive(timeout_ms)
        if msg is not None and msg.sequence != 0:
            stream = (msg.origin, msg.topic)
            last = self.last.get(stream)
            if last is None:
                self.last[stream] = msg.sequence  # the first message seen sets where the stream starts
            else:
                if msg.sequence > last + 1:
                    self.gaps += msg.sequence - last - 1
                self.last[stream] = max(last, msg.sequence)
        return msg


class Publisher(_Endpoint):
    """Topic sender (XPUB with XPUB_VERBOSE, so subscriptions can be awaited)."""

    def __init__(self, *, bind=(), connect=(), ctx=None, origin=None):
        super().__init__(zmq.XPUB, bind, connect, ctx)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.origin = origin or (int.from_bytes(os.urandom(8), "big") or 1)
        self.sequences = {}
        self.subscriptions = 0

    def publish(self, msg):
        seq = self.sequences.get(msg.topic, 0) + 1
        msg.origin, msg.sequence = self.origin, seq
        self.socket.send_multipart(to_frames(msg))
        self.sequences[msg.topic] = seq

    def skip(self, topic, n):
        """Consumes `n` sequence numbers without sending (what a high-water-mark drop looks like)."""
        self.sequences[topic] = self.sequences.get(topic, 0) + n

    def wait_for_subscriptions(self, count, timeout_ms):
        """Reads subscribe requests (0x01 + prefix) until `count` have arrived. False on timeout."""
        deadline = time.monotonic() + timeout_ms / 1000
        while self.subscriptions < count:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not self.socket.poll(left):
                return False
            frame = self.socket.recv()
            if frame[:1] == b"\x01":
                self.subscriptions += 1
        return True


# --- test output -----------------------------------------------------------------------------------------

def describe(msg):
    """One line, every field hex or decimal, easy to parse from C++:
    msg id=.. topic=.. key=..|- ts=.. attempt=.. origin=.. seq=.. payload=.. h.<name>=<value>..."""
    parts = ["msg", "id=" + msg.id.hex(), "topic=" + _text(msg.topic).hex(),
             "key=" + (_text(msg.key).hex() if msg.key else "-"), f"ts={msg.timestamp_us}",
             f"attempt={msg.attempt}", f"origin={msg.origin}", f"seq={msg.sequence}",
             "payload=" + msg.payload.hex()]
    parts += [f"h.{_text(k).hex()}={_text(v).hex()}" for k, v in sorted(msg.headers.items())]
    return " ".join(parts)
