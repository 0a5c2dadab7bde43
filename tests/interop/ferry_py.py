"""A tiny pure-Python ferry client, written from docs/protocol.md alone.

It exists to prove the document is enough: the interop tests run it against the C++ library in both
directions. Needs only pyzmq and msgpack (python3-zmq, python3-msgpack on Debian).

    msg = Message("jobs", b"hello", key="customer-17", headers={"content-type": "text/plain"})
    pusher = Pusher(connect=["tcp://127.0.0.1:5555"])   # wire v2; Pusher(..., wire=WIRE_V1) for old workers
    pusher.send(msg)
    pusher.send_batch([msg1, msg2, msg3])                # runs of one topic packed in one frame each
    puller = Puller(bind=["tcp://127.0.0.1:5556"])      # takes v1 and v2, counted in puller.frames
    msg = puller.receive(1000)

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
