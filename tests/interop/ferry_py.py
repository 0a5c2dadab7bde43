"""A tiny pure-Python ferry client, written from docs/protocol.md alone.

It exists to prove the document is enough: the interop tests run it against the C++ library in both
directions. Needs only pyzmq and msgpack (python3-zmq, python3-msgpack on Debian).

    msg = Message("jobs", b"hello", key="customer-17", headers={"content-type": "text/plain"})
    pusher = Pusher(connect=["tcp://127.0.0.1:5555"])   # wire v2; Pusher(..., wire=WIRE_V1) for old workers
    pusher.send(msg)
    pusher.send_batch([msg1, msg2, msg3])                # runs of one topic packed in one frame each
    puller = Puller(bind=["tcp://127.0.0.1:5556"])      # takes v1 and v2, counted in puller.frames
    msg = puller.receive(1000)

The forwarder (ferryd) client is in ferryd_py.py.
"""

import collections
import os
import struct
import threading
import time

import msgpack
import zmq

ENVELOPE_VERSION = 1
STORAGE_ATTEMPT_OFFSET = 29

# Wire versions ("Frames" in docs/protocol.md): how messages are framed on a brokerless socket.
WIRE_V1 = 1         # three frames per message: topic | envelope | payload
WIRE_V2 = 2         # one frame: topic 00 [2, count] (envelope payload-bin)..., or two with the payload split off
WIRE_V2_TAG = 2     # the first element of a block's header
SEPARATOR = b"\x00"  # ends a v2 topic
# A v2 sender's choices (ferry's wire_options defaults).
SPLIT_PAYLOAD = 32 * 1024       # payloads from this size travel in a frame of their own
MAX_BATCH_BYTES = 256 * 1024    # envelopes and payloads packed into one frame
MAX_BATCH_MESSAGES = 4096
# Every block entry takes at least this many bytes (a 24-byte envelope and an empty bin): a count larger
# than 1 + remaining // MIN_ENTRY is refused as truncated before any entry is read.
MIN_ENTRY = 26

# Receiver limits ("Limits" in docs/protocol.md); bigger inputs are rejected, never allocated.
DEFAULT_LIMITS = {"max_topic": 255, "max_key": 255, "max_headers": 64, "max_envelope": 64 * 1024,
                  "max_batch": 65_536}

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
    """Decodes envelope v1 `data`, which must hold exactly one envelope (a v1 envelope frame). Returns a
    dict of the fields (id, timestamp_us, attempt, key, headers, origin, sequence). Raises DecodeError
    naming the first problem in field order, as ferry does."""
    limits = limits or DEFAULT_LIMITS
    data = bytes(data)
    if len(data) > limits["max_envelope"]:
        raise DecodeError("envelope_too_large")
    fields, end = decode_envelope_prefix(data, 0, limits)
    if end != len(data):
        raise DecodeError("trailing_bytes")
    return fields


def decode_envelope_prefix(data, offset=0, limits=None):
    """Decodes the envelope that starts at data[offset] (more may follow it, as in a v2 block). Returns
    (fields, offset just after it). Reads at most max_envelope bytes: an envelope that does not end within
    them is envelope_too_large."""
    limits = limits or DEFAULT_LIMITS
    window = bytes(data[offset:offset + limits["max_envelope"]])
    try:
        fields, used = _decode_fields(window, limits)
    except DecodeError as e:
        if e.reason == "truncated" and len(data) - offset > limits["max_envelope"]:
            raise DecodeError("envelope_too_large") from None
        raise
    return fields, offset + used


def _decode_fields(data, limits):
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
    if not isinstance(id_, bytes) or len(id_) != 16 or id_ == bytes(16):
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
    return ({"id": id_, "timestamp_us": ts, "attempt": attempt, "key": key or None, "headers": headers,
             "origin": origin, "sequence": sequence}, u.tell())


# --- blocks (wire v2) ------------------------------------------------------------------------------------
# A block is the MessagePack array [2, count] followed by count entries, each an envelope v1 and then the
# payload as a MessagePack bin (no payload in a split frame's block).

_packer = msgpack.Packer(use_bin_type=True)


def encode_block(msgs, split=False):
    """The block of `msgs`, written as ferry writes it (smallest count and bin encodings). With `split`, the
    block of one message without its payload (the payload is the next frame)."""
    if not 1 <= len(msgs) <= DEFAULT_LIMITS["max_batch"] or (split and len(msgs) != 1):
        raise ValueError(f"a block holds 1..{DEFAULT_LIMITS['max_batch']} messages (1 when split)")
    out = bytearray(block_header(len(msgs)))
    for m in msgs:
        out += encode_envelope(m)
        if not split:
            out += _packer.pack(bytes(m.payload))  # bytes pack as bin
    return bytes(out)


def block_header(count):
    """The header [2, count] of a block of `count` messages, as ferry writes it."""
    return b"\x92" + _packer.pack(WIRE_V2_TAG) + _packer.pack(count)


