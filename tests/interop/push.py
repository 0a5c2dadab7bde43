"""Sends a fixed set of messages to a ferry worker pool, then waits for stdin to close.

usage: push.py ENDPOINT [v1|v2] [batch]
Sends in wire v2 (the default) or v1, one message at a time or, with `batch`, through Pusher.send_batch (a
run of one topic per frame). Prints one `msg ...` line per message sent (ferry_py.describe), then `sent N`
and `frames F` (frame sets sent). It keeps the socket open until stdin closes: brokerless delivery has no
acknowledgement, so the test tells us when everything arrived rather than trusting linger
(docs/protocol.md, "Delivery at exit")."""

import sys

import ferry_py as f


def messages():
    yield f.Message("jobs", b"hello")
    yield f.Message("orders", b'{"total":42}', key="customer-17",
                    headers={"trace-id": "4bf92f3577b34da6", "content-type": "application/json"})
    yield f.Message("blobs", bytes(range(256)), key="cl\u00e9-\u00fc", attempt=3)
    yield f.Message("orders.eu", b"", headers={"empty": ""})
    yield f.Message("big", b"x" * 100_000, key="k" * 200, headers={f"h{i:02}": f"v{i}" for i in range(20)})
    yield f.Message("old", b"negative timestamp", timestamp_us=-1234, attempt=70_000)
    yield f.Message("", b"empty topic")
    for i in range(100):
        yield f.Message("bulk", f"bulk-{i}".encode())


def main():
    wire = f.WIRE_V1 if "v1" in sys.argv[2:] else f.WIRE_V2
    pusher = f.Pusher(connect=[sys.argv[1]], wire=wire)
    sent = list(messages())
    if "batch" in sys.argv[2:]:
        pusher.send_batch(sent)
    else:
        for msg in sent:
            pusher.send(msg)
    for msg in sent:
        print(f.describe(msg), flush=True)
    print(f"sent {len(sent)}", flush=True)
    print(f"frames {pusher.frames}", flush=True)
    sys.stdin.read()
    pusher.close()


if __name__ == "__main__":
    main()
