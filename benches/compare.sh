#!/usr/bin/env bash
# Compares the switchboard codec with pyiso8583 on the same 0200 receive
# (same field values, same wire bytes): criterion's estimate for parse+build
# against pyiso8583's decode+encode round trip.
#
#   bash benches/compare.sh            # 0200 comparison (~1 minute once built)
#   PY_SECONDS=5 bash benches/compare.sh
#   BENCH_FILTER= bash benches/compare.sh   # also the 0100 benches (for RESULTS.md)
#
# Run it on a quiet machine (load < 1): numbers taken beside a compile are noise.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_SECONDS="${PY_SECONDS:-3}"
PYTHON="${PYTHON:-python3}"
BENCH_FILTER="${BENCH_FILTER-0200}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

if ! "$PYTHON" -c 'import iso8583' 2>/dev/null; then
    "$PYTHON" -m pip install -q -r benches/requirements.txt
fi

echo "== load: $(uptime | sed 's/.*load average/load average/')"
echo "== cargo bench -p switchboard-iso8583 --bench codec -- $BENCH_FILTER"
cargo bench -p switchboard-iso8583 --bench codec -- $BENCH_FILTER

estimate() { # ns/op of one criterion benchmark: the figure criterion prints (slope, else mean)
    "$PYTHON" -c 'import json,sys; e = json.load(open(sys.argv[1])); print((e.get("slope") or e["mean"])["point_estimate"])' \
        "$TARGET_DIR/criterion/0200_receive/$1/new/estimates.json"
}

echo
echo "== python3 benches/pyiso8583_bench.py --seconds $PY_SECONDS"
PY_JSON="$("$PYTHON" benches/pyiso8583_bench.py --seconds "$PY_SECONDS" --json)"

RUST_PARSE="$(estimate parse)" RUST_BUILD="$(estimate build)" \
RUST_ROUND="$(estimate parse+build)" PY_JSON="$PY_JSON" "$PYTHON" - <<'PY'
import json, os
py = json.loads(os.environ["PY_JSON"])
rust = {
    "parse / decode": float(os.environ["RUST_PARSE"]),
    "build / encode": float(os.environ["RUST_BUILD"]),
    "parse+build / decode+encode": float(os.environ["RUST_ROUND"]),
}
python = {
    "parse / decode": py["decode"]["ns_per_op"],
    "build / encode": py["encode"]["ns_per_op"],
    "parse+build / decode+encode": py["decode+encode"]["ns_per_op"],
}
print(f"0200 receive, switchboard (criterion slope) vs pyiso8583 {py['pyiso8583']} "
      f"(Python {py['python']}, median)")
print(f"{'operation':<28} {'switchboard ns':>14} {'pyiso8583 ns':>13} {'ratio':>7}")
for k in rust:
    print(f"{k:<28} {rust[k]:>14,.1f} {python[k]:>13,.0f} {python[k] / rust[k]:>6.0f}x")
r = rust["parse+build / decode+encode"]
print(f"round trips/s: switchboard {1e9 / r:,.0f}, pyiso8583 {1e9 / python['parse+build / decode+encode']:,.0f}")
print(f"target parse+build <= 500 ns: {'met' if r <= 500 else 'MISSED'} ({r:.1f} ns)")
PY
