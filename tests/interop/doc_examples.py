"""Checks ferry_py, and the Python snippet of docs/protocol.md, against the hex examples of that page.

usage: doc_examples.py PATH/TO/protocol.md
       doc_examples.py PATH/TO/protocol.md --pull COUNT
For each envelope example (a `fields` block): the Python decoder turns the hex back into the listed fields,
and the Python encoder turns the fields into exactly the hex, envelope and v1 frames. Each row of
"Envelopes a decoder must also accept" must decode to the fields of example 1. For each wire v2 example (a
`wire` block): ferry_py frames the named messages into exactly the listed frames and decodes them back, and
the page's ```python wire-v2 block (pack_v2, split_v2) does the same. Prints
`examples N variants M wire K ok`; exits 1 with the differences otherwise.

With --pull, receives COUNT frame sets on a PULL socket bound to tcp://127.0.0.1:* (printing `endpoint EP`
and `ready` first), splits each with the page's split_v2 and decodes each envelope with ferry_py, printing
one `msg ...` line per message, then `done`. Exit code 3: timed out."""

import re
import sys

import zmq

import ferry_py as f

FRAME_NAMES = {"frame 0": "topic", "frame 1": "envelope", "frame 2": "payload",
               "envelope in storage form": "storage"}


def parse(text):
    """[(fields dict with 'header' as a list, {section: bytes})], [(variation, before, after)] and
    [(wire dict, [frame bytes])]."""
    examples, variants, wire = [], [], []
    lines = text.splitlines()
    i = 0
    in_variants = False
    last = None  # the kind of the last fields or wire block: where a hex block belongs
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            in_variants = line.startswith("### Envelopes a decoder must also accept")
        if in_variants and line.startswith("|"):
            groups = re.findall(r"`([^`]*)`", line)
            if len(groups) == 2:
                variants.append((line.split("|")[1].strip(), bytes.fromhex(groups[0]), bytes.fromhex(groups[1])))
        if line.strip() in ("```fields", "```wire"):
            last = line.strip()[3:]
            fields = {"header": []}
            i += 1
            while lines[i].strip() != "```":
                name, _, value = lines[i].partition(":")
                value = value.strip()
                if name.strip() == "header":
                    fields["header"].append(tuple(value.split("=", 1)))
                else:
                    fields[name.strip()] = value
                i += 1
            if last == "fields":
                examples.append((fields, {}))
            else:
                wire.append((fields, []))
        elif line.strip() == "```hex":
            i += 1
            while lines[i].strip() != "```":
                l = lines[i]
                if last == "wire":
                    if re.match(r"# frame \d+\b", l):
                        wire[-1][1].append(b"")
                    elif not l.startswith("#"):
                        wire[-1][1][-1] += bytes.fromhex(l.split("#")[0])
                else:
                    label = re.match(r"# (frame [012]|envelope in storage form)\b", l)
                    if label:
                        current = FRAME_NAMES[label.group(1)]
                        examples[-1][1][current] = b""
                    elif not l.startswith("#"):
                        examples[-1][1][current] += bytes.fromhex(l.split("#")[0])
                i += 1
        i += 1
    return examples, variants, wire


def snippet(text):
    """The functions of the page's ```python wire-v2 block, run as it stands."""
    code = re.search(r"^```python wire-v2\n(.*?)^```", text, re.S | re.M)
    if not code:
        raise SystemExit("no ```python wire-v2 block in the page")
    namespace = {}
    exec(compile(code.group(1), "protocol.md: python wire-v2", "exec"), namespace)
    return namespace["pack_v2"], namespace["split_v2"]


def expected(fields):
    return {
        "id": bytes.fromhex(fields["id"]),
        "timestamp_us": int(fields["timestamp_us"]),
        "attempt": int(fields["attempt"]),
        "key": None if fields["key"] == "(none)" else fields["key"],
        "headers": dict(fields["header"]),
        "origin": int(fields["origin"]),
        "sequence": int(fields["sequence"]),
    }


def message_of(fields, topic=None):
    return f.Message(topic if topic is not None else fields["topic"], fields["payload"].encode(),
                     **expected(fields))


