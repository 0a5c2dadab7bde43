"""Runs the example exchanges of docs/protocol.md ("The forwarder protocol", "Examples") against a real ferryd
and prints them as the annotated ```exchange blocks the document holds.

usage: ferryd_exchanges.py ENDPOINT
ENDPOINT is a ferryd started with default flags (except --bind) on an empty --data-dir. Paste the output
into the document when the protocol changes; tests/interop_ferryd_test.cpp replays the document's blocks
against ferryd and fails when a byte differs, so the document cannot drift. Values that differ from run to
run (tokens, ferryd's instance number, its version string in WELCOME) are marked `(varies: NAME)`.

The run has three parts: protocol v1 (frame pairs, on the connections `producer` and `consumer`), then
protocol v2 (HELLO, SEND and DELIVER blocks, on `producer-v2` and `consumer-v2`), then a durable topic
(PUBLISH on `producer-v2`, SUBSCRIBE on `subscriber`)."""

import struct
import sys

import msgpack
import zmq

import ferry_py as f

COLUMN = 50  # where comments start, as in the envelope examples


def line(hex_bytes, comment):
    text = " ".join(f"{b:02x}" for b in hex_bytes)
    return f"{text:<{COLUMN}}# {comment}" if len(text) < COLUMN else f"{text} # {comment}"


def quoted(b):
    return '"' + b.decode("utf-8", "replace") + '"'


def text_lines(b, what=""):
    """Raw bytes shown 16 per line with their text."""
    out = []
    for i in range(0, len(b), 16):
        out.append(line(b[i:i + 16], (what + " " if what and i == 0 else "") + quoted(b[i:i + 16])))
    return out or [line(b"", "(empty)")]


def str_lines(b, prefix, varies=None):
    """A MessagePack str value."""
    n = len(b)
    head = bytes([0xA0 | n]) if n < 32 else b"\xd9" + bytes([n])
    kind = "fixstr" if n < 32 else "str 8"
    if len(head) + n <= 16:
        return [line(head + b, f"{prefix}{quoted(b)} ({kind})" + (f" (varies: {varies})" if varies else ""))]
    if varies:
        raise ValueError("a varying str is at most 15 bytes, on one line")
    return [line(head, f"{prefix}{kind}, {n} bytes")] + text_lines(b)


def uint_lines(v, prefix, varies=None):
    if v < 128:
        return [line(bytes([v]), f"{prefix}{v} (positive fixint)")]
    for marker, fmt, kind in ((0xCC, ">B", "uint 8"), (0xCD, ">H", "uint 16"), (0xCE, ">I", "uint 32"),
                              (0xCF, ">Q", "uint 64")):
        try:
            body = struct.pack(fmt, v)
        except struct.error:
            continue
        if varies:
            return [line(bytes([marker]), f"{prefix}{kind}"), line(body, f"{prefix}{v} (varies: {varies})")]
        return [line(bytes([marker]) + body, f"{prefix}{v} ({kind})")]
    raise ValueError(v)


def map_lines(data, varies=None):
    """A flat MessagePack map of str keys to uint or str values, as ferryd writes its replies. `varies`
    maps a key to the name of its run-dependent value."""
    varies = varies or {}
    m = msgpack.unpackb(data, raw=False)
    out = [line(bytes([0x80 | len(m)]), f"fixmap, {len(m)} pair{'s' if len(m) > 1 else ''}")]
    for k, v in m.items():
        out += str_lines(k.encode(), "key ")
        if isinstance(v, bool):
            out.append(line(b"\xc3" if v else b"\xc2", f"    {'true' if v else 'false'}"))
        elif isinstance(v, int):
            out += uint_lines(v, "    ", varies.get(k))
        else:
            out += str_lines(v.encode(), "    ", varies.get(k))
    if msgpack.packb(m) != data:
        raise ValueError("map re-encodes differently; extend map_lines")
    return out


