"""Scenarios for tests/interop_ferryd_test.cpp: ferry_py's durable producer and consumer against a real ferryd.

usage: durable.py SCENARIO ENDPOINT QUEUE [ARGS...]

  produce                  sends a fixed set of messages (several SENDs), sends some again with the same ids,
                           prints `msg ...` per message (ferry_py.describe), `confirmed N`, `reconfirmed N`
  resend COUNT             prints `ready`, waits for a `go` line on stdin, sends COUNT messages with a 200 ms
                           confirm timeout, prints `resent N` once it has sent copies, waits for `continue`,
                           then flushes and prints `confirmed N` and `resent N`
  consume COUNT            prints `ready` once subscribed, takes COUNT messages (printing `msg ...` lines),
                           acknowledges them in groups, then waits for STATS to show them all acknowledged
  nack-reject              takes 3 messages: NACKs the one whose payload is `bad`, REJECTs its redelivery,
                           ACKs the rest; checks the dead letter with DLQ list, replays it, ACKs it again
  silent                   holds a delivery without answering until a `wake` line on stdin (so ferryd declares
                           it dead), then answers it, and once idle goes silent again until the next `wake`
  stats KEY=VALUE...       polls STATS until the queue's fields have these values; prints `stat KEY VALUE`

Every wait is bounded; on failure a scenario prints what it saw and exits with 3."""

import sys
import time

import ferry_py as f

WAIT_MS = 20_000


def fail(what):
    print(f"FAILED: {what}", flush=True)
    sys.exit(3)


def describe_delivery(d):
    print(f.describe(d.message), flush=True)


def queue_stats(conn, queue):
    return conn.stats()["queues"].get(queue, {})