def check_envelopes(examples, variants, problems):
    for n, (fields, sections) in enumerate(examples, 1):
        want = expected(fields)
        storage = fields.get("form", "compact") == "storage"
        envelope = sections.get("storage" if storage else "envelope")
        if envelope is None:
            problems.append(f"example {n}: no envelope bytes")
            continue
        got = f.decode_envelope(envelope)
        if got != want:
            problems.append(f"example {n}: decoded {got}, listed {want}")
        msg = message_of(fields)
        if f.encode_envelope(msg, storage) != envelope:
            problems.append(f"example {n}: ferry_py encodes {f.encode_envelope(msg, storage).hex()}")
        if not storage:
            if sections.get("topic") != fields["topic"].encode() or sections.get("payload") != fields["payload"].encode():
                problems.append(f"example {n}: topic or payload frame differs from the fields")
            if f.to_frames(msg, wire=f.WIRE_V1) != [sections["topic"], sections["envelope"], sections["payload"]]:
                problems.append(f"example {n}: to_frames differs")
        ms, version, _, variant, _ = f.id_parts(want["id"])
        if version != 7 or variant != 0b10 or ms * 1000 > want["timestamp_us"]:
            problems.append(f"example {n}: the id does not follow the layout")
    first = expected(examples[0][0])
    for name, before, after in variants:
        try:
            got = f.decode_envelope(before + first["id"] + after)
        except f.DecodeError as e:
            got = e.reason
        if got != first:
            problems.append(f"variation {name!r}: decoded {got}")


def check_wire(examples, wire, pack_v2, split_v2, problems):
    for n, (spec, frames) in enumerate(wire, 1):
        where = f"wire example {n}"
        picked = [examples[int(k) - 1] for k in spec["messages"].split()]
        topic = spec["topic"]
        msgs = [message_of(fields, topic) for fields, _ in picked]
        split = spec["form"] == "split"
        made = f.batch_frames(msgs, split_payload=1 if split else f.SPLIT_PAYLOAD)
        if made != [frames]:
            problems.append(f"{where}: ferry_py writes {[[x.hex() for x in fs] for fs in made]}")
        try:
            got = [vars(m) for m in f.from_frames(frames)]
        except f.DecodeError as e:
            got = e.reason
        if got != [vars(m) for m in msgs]:
            problems.append(f"{where}: ferry_py decodes {got}")
        if len(frames) != (2 if split else 1):
            problems.append(f"{where}: {len(frames)} frames for the form {spec['form']}")
        # The page's snippet: the same envelopes and payloads as the envelope examples list.
        entries = [(sections["envelope"], sections["payload"]) for _, sections in picked]
        try:
            parts = split_v2(frames)
        except Exception as e:  # whatever the snippet raises is a finding, not a crash of the check
            parts = f"an exception: {e!r}"
        if parts != [(topic.encode(), e, p) for e, p in entries]:
            problems.append(f"{where}: split_v2 gives {parts}")
        if not split and pack_v2(topic.encode(), entries) != frames[0]:
            problems.append(f"{where}: pack_v2 writes {pack_v2(topic.encode(), entries).hex()}")


def pull(split_v2, count):
    """Receives `count` frame sets and prints their messages as split_v2 and ferry_py's envelope decoder
    read them."""
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.bind("tcp://127.0.0.1:*")
    print(f"endpoint {socket.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    print("ready", flush=True)
    for _ in range(count):
        if not socket.poll(30_000):
            print("timed out", flush=True)
            return 3
        for topic, envelope, payload in split_v2(socket.recv_multipart()):
            msg = f.Message(topic.decode("utf-8", "surrogateescape"), payload, **f.decode_envelope(envelope))
            print(f.describe(msg), flush=True)
    print("done", flush=True)
    socket.close()
    return 0


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    pack_v2, split_v2 = snippet(text)
    if sys.argv[2:3] == ["--pull"]:
        return pull(split_v2, int(sys.argv[3]))
    examples, variants, wire = parse(text)
    problems = []
    if not examples:
        problems.append("no examples found")
    else:
        check_envelopes(examples, variants, problems)
        check_wire(examples, wire, pack_v2, split_v2, problems)
    for p in problems:
        print(p)
    print(f"examples {len(examples)} variants {len(variants)} wire {len(wire)} {'ok' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
