"""Subscribes to a ferry publisher and prints COUNT messages.

usage: subscribe.py ENDPOINT COUNT PREFIX...
Connects a SUB socket, subscribes to each PREFIX, prints `ready`, then one `msg ...` line per message,
`gaps N` and `done`. Exit codes: 0 ok, 3 timed out."""

import sys
import time

import ferry_py as f


def main():
    endpoint, count, prefixes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
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
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
