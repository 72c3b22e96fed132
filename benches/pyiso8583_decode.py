#!/usr/bin/env python3
"""pyiso8583 side of benches/decode.sh: the same decode-to-JSON work as
`switchboard decode --json`.

    python3 benches/pyiso8583_decode.py generate N > messages.jsonl
    python3 benches/pyiso8583_decode.py decode < messages.hex > decoded.jsonl
    python3 benches/pyiso8583_decode.py encode < messages.jsonl > messages.hex

`generate` writes N messages of the switchboard dialect as JSON lines, the
shape `switchboard encode` reads: freezes (0100 with a MAC in F128),
receives (0200 with F90), debits (0200 with F33 and F103) and answers (0210),
in turn, every one with its own card number, trace number and amount.

`decode` reads one hex message per line and writes one JSON object per line,
`{"mti":"0200","fields":{"2":"622202*********0001",...}}`, byte for byte what
`switchboard decode --json` writes: fields in number order, binary fields as
upper-case hex, the fields the dialect marks sensitive (2, 102, 103) masked
to their first 6 and last 4 characters. A line that does not decode is
reported on stderr with its number and the rest are decoded.

`encode` is the way back, as `switchboard encode`: JSON lines in, one
upper-case hex message per line out.
"""

import copy
import json
import sys

import iso8583

import pyiso8583_bench

# The spec benches/pyiso8583_bench.py checks against the Rust builder, with
# F128 as the dialect has it: 8 raw bytes (b8), where default_ascii has 16
# characters of text.
SPEC = copy.deepcopy(pyiso8583_bench.SPEC)
SPEC["128"] = dict(SPEC["128"], data_enc="b", max_len=8)
SENSITIVE = ("2", "102", "103")


def mask(value: str) -> str:
    """The masking of crates/iso8583/src/mask.rs."""
    n = len(value)
    head, tail = (6, 4) if n >= 13 else ((0, 4) if n > 4 else (0, 0))
    return value[:head] + "*" * (n - head - tail) + value[n - tail:]


def generate(count: int) -> None:
    out = sys.stdout
    for i in range(count):
        pan = f"622202{i:013d}"
        stan = f"{i % 1_000_000:06d}"
        rrn = f"{i:012d}"
        amount = f"{(i * 7919) % 100_000_000 + 1:012d}"
        common = {
            "2": pan, "4": amount, "7": "1123112233", "11": stan,
            "32": "01020000", "37": rrn, "49": "156",
        }
        # F90 of an answer or a receive: the original freeze's MTI, STAN, F7, F32, F33.
        original = f"0100{stan}1123112233{'01020000':0>11}{'':0>11}"
        kind = i % 4
        if kind == 0:
            mti, fields = "0100", {**common, "3": "030000", "12": "192233",
                                   "13": "1123", "25": "06", "128": "0123456789ABCDEF"}
        elif kind == 1:
            mti, fields = "0200", {**common, "3": "400000", "12": "192233", "13": "1123",
                                   "25": "00", "90": original}
        elif kind == 2:
            mti, fields = "0200", {**common, "3": "000000", "12": "192233", "13": "1123",
                                   "25": "00", "33": "03040000", "103": f"623501{i:013d}",
                                   "90": original}
        else:
            mti, fields = "0210", {**common, "3": "400000", "15": "1124", "38": "A1B2C3",
                                   "39": "00", "90": original}
        fields = {k: fields[k] for k in sorted(fields, key=int)}
        out.write(json.dumps({"mti": mti, "fields": fields}, separators=(",", ":")))
        out.write("\n")


def decode() -> int:
    out = sys.stdout
    failed = 0
    for number, line in enumerate(sys.stdin, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            doc, _ = iso8583.decode(bytes.fromhex(line), SPEC)
        except (ValueError, iso8583.DecodeError) as e:
            print(f"line {number}: {e}", file=sys.stderr)
            failed = 1
            continue
        fields = {}
        for key in sorted((k for k in doc if k.isdigit() and k != "1"), key=int):
            value = doc[key]
            fields[key] = mask(value) if key in SENSITIVE else value
        out.write(json.dumps({"mti": doc["t"], "fields": fields}, separators=(",", ":")))
        out.write("\n")
    return failed


def encode() -> int:
    out = sys.stdout
    failed = 0
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            wire, _ = iso8583.encode({"t": doc["mti"], **doc["fields"]}, SPEC)
        except (ValueError, KeyError, iso8583.EncodeError) as e:
            print(f"line {number}: {e}", file=sys.stderr)
            failed = 1
            continue
        out.write(wire.hex().upper())
        out.write("\n")
    return failed


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "generate":
        generate(int(sys.argv[2]))
    elif len(sys.argv) == 2 and sys.argv[1] in ("decode", "encode"):
        sys.exit(decode() if sys.argv[1] == "decode" else encode())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