def wait_stats(conn, queue, want, timeout_ms=WAIT_MS):
    """Polls STATS until every (key, value) of `want` matches; returns the last per-queue map."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        got = queue_stats(conn, queue)
        if all(got.get(k) == v for k, v in want.items()):
            return got
        if time.monotonic() >= deadline:
            fail(f"STATS of {queue} is {got}, wanted {want}")
        conn.poll(20)  # keeps heartbeats going while we wait


def print_stats(stats):
    for k in sorted(stats):
        print(f"stat {k} {stats[k]}", flush=True)


def messages(queue):
    yield f.Message(queue, b"hello")
    yield f.Message(queue, b'{"total":42}', key="customer-17",
                    headers={"trace-id": "4bf92f3577b34da6", "content-type": "application/json"})
    yield f.Message(queue, bytes(range(256)), key="cl\u00e9-\u00fc", attempt=3)  # ferryd ignores the attempt
    yield f.Message(queue, b"", headers={"empty": ""})
    yield f.Message(queue, b"x" * 100_000, key="k" * 200, headers={f"h{i:02}": f"v{i}" for i in range(20)})
    yield f.Message(queue, b"negative timestamp", timestamp_us=-1234)
    yield f.Message(queue, b"stream fields", origin=(1 << 64) - 1, sequence=1 << 40)
    for i in range(60):
        yield f.Message(queue, f"bulk-{i}".encode(), key=f"key-{i % 3}")


def produce(endpoint, queue):
    p = f.DurableProducer(endpoint, max_batch=7)  # several SENDs, and a partial last one
    welcome = p.hello()
    if welcome["version"] != 1 or welcome["max_batch"] != f.MAX_BATCH:
        fail(f"WELCOME {welcome}")
    sent = list(messages(queue))
    p.send(queue, sent)
    if not p.flush(WAIT_MS) or p.refused:
        fail(f"unconfirmed {len(p.unconfirmed)}, refused {p.refused}")
    for m in sent:
        print(f.describe(m), flush=True)
    print(f"confirmed {len(p.confirmed)}", flush=True)
    # What a producer does when it has no answer: the same messages again, same ids. Each is confirmed again
    # and stored once.
    again = sent[:5]
    p.confirmed.clear()
    p.send(queue, again)
    if not p.flush(WAIT_MS) or sorted(p.confirmed) != sorted(m.id for m in again):
        fail(f"resent copies: confirmed {len(p.confirmed)} of {len(again)}")
    print(f"reconfirmed {len(p.confirmed)}", flush=True)
    print_stats(wait_stats(p, queue, {"confirmed": len(sent), "deduplicated": len(again), "depth": len(sent)}))


def resend(endpoint, queue, count):
    p = f.DurableProducer(endpoint, confirm_timeout_ms=200)
    p.hello()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        fail("expected go")
    sent = [f.Message(queue, f"resend-{i}".encode()) for i in range(count)]
    p.send(queue, sent)
    # ferryd is stopped (SIGSTOP): nothing is confirmed, and overdue messages are sent again.
    deadline = time.monotonic() + WAIT_MS / 1000
    while p.resent < count:
        if time.monotonic() >= deadline:
            fail(f"resent only {p.resent}")
        p.flush(50)
    print(f"resent {p.resent}", flush=True)
    if sys.stdin.readline().strip() != "continue":
        fail("expected continue")
    if not p.flush(WAIT_MS) or p.refused:
        fail(f"unconfirmed {len(p.unconfirmed)}, refused {p.refused}")
    print(f"confirmed {len(set(p.confirmed))}", flush=True)
    print(f"total_resent {p.resent}", flush=True)
    for m in sent:
        print(f.describe(m), flush=True)
    print_stats(wait_stats(p, queue, {"confirmed": count, "deduplicated": p.resent, "depth": count}))


def consume(endpoint, queue, count):
    c = f.DurableConsumer(endpoint, queue, prefetch=16)
    options = c.start()
    if options["prefetch"] != 16:
        fail(f"CONSUMING {options}")
    print("ready", flush=True)
    pending = []
    received = 0
    deadline = time.monotonic() + WAIT_MS / 1000
    while received < count:
        if time.monotonic() >= deadline:
            fail(f"received {received} of {count}")
        d = c.receive(50)
        if d is None:
            # Never wait for more with answers held back: the next message of a key waits for this answer.
            c.ack(*pending)
            pending.clear()
            continue
        describe_delivery(d)
        received += 1
        pending.append(d)
        if len(pending) == 5:  # several tokens in one ACK
            c.ack(*pending)
            pending.clear()
    c.ack(*pending)
    print_stats(wait_stats(c, queue, {"depth": 0, "acked": count, "in_flight": 0}))
    c.cancel()


def nack_reject(endpoint, queue):
    c = f.DurableConsumer(endpoint, queue, prefetch=4)
    c.start()
    print("ready", flush=True)
    acked = 0
    bad_id = None
    while acked < 2 or bad_id is None:
        d = c.receive(WAIT_MS)
        if d is None:
            fail("no delivery")
        m = d.message
        print(f"delivery {m.id.hex()} attempt {m.attempt} payload {m.payload.decode()}", flush=True)
        if m.payload != b"bad":
            c.ack(d)
            acked += 1
        elif m.attempt == 1:
            c.nack(d, "temporary failure")
        else:
            c.reject(d, "permanent failure")
            bad_id = m.id
    listing = wait_dlq(c, queue, 1)
    for entry in listing["messages"]:
        h = entry["headers"]
        print(f"dlq queue {listing['queue']} id {entry['id'].hex()} payload {entry['payload'].decode()} "
              f"attempts {h.get('ferry-attempts')} source {h.get('ferry-source-queue')}", flush=True)
        print(f"dlq reason {h.get('ferry-dead-letter-reason')}", flush=True)
    print_stats(wait_stats(c, queue, {"depth": 0, "acked": 2, "nacked": 1, "redelivered": 1, "dead_lettered": 1}))
    # Replay: back in the queue without the ferry-* headers, delivered from attempt 1 again.
    print(f"replayed {c.dlq_replay(queue)}", flush=True)
    d = c.receive(WAIT_MS)
    if d is None or d.message.id != bad_id:
        fail(f"replayed message not delivered: {d}")
    print(f"replay attempt {d.message.attempt} headers {len(d.message.headers)}", flush=True)
    c.ack(d)
    wait_dlq(c, queue, 0)
    wait_stats(c, queue, {"depth": 0, "acked": 3})
    print("done", flush=True)


def wait_dlq(conn, queue, depth):
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        listing = conn.dlq_list(queue)
        if listing["depth"] == depth and len(listing["messages"]) == depth:
            return listing
        if time.monotonic() >= deadline:
            fail(f"DLQ list {listing}")
        conn.poll(20)


def silent(endpoint, queue):
    c = f.DurableConsumer(endpoint, queue, prefetch=1)
    c.start()
    print("ready", flush=True)
    d = c.receive(WAIT_MS)
    if d is None:
        fail("no delivery")
    print(f"held {d.message.id.hex()} attempt {d.message.attempt}", flush=True)
    # Silent: no PING, no answer, until the test says so. ferryd declares this consumer dead meanwhile.
    if sys.stdin.readline().strip() != "wake":
        fail("expected wake")
    c.ack(d)  # a token of a dropped subscription: ERROR not_consuming, and we subscribe again
    if not c.wait_for(lambda: c.resubscribed >= 1 and c.subscriptions >= 2, WAIT_MS):
        fail(f"no resubscription; errors {c.errors}")
    print(f"errors {' '.join(code for code, _ in c.errors)}", flush=True)
    print("idle", flush=True)
    # Silent again, holding nothing: only the heartbeat's empty ACK reveals that ferryd dropped us.
    if sys.stdin.readline().strip() != "wake":
        fail("expected wake")
    d = c.receive(WAIT_MS)
    if d is None:
        fail(f"nothing delivered after waking; resubscribed {c.resubscribed}, errors {c.errors}")
    c.ack(d)
    print(f"got {d.message.id.hex()} attempt {d.message.attempt} resubscribed {c.resubscribed}", flush=True)
    wait_stats(c, queue, {"depth": 0})
    c.cancel()
    print("done", flush=True)


def stats(endpoint, queue, conditions):
    want = {}
    for c in conditions:
        k, _, v = c.partition("=")
        want[k] = int(v)
    conn = f.ForwarderClient(endpoint)
    print_stats(wait_stats(conn, queue, want))


def main():
    scenario, endpoint, queue, *args = sys.argv[1:]
    if scenario == "produce":
        produce(endpoint, queue)
    elif scenario == "resend":
        resend(endpoint, queue, int(args[0]))
    elif scenario == "consume":
        consume(endpoint, queue, int(args[0]))
    elif scenario == "nack-reject":
        nack_reject(endpoint, queue)
    elif scenario == "silent":
        silent(endpoint, queue)
    elif scenario == "stats":
        stats(endpoint, queue, args)
    else:
        fail(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