def envelope_lines(env, indent=""):
    """Envelope v1 with field offsets, in ferry's fixed layout: the compact form a producer writes (attempt as
    a fixint) or the storage form ferryd delivers (attempt as uint 32 at +29). Keys and headers are fixstr."""
    e = f.decode_envelope(env)
    out = [line(env[0:1], f"{indent}+0   fixarray, {env[0] & 0x0F} elements: envelope v1"),
           line(env[1:2], f"{indent}+1   [0] version: 1"),
           line(env[2:4], f"{indent}+2   [1] id: bin 8, 16 bytes"),
           line(env[4:20], f"{indent}     the message id"),
           line(env[20:29], f"{indent}+20  [2] timestamp_us: {e['timestamp_us']} (uint 64)")]
    if env[29] == 0xCE:
        attempt = f"{indent}+29  [3] attempt: {e['attempt']} (uint 32: storage form, patched by ferryd)"
        out.append(line(env[29:34], attempt))
        pos = 34
    else:
        out.append(line(env[29:30], f"{indent}+29  [3] attempt: {e['attempt']} (positive fixint)"))
        pos = 30
    if e["key"] is None:
        out.append(line(env[pos:pos + 1], f"{indent}+{pos:<3} [4] key: nil (no key)"))
        pos += 1
    else:
        out += fixstr_lines(env, pos, f"{indent}+{pos:<3} [4] key: ")
        pos += 1 + (env[pos] & 0x1F)
    if env[pos] & 0xF0 != 0x80:
        raise ValueError("examples write headers as a fixmap")
    pairs = env[pos] & 0x0F
    plural = "" if pairs == 1 else "s"
    out.append(line(env[pos:pos + 1], f"{indent}+{pos:<3} [5] headers: fixmap, {pairs} pair{plural}"))
    pos += 1
    for _ in range(pairs):
        for what in ("name", "value"):
            out += fixstr_lines(env, pos, f"{indent}    {what}: ")
            pos += 1 + (env[pos] & 0x1F)
    if pos < len(env):  # a topic's message: origin and sequence
        if env[0] & 0x0F != 8:
            raise ValueError("trailing bytes after the headers")
        for n, what in ((6, "origin"), (7, "sequence")):
            size = 1 if env[pos] < 0x80 else {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}[env[pos]]
            value = e[what]
            out.append(line(env[pos:pos + size], f"{indent}+{pos:<3} [{n}] {what}: {value}"))
            pos += size
    if pos != len(env):
        raise ValueError("examples use envelopes of 6 elements, or 8 with origin and sequence")
    return out


def fixstr_lines(data, pos, prefix):
    """A fixstr at data[pos]: its header byte, then its text."""
    if data[pos] & 0xE0 != 0xA0:
        raise ValueError("examples write keys and headers as fixstr")
    n = data[pos] & 0x1F
    return [line(data[pos:pos + 1], f"{prefix}fixstr, {n} bytes")] + text_lines(data[pos + 1:pos + 1 + n])


def block_lines(block):
    """A block (docs/protocol.md, "The block"): the header [2, count], then per entry its envelope and its
    payload as bin. Examples keep to fixint counts and bin 8 payloads."""
    entries = f.decode_block(block)
    count = len(entries)
    if block[:3] != bytes([0x92, 0x02, count]) or count > 0x7F:
        raise ValueError("examples use a fixint count")
    out = [line(block[:3], f"block header [2, {count}]: fixarray 2, tag 2, count {count}")]
    pos = 3
    for n, (fields, payload) in enumerate(entries, 1):
        _, end = f.decode_envelope_prefix(block, pos)
        out.append(f"# entry {n} of {count}: envelope, {end - pos} bytes")
        out += envelope_lines(block[pos:end])
        pos = end
        if block[pos] != 0xC4:
            raise ValueError("examples use payloads under 256 bytes (bin 8)")
        out.append(line(block[pos:pos + 2], f"payload: bin 8, {len(payload)} bytes"))
        out += text_lines(payload)
        pos += 2 + len(payload)
    return out


def token_lines(tokens, names, what):
    """A tokens frame, 8 bytes per line, each with its (varies: NAME); `what` may name the entry as {n}."""
    return [line(tokens[8 * i:8 * i + 8], f"{what.format(n=i + 1)} (varies: {name})")
            for i, name in enumerate(names)]


def raw_lines(b, comment):
    """Bytes 16 per line, the comment on the first line only."""
    return [line(b[:16], comment)] + [" ".join(f"{x:02x}" for x in b[i:i + 16]) for i in range(16, len(b), 16)]


def show(direction, frames, parts):
    """One multipart message: `parts` is a list of (label, lines) per frame."""
    verb = frames[0].decode()
    out = [f"# {direction}: {verb}, {len(frames)} frame{'s' if len(frames) > 1 else ''}"]
    for n, (frame, (label, lines)) in enumerate(zip(frames, parts)):
        out.append(f"# frame {n}: {label}, {len(frame)} bytes")
        out += lines
    return out


