#!/usr/bin/env bash
# Decode to JSON, a file of hex lines: `switchboard decode --json` against
# pyiso8583 + json.dumps (benches/pyiso8583_decode.py), the same input, the
# same output byte for byte (checked), each timed over the whole file, one
# process per run, rounds interleaved; the median of each is reported.
# Also `decode --json --raw --framing binary2` over the same messages as a
# file of frames, and `encode` against pyiso8583's encode.
#
#   bash benches/decode.sh                 # 200,000 messages, 3 rounds
#   N=1000000 ROUNDS=5 bash benches/decode.sh
#   CPU=1 bash benches/decode.sh           # CPU seconds (user + system), not wall-clock
#
# Installs pyiso8583 (benches/requirements.txt) into a virtualenv under the
# target directory. Run it on a quiet machine: the figures are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-200000}"
ROUNDS="${ROUNDS:-3}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WORK="$TARGET_DIR/decode-bench"
VENV="$TARGET_DIR/pyiso8583-venv"
mkdir -p "$WORK"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import iso8583' 2>/dev/null; then
    "$VENV/bin/pip" install -q -r benches/requirements.txt
fi
PY="$VENV/bin/python"

cargo build -q --release --bin switchboard
SB="$TARGET_DIR/release/switchboard"

echo "== load: $(uptime | sed 's/.*load average/load average/')"
echo "== $N messages (0100, 0200 receive, 0200 debit, 0210 in turn), switchboard dialect"
"$PY" benches/pyiso8583_decode.py generate "$N" > "$WORK/messages.jsonl"
"$SB" encode < "$WORK/messages.jsonl" > "$WORK/messages.hex"
"$SB" encode --raw --framing binary2 < "$WORK/messages.jsonl" > "$WORK/messages.bin"
echo "   $(wc -c < "$WORK/messages.hex") bytes of hex, $(wc -c < "$WORK/messages.bin") bytes of frames"

# Seconds a command took, its stdin and stdout given as files: wall-clock,
# or CPU (user + system) with CPU=1, for a machine that others share.
seconds() { # in out cmd...
    local in="$1" out="$2"
    shift 2
    /usr/bin/time -f '%e %U %S' -o "$WORK/time" "$@" < "$in" > "$out"
    if [ "${CPU:-0}" = 1 ]; then
        awk '{ printf "%.3f", $2 + $3 }' "$WORK/time"
    else
        awk '{ printf "%.3f", $1 }' "$WORK/time"
    fi
}

declare -A RUNS
run() { # name in out cmd...
    local name="$1"
    shift
    RUNS[$name]="${RUNS[$name]:-} $(seconds "$@")"
}

for round in $(seq "$ROUNDS"); do
    run py_decode "$WORK/messages.hex" "$WORK/py.jsonl" "$PY" benches/pyiso8583_decode.py decode
    run sb_decode "$WORK/messages.hex" "$WORK/sb.jsonl" "$SB" decode --json
    run sb_frames "$WORK/messages.bin" "$WORK/sb-frames.jsonl" "$SB" decode --json --raw --framing binary2
    run py_encode "$WORK/messages.jsonl" "$WORK/py.hex" "$PY" benches/pyiso8583_decode.py encode
    run sb_encode "$WORK/messages.jsonl" "$WORK/sb.hex" "$SB" encode
    echo "   round $round done"
done

# Same work: the same bytes out.
cmp "$WORK/py.jsonl" "$WORK/sb.jsonl"
cmp "$WORK/sb.jsonl" "$WORK/sb-frames.jsonl"
cmp "$WORK/py.hex" "$WORK/sb.hex"
cmp "$WORK/sb.hex" "$WORK/messages.hex"
echo "   outputs identical (decode: $(wc -l < "$WORK/sb.jsonl") JSON lines; encode: $(wc -l < "$WORK/sb.hex") hex lines)"

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { echo "$N / $1" | bc; }
echo "== load: $(uptime | sed 's/.*load average/load average/')"
echo
echo "== seconds: $([ "${CPU:-0}" = 1 ] && echo "CPU (user + system)" || echo wall-clock)"
printf '%-44s %9s %12s   %s\n' "decode to JSON / encode, $N messages" "median s" "messages/s" "runs (s)"
for name in py_decode sb_decode sb_frames py_encode sb_encode; do
    label=$(case $name in
        py_decode) echo "pyiso8583 decode + json.dumps" ;;
        sb_decode) echo "switchboard decode --json (hex lines)" ;;
        sb_frames) echo "switchboard decode --json --raw (frames)" ;;
        py_encode) echo "pyiso8583 json.loads + encode" ;;
        sb_encode) echo "switchboard encode" ;;
    esac)
    m=$(echo "${RUNS[$name]}" | median)
    printf '%-44s %9s %12s  %s\n' "$label" "$m" "$(rate "$m")" "${RUNS[$name]}"
done
py=$(echo "${RUNS[py_decode]}" | median)
sb=$(echo "${RUNS[sb_decode]}" | median)
pye=$(echo "${RUNS[py_encode]}" | median)
sbe=$(echo "${RUNS[sb_encode]}" | median)
echo
echo "decode to JSON: switchboard $(echo "scale=1; $py / $sb" | bc)x pyiso8583 (target: 50x)"
echo "encode:         switchboard $(echo "scale=1; $pye / $sbe" | bc)x pyiso8583"
