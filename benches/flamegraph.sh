#!/usr/bin/env bash
# A flame graph of the switch under load: `benches/load.sh RATE` runs (the
# switch alone on CPU 0, receives only), `perf` records the switch's call
# stacks for RECORD seconds in the middle of it, and inferno draws them.
#
#   benches/flamegraph.sh              # 8,000 receives/s offered
#   benches/flamegraph.sh 5000         # another rate
#   OUT=/tmp/before.svg SWITCH=/tmp/switchboard-before benches/flamegraph.sh
#
# Writes target/flamegraph.svg (or OUT) and prints the load's CSV line.
# Needs `perf` (Debian: linux-perf) with access to the switch's process
# (root, or kernel.perf_event_paranoid <= 1) and inferno
# (`cargo install inferno`); builds nothing itself (load.sh's release
# binaries must be there: `cargo build --release --workspace`).
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${1:-8000}
record=${RECORD:-8}
out=${OUT:-target/flamegraph.svg}
for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "flamegraph.sh: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d)
load=
# The load (and the processes it started) goes with this script, however it ends.
trap '[ -n "$load" ] && kill "$load" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# Long enough for the switch to warm up before and to finish after the recording.
PIN=1 MODES=switch DURATION=$((record + 6)) REPORTS="$work/reports" \
    benches/load.sh "$rate" >"$work/load.out" 2>&1 &
load=$!

# load.sh builds first when the sources changed: wait for as long as it runs.
pid=
while kill -0 "$load" 2>/dev/null; do
    pid=$(pgrep -n -f "serve --config .*/switch.toml" || true)
    [ -n "$pid" ] && break
    sleep 0.5
done
[ -n "$pid" ] || { echo "flamegraph.sh: the switch did not start" >&2; cat "$work/load.out" >&2; exit 1; }
sleep 3
perf record -F 599 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" -- sleep "$record" >/dev/null 2>&1
wait "$load"

mkdir -p "$(dirname "$out")"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/folded"
inferno-flamegraph --minwidth 0.2 \
    --title "switchboard serve, ${record} s at ${rate} receives/s offered (PIN=1)" \
    <"$work/folded" >"$out"
grep -A1 '^rate' "$work/load.out" || cat "$work/load.out"
echo "flame graph: $out" >&2
