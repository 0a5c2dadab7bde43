"""Sends malformed frame sets of wire v1 and v2, framed by valid messages, to a ferry receiver.

usage: malformed.py ENDPOINT
Prints `case NAME REASON` per frame set in the order sent (REASON is the decode_error name of
docs/protocol.md, `none` for a valid message), checks that ferry_py's own decoder gives the same reason,
prints `sent N` and keeps the socket open until stdin closes. Exit codes: 0 ok, 5 ferry_py disagreed."""

import sys

import msgpack

import ferry_py as f

ID = bytes.fromhex("018fd3abc2007000800005a3c19e2f04")
TS = 1717243200000417


def env(*fields):
    return msgpack.packb(list(fields), use_bin_type=True)


def valid(name, wire):
    return f.to_frames(f.Message("jobs", name.encode(), key=name), wire=wire)


def v2(block, topic=b"jobs"):
    return [topic + b"\0" + block]


def v2_cases(good):
    entry = good + b"\xc4\x01p"  # envelope, payload "p" as bin 8
    yield "v2 empty frame", "no_separator", [b""]
    yield "v2 topic without 00", "no_separator", [b"jobs"]
    yield "v2 split without 00", "no_separator", [b"jobs", good]
    yield "v2 topic too long", "topic_too_long", v2(b"\x92\x02\x01" + entry, b"t" * 256)
    yield "v2 255 bytes without 00", "no_separator", [b"t" * 255]
    yield "v2 256 bytes without 00", "topic_too_long", [b"t" * 256]
    yield "v2 no block", "truncated", v2(b"")
    yield "v2 header not an array", "bad_header", v2(b"\x02\x01" + entry)
    yield "v2 header of 3", "bad_header", v2(b"\x93\x02\x01\x01" + entry)
    yield "v2 tag 1", "bad_header", v2(b"\x92\x01\x01" + entry)
    yield "v2 count 0", "bad_header", v2(b"\x92\x02\x00" + entry)
    yield "v2 count 0 ending the frame", "bad_header", v2(b"\x92\x02\x00")
    yield "v2 negative count", "bad_header", v2(b"\x92\x02\xff" + entry)
    yield "v2 count as str", "bad_header", v2(b"\x92\x02\xa1\x31" + entry)
    yield "v2 count 65537", "bad_header", v2(b"\x92\x02\xce\x00\x01\x00\x01" + entry)
    yield "v2 count cut", "truncated", v2(b"\x92\x02\xcd\x01")
    yield "v2 count 65536 in a 42-byte block", "truncated", v2(b"\x92\x02\xce\x00\x01\x00\x00" + entry)
    yield "v2 count one too many", "truncated", v2(b"\x92\x02\x02" + entry)
    yield "v2 count one too few", "batch_count", v2(b"\x92\x02\x01" + entry + entry)
    yield "v2 byte after the last entry", "batch_count", v2(b"\x92\x02\x01" + entry + b"\xc0")
    yield "v2 payload as str", "bad_payload", v2(b"\x92\x02\x01" + good + b"\xa1p")
    yield "v2 payload cut", "truncated", v2(b"\x92\x02\x01" + good + b"\xc4\x05hel")
    yield "v2 bin 32 longer than the frame", "truncated", v2(b"\x92\x02\x01" + good + b"\xc6\xff\xff\xff\xff")
    yield "v2 envelope cut", "truncated", v2(b"\x92\x02\x01" + good[:20])
    yield "v2 bad envelope in a batch", "unknown_version", v2(b"\x92\x02\x02" + entry + env(2, ID, TS, 0, None, {}) + b"\xc4\x00")
    yield "v2 envelope too large", "envelope_too_large", v2(b"\x92\x02\x01" + env(1, ID, TS, 0, None, {"h": "v" * 70_000}) + b"\xc4\x00")
    yield "v2 split header with a payload", "bad_payload", v2(b"\x92\x02\x01" + entry) + [b"payload"]
    yield "v2 split header of 2", "bad_header", v2(b"\x92\x02\x02" + good + good) + [b"payload"]
    yield "v2 00 inside the topic", "bad_header", v2(b"\x92\x02\x01" + entry, b"ord\0ers")


def cases():
    good = f.encode_envelope(f.Message("jobs", b"", id=ID, timestamp_us=TS))
    yield "before", "none", valid("before", f.WIRE_V1)
    yield "four frames", "frame_count", [b"jobs", good, b"payload", b"extra"]
    yield "five frames", "frame_count", [b"jobs", good, b"payload", b"extra", b"more"]
    yield "not msgpack", "not_an_array", [b"jobs", b"\xc1", b"p"]
    yield "empty envelope", "truncated", [b"jobs", b"", b"p"]
    yield "truncated envelope", "truncated", [b"jobs", good[:20], b"p"]
    yield "bad byte in a field", "bad_field", [b"jobs", good[:20] + b"\xc1" + good[21:], b"p"]
    yield "array of 5", "not_an_array", [b"jobs", env(1, ID, TS, 0, None), b"p"]
    yield "version 2", "unknown_version", [b"jobs", env(2, ID, TS, 0, None, {}), b"p"]
    yield "15-byte id", "bad_id", [b"jobs", env(1, ID[:15], TS, 0, None, {}), b"p"]
    yield "all-zero id", "bad_id", [b"jobs", env(1, bytes(16), TS, 0, None, {}), b"p"]
    yield "id as str", "bad_id", [b"jobs", env(1, "0123456789abcdef", TS, 0, None, {}), b"p"]
    yield "timestamp as str", "bad_field", [b"jobs", env(1, ID, "now", 0, None, {}), b"p"]
    yield "negative attempt", "bad_field", [b"jobs", env(1, ID, TS, -1, None, {}), b"p"]
    yield "key as bin", "bad_field", [b"jobs", env(1, ID, TS, 0, b"key", {}), b"p"]
    yield "header value nil", "bad_field", [b"jobs", env(1, ID, TS, 0, None, {"a": None}), b"p"]
    yield "boolean origin", "bad_field", [b"jobs", env(1, ID, TS, 0, None, {}, True, 1), b"p"]
    yield "trailing bytes", "trailing_bytes", [b"jobs", good + b"\x00", b"p"]
    yield "topic too long", "topic_too_long", [b"t" * 256, good, b"p"]
    yield "key too long", "key_too_long", [b"jobs", env(1, ID, TS, 0, "k" * 256, {}), b"p"]
    yield "65 headers", "too_many_headers", [b"jobs", env(1, ID, TS, 0, None, {str(i): "" for i in range(65)}), b"p"]
    yield "envelope too large", "envelope_too_large", [b"jobs", env(1, ID, TS, 0, None, {"h": "v" * 70_000}), b"p"]
    yield from v2_cases(good)
    yield "after", "none", valid("after", f.WIRE_V2)


def main():
    pusher = f.Pusher(connect=[sys.argv[1]])
    disagreements = 0
    n = 0
    for name, reason, frames in cases():
        try:
            f.from_frames(frames)
            got = "none"
        except f.DecodeError as e:
            got = e.reason
        if got != reason:
            print(f"ferry_py says {got} for {name!r}, expected {reason}", flush=True)
            disagreements += 1
        pusher.send_frames(frames)
        print(f"case {name.replace(' ', '_')} {reason}", flush=True)
        n += 1
    print(f"sent {n}", flush=True)
    sys.stdin.read()
    pusher.close()
    return 5 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
