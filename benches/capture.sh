#!/usr/bin/env bash
# Decodes the same capture with `switchboard capture decode --json` and with
# tshark's ISO 8583 dissector (`tshark -T json`), in the same run, and
# reports messages per second, the ratio and each decoder's peak memory.
#
# The captures are real traffic, recorded by the bank simulator: `banksim
# --framing binary2 --capture FILE` answers the single credits that `walletsim
# load --direct` sends it over 4 connections at RATE requests/s for the time
# N messages take (N/2 requests, N/2 answers; a few more when the rate is
# rounded up), and writes every frame, read and sent, to the pcapng file: one
# TCP segment per frame. binary2 because Wireshark's iso8583 dissector reads
# only 2-byte binary length prefixes.
# A capture whose recorder dropped packets is refused. The captures are kept
# under $TARGET_DIR/capture-bench/ and reused; delete them to record anew.
#
# Each round times, with /usr/bin/time (wall seconds, peak RSS), standard
# output to /dev/null:
#   switchboard capture decode --json FILE          on every size
#   tshark -r FILE -o "iso8583.len_endian:Big endian" \
#       -o "iso8583.binencode:Bin data not encoded" -d tcp.port==P,iso8583 -T json
#                                                   on the smallest size only
#                                                   (TSHARK_ALL=1: on every size)
# Before timing, both decoders count the capture's messages in a separate
# pass (ours: its summary, which must show no errors and no skipped bytes;
# tshark: the MTIs of the packets it dissects with no error or warning) and
# the counts must agree, so both decode every field of every message.
#
#   benches/capture.sh                    sizes 100000 1000000, 3 rounds
#   ROUNDS=2 RATE=15000 benches/capture.sh 20000
#   TSHARK_ALL=1 benches/capture.sh 100000 1000000
#
# Everything shares this machine's cores; the two decoders run one at a time,
# interleaved round by round.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-20000}
PORT=${PORT:-7301}
ADMIN=${ADMIN:-7311}
TSHARK_ALL=${TSHARK_ALL:-0}
SIZES=(${@:-100000 1000000})
TARGET_DIR=${CARGO_TARGET_DIR:-target}
B=$TARGET_DIR/release
DIR=$TARGET_DIR/capture-bench
# The dissector's defaults are a little-endian length and binary fields (the
# bitmaps) in hex ASCII; the switchboard dialect sends a big-endian length and
# binary bitmaps. (tshark's stderr, a warning when run as root, is kept out
# of the output.)
TSHARK=(tshark -o "iso8583.len_endian:Big endian" -o "iso8583.binencode:Bin data not encoded"
        -d "tcp.port==$PORT,iso8583")

for tool in tshark /usr/bin/time python3; do
    command -v "$tool" >/dev/null || { echo "capture.sh: $tool is needed" >&2; exit 2; }
done
cargo build --release --workspace -q
mkdir -p "$DIR"
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# record N FILE: N messages (about) of credits and their answers into FILE.
record() {
    local n=$1 file=$2 seconds=$(( ($1 / 2 + RATE - 1) / RATE ))
    local rate=$(( ($1 / 2 + seconds - 1) / seconds ))
    echo "== recording $file: $((n / 2)) credits at $rate/s for $seconds s"
    $B/banksim --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --institution 01050000 \
        --bin 621700 --accounts 200 --balance 100000000000 --seed 2 --framing binary2 \
        --capture "$file.part" >"$work/bank.log" 2>&1 & local bank=$!
    pids+=($bank)
    sleep 0.5
    # --switch is not used with --direct; the one bank pays and receives.
    $B/walletsim load --direct 127.0.0.1:$PORT --switch 127.0.0.1:9 \
        --payer-admin 127.0.0.1:$ADMIN --receiver-admin 127.0.0.1:$ADMIN \
        --framing binary2 --rate "$rate" --duration "$seconds" --connections 4 --json \
        >"$work/load.json"
    kill -INT $bank
    wait $bank || true
    if ! grep -q 'capture written' "$work/bank.log" || grep -q 'dropped=[1-9]' "$work/bank.log"; then
        cat "$work/bank.log" >&2
        echo "capture.sh: the recording of $file is not whole" >&2
        exit 1
    fi
    mv "$file.part" "$file"
}

