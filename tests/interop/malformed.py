"""Sends malformed frame sets, framed by valid messages, to a ferry receiver.

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


def valid(name):
    return f.to_frames(f.Message("jobs", name.encode(), key=name))


def cases():
    good = f.encode_envelope(f.Message("jobs", b"", id=ID, timestamp_us=TS))
    yield "before", "none", valid("before")
    yield "one frame", "frame_count", [b"jobs"]
    yield "two frames", "frame_count", [b"jobs", good]
    yield "four frames", "frame_count", [b"jobs", good, b"payload", b"extra"]
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
    yield "after", "none", valid("after")


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
