"""Receives COUNT messages from a ferry pusher and prints every decoded field.

usage: pull.py COUNT
Binds a PULL socket on tcp://127.0.0.1:*, prints `endpoint EP` and `ready`, then one `msg ...` line per
message (wire v1 or v2, whatever arrives), checks that the ids have the documented layout and increase, and
prints `rejected N`, `frames v1=A v2=B` (well-formed frame sets of each version) and `done`. Exit codes:
0 ok, 3 timed out, 4 an id broke the layout."""

import sys
import time

import ferry_py as f


def main():
    count = int(sys.argv[1])
    puller = f.Puller(bind=["tcp://127.0.0.1:*"])
    print(f"endpoint {puller.bound[0]}", flush=True)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    bad_ids, last_id = 0, b""
    for _ in range(count):
        msg = puller.receive(max(0, int((deadline - time.monotonic()) * 1000)))
        if msg is None:
            print("timed out", flush=True)
            return 3
        print(f.describe(msg), flush=True)
        ms, version, _, variant, _ = f.id_parts(msg.id)
        if version != 7 or variant != 0b10 or abs(ms - time.time() * 1000) > 600_000 or msg.id <= last_id:
            print(f"bad id {msg.id.hex()}", flush=True)
            bad_ids += 1
        last_id = msg.id
    print(f"rejected {sum(puller.rejected.values())}", flush=True)
    print(f"frames v1={puller.frames[f.WIRE_V1]} v2={puller.frames[f.WIRE_V2]}", flush=True)
    print("done", flush=True)
    return 4 if bad_ids else 0


if __name__ == "__main__":
    sys.exit(main())