# ours_count FILE / tshark_count FILE: the messages each decoder finds.
ours_count() {
    $B/switchboard capture decode --json "$1" | tail -n 1 |
        python3 -c 'import json,sys; s=json.load(sys.stdin)["summary"]; assert s["errors"]==0 and s["skipped_bytes"]==0, s; print(s["messages"])'
}
# tshark's: only packets it dissects without an error or a warning (a
# message it cannot read still shows its MTI).
tshark_count() {
    "${TSHARK[@]}" -r "$1" -Y 'iso8583 && !_ws.malformed && !(_ws.expert.severity >= warning)' \
        -T fields -e iso8583.mti 2>/dev/null | tr ',' '\n' | grep -c .
}

# timed LABEL FILE CMD...: one timed run, appended to $work/results.
timed() {
    local label=$1 file=$2
    shift 2
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/stderr" ||
        { cat "$work/stderr" >&2; exit 1; }
    read -r secs rss <"$work/time"
    echo "$label $(basename "$file") $secs $rss" | tee -a "$work/results"
}

declare -A count
for n in "${SIZES[@]}"; do
    file=$DIR/credits-$n.pcapng
    [ -f "$file" ] || record "$n" "$file"
    ours=$(ours_count "$file")
    count[$n]=$ours
    line="== $(basename "$file"): $(du -h "$file" | cut -f1), switchboard counts $ours messages"
    if [ "$n" = "${SIZES[0]}" ] || [ "$TSHARK_ALL" = 1 ]; then
        theirs=$(tshark_count "$file")
        line="$line, tshark $theirs"
        if [ "$ours" != "$theirs" ]; then
            echo "$line" >&2
            echo "capture.sh: the decoders disagree on the message count" >&2
            exit 1
        fi
    fi
    echo "$line"
done

echo "== load: $(uptime | sed 's/.*load average/load average/')"
echo "decoder file seconds max_rss_kb"
for round in $(seq "$ROUNDS"); do
    for n in "${SIZES[@]}"; do
        file=$DIR/credits-$n.pcapng
        timed switchboard "$file" $B/switchboard capture decode --json "$file"
        if [ "$n" = "${SIZES[0]}" ] || [ "$TSHARK_ALL" = 1 ]; then
            timed tshark "$file" "${TSHARK[@]}" -r "$file" -T json
        fi
    done
done

echo
counts=""
for n in "${SIZES[@]}"; do counts="$counts credits-$n.pcapng=${count[$n]}"; done
python3 - "$work/results" $counts <<'PY'
import statistics, sys
counts = dict(a.split("=") for a in sys.argv[2:])
runs = {}
for line in open(sys.argv[1]):
    who, file, secs, rss = line.split()
    runs.setdefault((file, who), []).append((float(secs), int(rss)))
print(f"{'capture':<24} {'decoder':<12} {'messages':>9} {'median s':>9} {'msgs/s':>11} {'max RSS':>9}")
rate = {}
for (file, who), rs in runs.items():
    n = int(counts[file])
    secs = statistics.median(s for s, _ in rs)
    rate[(file, who)] = n / secs
    rss = max(r for _, r in rs) / 1024
    print(f"{file:<24} {who:<12} {n:>9,} {secs:>9.2f} {n / secs:>11,.0f} {rss:>7.1f} MB"
          f"   (runs: {', '.join(f'{s:.2f}' for s, _ in rs)} s)")
for (file, who), r in rate.items():
    if who == "tshark" and (file, "switchboard") in rate:
        ratio = rate[(file, "switchboard")] / r
        print(f"{file}: switchboard / tshark = {ratio:.1f}x "
              f"(target 50x: {'met' if ratio >= 50 else 'NOT met'})")
PY