def _byte(data, pos):
    if pos >= len(data):
        raise DecodeError("truncated")
    return data[pos], pos + 1


def _big_endian(data, pos, n):
    if pos + n > len(data):
        raise DecodeError("truncated")
    return int.from_bytes(data[pos:pos + n], "big"), pos + n


def _header_uint(data, pos):
    """A non-negative integer in any MessagePack integer encoding (a block header's tag and count)."""
    t, pos = _byte(data, pos)
    if t < 0x80:
        return t, pos
    if 0xCC <= t <= 0xCF:
        return _big_endian(data, pos, 1 << (t - 0xCC))
    if 0xD0 <= t <= 0xD3:
        n = 1 << (t - 0xD0)
        v, pos = _big_endian(data, pos, n)
        if v >> (8 * n - 1):
            raise DecodeError("bad_header")  # negative
        return v, pos
    raise DecodeError("bad_header")


def _block_header(data, limits, split):
    """(count, position after the header [2, count])."""
    t, pos = _byte(data, 0)
    if 0x90 <= t <= 0x9F:
        n = t & 0x0F
    elif t in (0xDC, 0xDD):
        n, pos = _big_endian(data, pos, 2 if t == 0xDC else 4)
    else:
        raise DecodeError("bad_header")
    if n != 2:
        raise DecodeError("bad_header")
    tag, pos = _header_uint(data, pos)
    if tag != WIRE_V2_TAG:
        raise DecodeError("bad_header")
    count, pos = _header_uint(data, pos)
    if count == 0 or count > limits["max_batch"] or (split and count != 1):
        raise DecodeError("bad_header")
    return count, pos


def decode_block(data, limits=None, split=False):
    """[(fields, payload)] of a block, checked in ferry's order; payload is None with `split`. Raises
    DecodeError for the first problem: nothing of a bad block is to be used."""
    limits = limits or DEFAULT_LIMITS
    data = memoryview(data)
    count, pos = _block_header(data, limits, split)
    if count > (len(data) - pos) // MIN_ENTRY + 1:
        raise DecodeError("truncated")
    entries = []
    for _ in range(count):
        fields, pos = decode_envelope_prefix(data, pos, limits)
        if split:
            if pos != len(data):
                raise DecodeError("bad_payload")  # a split frame's block has no payload
            entries.append((fields, None))
            continue
        t, pos = _byte(data, pos)
        if not 0xC4 <= t <= 0xC6:
            raise DecodeError("bad_payload")
        size, pos = _big_endian(data, pos, 1 << (t - 0xC4))
        if pos + size > len(data):
            raise DecodeError("truncated")
        entries.append((fields, bytes(data[pos:pos + size])))
        pos += size
    if pos != len(data):
        raise DecodeError("batch_count")
    return entries


# --- frames ----------------------------------------------------------------------------------------------

def _v2_topic(msg):
    topic = _text(msg.topic)
    if SEPARATOR in topic:
        raise ValueError(f"a topic holding 00 cannot be framed in wire v2 (ferry: invalid): {topic!r}")
    return topic


def to_frames(msg, *, wire=WIRE_V2, split_payload=SPLIT_PAYLOAD, storage=False):
    """The frames of one message: wire v2 (one frame, or two from `split_payload` bytes of payload) or v1
    (three; `storage` writes the envelope in the storage form)."""
    if wire == WIRE_V1:
        return [_text(msg.topic), encode_envelope(msg, storage), msg.payload]
    if len(msg.payload) >= split_payload:
        return [_v2_topic(msg) + SEPARATOR + encode_block([msg], split=True), msg.payload]
    return [_v2_topic(msg) + SEPARATOR + encode_block([msg])]


def batch_frames(msgs, *, wire=WIRE_V2, split_payload=SPLIT_PAYLOAD, max_batch_bytes=MAX_BATCH_BYTES,
                 max_batch_messages=MAX_BATCH_MESSAGES):
    """Frame sets for `msgs` in order, as ferry's send_batch makes them: in v2, each run of messages with
    one topic packed into one frame (within the batch limits), a large payload alone in the split form; in
    v1, one frame set per message."""
    max_batch_messages = min(max(max_batch_messages, 1), DEFAULT_LIMITS["max_batch"])
    out, i = [], 0
    while i < len(msgs):
        first = msgs[i]
        if wire == WIRE_V1 or len(first.payload) >= split_payload:
            out.append(to_frames(first, wire=wire, split_payload=split_payload))
            i += 1
            continue
        end, size = i, 0
        while end < len(msgs) and end - i < max_batch_messages:
            m = msgs[end]
            if m.topic != first.topic or len(m.payload) >= split_payload:
                break
            entry = len(encode_envelope(m)) + len(_packer.pack(bytes(m.payload)))
            if end > i and size + entry > max_batch_bytes:
                break
            size += entry
            end += 1
        out.append([_v2_topic(first) + SEPARATOR + encode_block(msgs[i:end])])
        i = end
    return out


