"""Publishes a stream with deliberate sequence gaps to a ferry subscriber.

usage: publish.py [v1|v2] [batch]
Binds an XPUB socket on tcp://127.0.0.1:*, prints `endpoint EP` and `origin N`, waits for one
subscription, publishes in wire v2 (the default) or v1, one message at a time or, with `batch`, each
stretch between two gaps through Publisher.publish_batch; prints one `msg ...` line per message,
`published N` and `frames F`, then keeps the socket open until stdin closes. Exit codes: 0 ok, 3 no
subscriber came."""

import sys

import ferry_py as f

# (topic, payload) to publish, or (topic, n) to skip n sequence numbers: a high-water-mark drop.
SCRIPT = [
    ("ticks.a", b"a1"), ("ticks.a", b"a2"), ("ticks.b", b"b1"), ("ticks.a", b"a3"),
    ("ticks.a", 2),  # gap of 2
    ("ticks.a", b"a6"), ("ticks.b", b"b2"), ("other.x", b"filtered out"),
    ("ticks.b", 1),  # gap of 1
    ("ticks.b", b"b4"), ("ticks.a", b"a7"),
]


def main():
    wire = f.WIRE_V1 if "v1" in sys.argv[1:] else f.WIRE_V2
    batch = "batch" in sys.argv[1:]
    pub = f.Publisher(bind=["tcp://127.0.0.1:*"], wire=wire)
    print(f"endpoint {pub.bound[0]}", flush=True)
    print(f"origin {pub.origin}", flush=True)
    if not pub.wait_for_subscriptions(1, 20_000):
        print("no subscriber", flush=True)
        return 3
    published, pending = [], []

    def flush():
        pub.publish_batch(pending)
        published.extend(pending)
        pending.clear()

    for topic, what in SCRIPT:
        if isinstance(what, int):
            flush()
            pub.skip(topic, what)
            continue
        msg = f.Message(topic, what, key="k-" + topic)
        if batch:
            pending.append(msg)
        else:
            pub.publish(msg)
            published.append(msg)
    flush()
    for msg in published:
        print(f.describe(msg), flush=True)
    print(f"published {len(published)}", flush=True)
    print(f"frames {pub.frames}", flush=True)
    sys.stdin.read()
    pub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
