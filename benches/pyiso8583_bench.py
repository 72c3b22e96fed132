#!/usr/bin/env python3
"""pyiso8583 baseline for the switchboard codec benchmark (benches/codec.rs).

Encodes and decodes the same 0200 receive as the Rust bench, in the same wire
format as specs/switchboard.toml: ASCII MTI, binary primary and secondary
bitmaps, ASCII LLVAR for fields 2 and 32, fixed-length ASCII for the others
(F90 n42 on the secondary bitmap). The spec is pyiso8583's ``default_ascii``
with both bitmaps switched to binary (``"data_enc": "b"``, 8 bytes).

Checks first that pyiso8583 builds exactly the bytes our Rust builder does
(EXPECTED_HEX, from ``switchboard encode``), then times decode, encode and
decode+encode with time.perf_counter.

    pip install -r benches/requirements.txt
    python3 benches/pyiso8583_bench.py [--seconds 3] [--json]
"""

import argparse
import copy
import json
import statistics
import sys
import time

import iso8583
from iso8583.specs import default_ascii

SPEC = copy.deepcopy(default_ascii)
for _bitmap in ("p", "1"):
    SPEC[_bitmap] = dict(SPEC[_bitmap], data_enc="b", max_len=8)

RECEIVE_0200 = {
    "t": "0200",
    "2": "6222020200112233446",
    "3": "400000",
    "4": "000000010000",
    "7": "1123112233",
    "11": "000123",
    "12": "192233",
    "13": "1123",
    "25": "00",
    "32": "01020000",
    "37": "000000000123",
    "49": "156",
    "90": "010000012311231122330000102000000000000000",
}

# echo '{"mti":"0200","fields":{"2":"6222020200112233446",...}}' | cargo run -q -- encode
EXPECTED_HEX = (
    "30323030"  # MTI 0200
    "F238008108008000"  # primary bitmap (bit 1: secondary present)
    "0000004000000000"  # secondary bitmap (F90)
    "3139" "36323232303230323030313132323333343436"  # F2 LLVAR
    "343030303030"  # F3
    "303030303030303130303030"  # F4
    "31313233313132323333"  # F7
    "303030313233"  # F11
    "313932323333"  # F12
    "31313233"  # F13
    "3030"  # F25
    "3038" "3031303230303030"  # F32 LLVAR
    "303030303030303030313233"  # F37
    "313536"  # F49
    "303130303030303132333131323331313232333330303030"
    "313032303030303030303030303030303030"  # F90
)


def check() -> bytes:
    wire, _ = iso8583.encode(dict(RECEIVE_0200), SPEC)
    wire = bytes(wire)
    expected = bytes.fromhex(EXPECTED_HEX)
    if wire != expected:
        sys.exit(
            "pyiso8583 bytes differ from the Rust builder's:\n"
            f"  python: {wire.hex().upper()}\n  rust:   {expected.hex().upper()}"
        )
    decoded, _ = iso8583.decode(wire, SPEC)
    for key, value in RECEIVE_0200.items():
        if decoded[key] != value:
            sys.exit(f"decoded field {key}: {decoded[key]!r} != {value!r}")
    return wire


def rate(fn, seconds: float) -> float:
    """Operations per second of fn(): median of batches of ~50 ms over `seconds`."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - start >= 0.05:
            break
        batch *= 2
    per_op = []
    deadline = time.perf_counter() + seconds
    while len(per_op) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        per_op.append((time.perf_counter() - start) / batch)
    return 1.0 / statistics.median(per_op)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per benchmark")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    wire = check()
    decode, encode = iso8583.decode, iso8583.encode

    def do_decode():
        decode(wire, SPEC)

    def do_encode():
        # encode() pops "1" and adds "p"/"1" to its argument: give it a copy.
        encode(dict(RECEIVE_0200), SPEC)

    def do_round_trip():
        doc, _ = decode(wire, SPEC)
        encode(doc, SPEC)

    results = {
        "decode": rate(do_decode, args.seconds),
        "encode": rate(do_encode, args.seconds),
        "decode+encode": rate(do_round_trip, args.seconds),
    }
    if args.json:
        print(json.dumps({
            "pyiso8583": iso8583.__version__,
            "python": sys.version.split()[0],
            **{k: {"ops_per_sec": v, "ns_per_op": 1e9 / v} for k, v in results.items()},
        }))
        return
    print(f"pyiso8583 {iso8583.__version__}, Python {sys.version.split()[0]}, "
          f"0200 receive ({len(wire)} bytes)")
    print(f"{'operation':<15} {'ops/s':>12} {'us/op':>9}")
    for name, ops in results.items():
        print(f"{name:<15} {ops:>12,.0f} {1e6 / ops:>9.2f}")


if __name__ == "__main__":
    main()