def wire_of(frames):
    """The wire version a frame set is in, by its frame count (1 or 2: v2, 3: v1); None for any other."""
    return {1: WIRE_V2, 2: WIRE_V2, 3: WIRE_V1}.get(len(frames))


def from_frames(frames, limits=None):
    """The Messages of one ZeroMQ multipart message in either wire version: one for v1 and for a split v2
    frame set, one or more for a packed v2 frame. Raises DecodeError for the first problem, checked in
    ferry's order (docs/protocol.md, "Malformed input")."""
    limits = limits or DEFAULT_LIMITS
    wire = wire_of(frames)
    if wire is None:
        raise DecodeError("frame_count")
    if wire == WIRE_V1:
        topic, envelope, payload = (bytes(f) for f in frames)
        if len(topic) > limits["max_topic"]:
            raise DecodeError("topic_too_long")
        fields = decode_envelope(envelope, limits)
        return [Message(topic.decode("utf-8", "surrogateescape"), payload, **fields)]
    frame = bytes(frames[0])
    sep = frame.find(SEPARATOR, 0, limits["max_topic"] + 1)
    if sep < 0:
        raise DecodeError("topic_too_long" if len(frame) > limits["max_topic"] else "no_separator")
    topic = frame[:sep].decode("utf-8", "surrogateescape")
    split = len(frames) == 2
    entries = decode_block(memoryview(frame)[sep + 1:], limits, split)
    return [Message(topic, bytes(frames[1]) if split else payload, **fields) for fields, payload in entries]


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


class _Sender(_Endpoint):
    """Frames messages in `wire` (v2 by default, v1 for receivers that predate it)."""

    def __init__(self, kind, bind, connect, ctx, wire, split_payload):
        super().__init__(kind, bind, connect, ctx)
        self.wire = wire
        self.split_payload = split_payload
        self.frames = 0  # frame sets sent: fewer than messages with batches

    def _send_message(self, msg):
        self.send_frames(to_frames(msg, wire=self.wire, split_payload=self.split_payload))

    def _send_batch(self, msgs):
        for frames in batch_frames(msgs, wire=self.wire, split_payload=self.split_payload):
            self.send_frames(frames)

    def send_frames(self, frames):
        """Sends one frame set as it is (also for malformed-input tests)."""
        self.socket.send_multipart([bytes(f) for f in frames])
        self.frames += 1


class Pusher(_Sender):
    """Work queue sender (PUSH)."""

    def __init__(self, *, bind=(), connect=(), ctx=None, wire=WIRE_V2, split_payload=SPLIT_PAYLOAD):
        super().__init__(zmq.PUSH, bind, connect, ctx, wire, split_payload)

    def send(self, msg):
        self._send_message(msg)

    def send_batch(self, msgs):
        """Sends `msgs` in order, runs of one topic packed into one v2 frame each (each frame goes to one
        worker pool)."""
        self._send_batch(msgs)


class _Receiver(_Endpoint):
    def __init__(self, kind, bind, connect, ctx, limits):
        super().__init__(kind, bind, connect, ctx)
        self.limits = limits or DEFAULT_LIMITS
        self.rejected = {}
        self.frames = {WIRE_V1: 0, WIRE_V2: 0}  # well-formed frame sets by wire version
        self._pending = collections.deque()     # the rest of a v2 batch

    def receive(self, timeout_ms=-1):
        """The next well-formed Message, or None on timeout. Malformed frame sets are dropped and counted
        in self.rejected by reason."""
        if self._pending:
            return self._pending.popleft()
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(left):
                return None
            frames = self.socket.recv_multipart(copy=True)
            try:
                messages = from_frames(frames, self.limits)
            except DecodeError as e:
                self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1
                continue
            self.frames[wire_of(frames)] += 1
            self._pending.extend(messages[1:])
            return messages[0]


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


class Publisher(_Sender):
    """Topic sender (XPUB with XPUB_VERBOSE, so subscriptions can be awaited)."""

    def __init__(self, *, bind=(), connect=(), ctx=None, origin=None, wire=WIRE_V2, split_payload=SPLIT_PAYLOAD):
        super().__init__(zmq.XPUB, bind, connect, ctx, wire, split_payload)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.origin = origin or (int.from_bytes(os.urandom(8), "big") or 1)
        self.sequences = {}
        self.subscriptions = 0

    def _stamp(self, msg):
        seq = self.sequences.get(msg.topic, 0) + 1
        msg.origin, msg.sequence = self.origin, seq
        self.sequences[msg.topic] = seq

    def publish(self, msg):
        self._stamp(msg)
        self._send_message(msg)

    def publish_batch(self, msgs):
        """Publishes `msgs` in order, each with the next sequence of its topic; runs of one topic go out
        packed in one v2 frame each."""
        for m in msgs:
            self._stamp(m)
        self._send_batch(msgs)

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
