"""Checks ferry_py against the hex examples of docs/protocol.md.

usage: doc_examples.py PATH/TO/protocol.md
For each example: the Python decoder turns the hex back into the listed fields, and the Python encoder
turns the fields into exactly the hex. Each row of "Envelopes a decoder must also accept" must decode to
the fields of example 1. Prints `examples N variants M ok`; exits 1 with the differences otherwise."""

import re
import sys

import ferry_py as f

FRAME_NAMES = {"frame 0": "topic", "frame 1": "envelope", "frame 2": "payload",
               "envelope in storage form": "storage"}


def parse(text):
    """[(fields dict with 'header' as a list, {section: bytes})] and [(variation, before, after)]."""
    examples, variants = [], []
    lines = text.splitlines()
    i = 0
    in_variants = False
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            in_variants = line.startswith("### Envelopes a decoder must also accept")
        if in_variants and line.startswith("|"):
            groups = re.findall(r"`([^`]*)`", line)
            if len(groups) == 2:
                variants.append((line.split("|")[1].strip(), bytes.fromhex(groups[0]), bytes.fromhex(groups[1])))
        if line.strip() == "```fields":
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
            examples.append((fields, {}))
        elif line.strip() == "```hex":
            sections = examples[-1][1]
            current = None
            i += 1
            while lines[i].strip() != "```":
                l = lines[i]
                label = re.match(r"# (frame [012]|envelope in storage form)\b", l)
                if label:
                    current = FRAME_NAMES[label.group(1)]
                    sections[current] = b""
                elif not l.startswith("#"):
                    sections[current] += bytes.fromhex(l.split("#")[0])
                i += 1
        i += 1
    return examples, variants


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


def main():
    examples, variants = parse(open(sys.argv[1], encoding="utf-8").read())
    problems = []
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
        msg = f.Message(fields["topic"], fields["payload"].encode(), **want)
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
    if not examples:
        problems.append("no examples found")
    else:
        first = expected(examples[0][0])
        for name, before, after in variants:
            try:
                got = f.decode_envelope(before + first["id"] + after)
            except f.DecodeError as e:
                got = e.reason
            if got != first:
                problems.append(f"variation {name!r}: decoded {got}")
    for p in problems:
        print(p)
    print(f"examples {len(examples)} variants {len(variants)} {'ok' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
