"""Subscribes to a ferry publisher and prints COUNT messages.

usage: subscribe.py ENDPOINT COUNT PREFIX...
Connects a SUB socket, subscribes to each PREFIX (`\\0` in a prefix stands for the byte 00: `orders\\0`
subscribes to exactly the topic `orders` in wire v2), prints `ready`, then one `msg ...` line per message,
`gaps N`, `rejected N`, `frames v1=A v2=B` and `done`. Exit codes: 0 ok, 3 timed out."""

import sys
import time

import ferry_py as f


def main():
    endpoint, count = sys.argv[1], int(sys.argv[2])
    prefixes = [p.encode().replace(b"\\0", b"\0") for p in sys.argv[3:]]
    sub = f.Subscriber(prefixes, connect=[endpoint])
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    for _ in range(count):
        msg = sub.receive(max(0, int((deadline - time.monotonic()) * 1000)))
        if msg is None:
            print("timed out", flush=True)
            return 3
        print(f.describe(msg), flush=True)
    print(f"gaps {sub.gaps}", flush=True)
    print(f"rejected {sum(sub.rejected.values())}", flush=True)
    print(f"frames v1={sub.frames[f.WIRE_V1]} v2={sub.frames[f.WIRE_V2]}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