def verb_part(frame):
    return ("verb", text_lines(frame))


def queue_part(frame):
    return ("queue", text_lines(frame))


def main():
    ctx = zmq.Context.instance()
    sockets = {}
    for name in ("producer", "consumer", "producer-v2", "consumer-v2", "subscriber"):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(sys.argv[1])
        sockets[name] = s

    def recv(name):
        if not sockets[name].poll(5000):
            raise SystemExit(f"no reply on {name}")
        return sockets[name].recv_multipart()

    blocks = {}
    msg = f.Message("jobs", b"hello", id=bytes.fromhex("018fd3abc2007000800005a3c19e2f04"),
                    timestamp_us=1717243200000417)  # example 1
    env = f.encode_envelope(msg)
    msg2 = f.Message("orders", b'{"total":42}', id=bytes.fromhex("018fd3abc2007000800015a3c19e2f04"),
                     timestamp_us=1717243200000562, key="customer-17",
                     headers={"content-type": "application/json", "trace-id": "4bf92f3577b34da6"})  # example 2

    def client(name, step, frames, parts):
        sockets[name].send_multipart(frames)
        blocks.setdefault(step, []).extend(show(f"{name} -> ferryd", frames, parts))

    def server(name, step, parts_of):
        frames = recv(name)
        blocks.setdefault(step, []).extend(show(f"ferryd -> {name}", frames, parts_of(frames)))
        return frames

    def token_part(label, token, what):
        return (label, [line(token, what)])

    def send_parts(queue):
        return [verb_part(b"SEND"), queue_part(queue), ("envelope", envelope_lines(env)),
                ("payload", text_lines(msg.payload))]

    def deliver_parts(token_name):
        return lambda fr: [verb_part(fr[0]), queue_part(fr[1]),
                           token_part("tokens", fr[2], f"one token per message (varies: {token_name})"),
                           ("envelope", envelope_lines(fr[3])), ("payload", text_lines(fr[4]))]

    def error_parts(fr):
        return [verb_part(fr[0]), ("code", text_lines(fr[1])), ("text", text_lines(fr[2]))]

    client("producer", "send", [b"SEND", b"jobs", env, msg.payload], send_parts(b"jobs"))
    server("producer", "send", lambda fr: [verb_part(fr[0]), ("ids", [line(fr[1], "the id, confirmed")])])

    client("producer", "refuse", [b"SEND", b"jobs.dlq", env, msg.payload], send_parts(b"jobs.dlq"))
    server("producer", "refuse", lambda fr: [verb_part(fr[0]), ("id", [line(fr[1], "the id, refused")]),
                                             ("code", text_lines(fr[2])), ("text", text_lines(fr[3]))])

    options = msgpack.packb({"prefetch": 10})
    client("consumer", "consume", [b"CONSUME", b"jobs", options],
           [verb_part(b"CONSUME"), queue_part(b"jobs"), ("options", map_lines(options))])
    server("consumer", "consume", lambda fr: [verb_part(fr[0]), queue_part(fr[1]),
                                              ("subscription", map_lines(fr[2], {"instance": "instance"}))])
    first = server("consumer", "consume", deliver_parts("token 1"))

    client("consumer", "nack", [b"NACK", b"jobs", first[2], b"busy"],
           [verb_part(b"NACK"), queue_part(b"jobs"),
            token_part("token", first[2], "the token delivered above (varies: token 1)"),
            ("reason", text_lines(b"busy"))])
    second = server("consumer", "nack", deliver_parts("token 2"))

    client("consumer", "ack", [b"ACK", b"jobs", second[2]],
           [verb_part(b"ACK"), queue_part(b"jobs"),
            token_part("tokens", second[2], "the token of the redelivery (varies: token 2)")])

    client("producer", "error", [b"ACK", b"jobs", second[2]],
           [verb_part(b"ACK"), queue_part(b"jobs"),
            token_part("tokens", second[2], "the same token (varies: token 2)")])
    server("producer", "error", error_parts)

    client("consumer", "ping", [b"PING"], [verb_part(b"PING")])
    server("consumer", "ping", lambda fr: [verb_part(fr[0]), ("instance", [
        line(fr[1], f"{int.from_bytes(fr[1], 'big')} (varies: instance)")])])

    # --- protocol v2 --------------------------------------------------------------------------------------
    hello = msgpack.packb({"version": 2})
    client("producer-v2", "hello", [b"HELLO", hello], [verb_part(b"HELLO"), ("options", map_lines(hello))])
    server("producer-v2", "hello", lambda fr: [verb_part(fr[0]), ("settings", map_lines(
        fr[1], {"instance": "instance", "server": "server"}))])

    block = f.encode_block([msg, msg2])  # the block of example 6
    client("producer-v2", "send-v2", [b"SEND", b"orders", block],
           [verb_part(b"SEND"), queue_part(b"orders"), ("block", block_lines(block))])
    server("producer-v2", "send-v2", lambda fr: [verb_part(fr[0]), ("ids", [
        line(fr[1][:16], "the id of example 1, confirmed"), line(fr[1][16:], "the id of example 2, confirmed")])])

    options = msgpack.packb({"prefetch": 10, "version": 2})
    client("consumer-v2", "consume-v2", [b"CONSUME", b"orders", options],
           [verb_part(b"CONSUME"), queue_part(b"orders"), ("options", map_lines(options))])
    server("consumer-v2", "consume-v2", lambda fr: [verb_part(fr[0]), queue_part(fr[1]), (
        "subscription", map_lines(fr[2], {"instance": "instance"}))])
    delivered = server("consumer-v2", "consume-v2", lambda fr: [
        verb_part(fr[0]), queue_part(fr[1]),
        ("tokens", token_lines(fr[2], ["token 3", "token 4"], "the token of entry {n}")),
        ("block", block_lines(fr[3]))])

    client("consumer-v2", "ack-v2", [b"ACK", b"orders", delivered[2]],
           [verb_part(b"ACK"), queue_part(b"orders"),
            ("tokens", token_lines(delivered[2], ["token 3", "token 4"], "the token of entry {n}"))])

    cut = block[:-7]  # the block above without the last 7 bytes of its second payload
    first_end = 3 + len(env) + 2 + len(msg.payload)
    client("producer-v2", "bad-block", [b"SEND", b"orders", cut],
           [verb_part(b"SEND"), queue_part(b"orders"), ("block", [
               line(cut[:3], "block header [2, 2]"),
               *raw_lines(cut[3:first_end], f"entry 1, {first_end - 3} bytes, as above"),
               *raw_lines(cut[first_end:], "entry 2 cut short: its envelope, c4 0c, then 5 of the 12 bytes")])])
    server("producer-v2", "bad-block", error_parts)

    # --- a durable topic ----------------------------------------------------------------------------------
    published = f.encode_block([msg])  # example 1's message, in a block of one
    client("producer-v2", "publish", [b"PUBLISH", b"events", published],
           [verb_part(b"PUBLISH"), ("topic", text_lines(b"events")), ("block", block_lines(published))])
    server("producer-v2", "publish", lambda fr: [verb_part(fr[0]), ("ids", [line(fr[1], "the id, confirmed")])])

    options = msgpack.packb({"name": "audit", "from": "first", "prefetch": 10, "version": 2})
    client("subscriber", "subscribe", [b"SUBSCRIBE", b"events", options],
           [verb_part(b"SUBSCRIBE"), ("topic", text_lines(b"events")), ("options", map_lines(options))])
    server("subscriber", "subscribe", lambda fr: [verb_part(fr[0]), queue_part(fr[1]), (
        "subscription", map_lines(fr[2], {"instance": "instance"}))])
    topic_delivery = server("subscriber", "subscribe", lambda fr: [
        verb_part(fr[0]), queue_part(fr[1]),
        ("tokens", token_lines(fr[2], ["token 5"], "the token of entry {n}")),
        ("block", block_lines(fr[3]))])

    client("subscriber", "ack-topic", [b"ACK", b"events@audit", topic_delivery[2]],
           [verb_part(b"ACK"), queue_part(b"events@audit"),
            ("tokens", token_lines(topic_delivery[2], ["token 5"], "the token of entry {n}"))])

    for step, lines in blocks.items():
        print(f"<!-- {step} -->")
        print("```exchange")
        print("\n".join(lines))
        print("```")
        print()
    for s in sockets.values():
        s.close()


if __name__ == "__main__":
    main()
