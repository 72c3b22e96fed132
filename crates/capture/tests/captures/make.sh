#!/bin/sh
# Makes the real captures in this folder: a client and a server (peers.py)
# exchange the messages of requests.jsonl and responses.jsonl on loopback,
# framed by `switchboard encode`, while tcpdump or dumpcap records them.
# Needs root, tcpdump (4.99 or later: `-i any` writes cooked v2), dumpcap
# (Debian's wireshark-common, which tshark pulls in) and the debug binary
# (`cargo build`; SB=path/to/switchboard for another). Run from anywhere:
# sh make.sh, or sh make.sh NAME... for only those captures.
set -eu
cd "$(dirname "$0")"
SB=${SB:-../../../../target/debug/switchboard}
ONLY="$*"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# name, port, framing, recorder (tcpdump or dumpcap), then its interfaces and
# options; the file and the filter on the port are added here.
capture() {
    name=$1 port=$2 framing=$3 recorder=$4
    shift 4
    case " $ONLY " in
    "  " | *" $name "*) ;;
    *) return 0 ;;
    esac
    "$SB" encode --raw --framing "$framing" < requests.jsonl > "$TMP/req"
    "$SB" encode --raw --framing "$framing" < responses.jsonl > "$TMP/resp"
    case $recorder in
    tcpdump) tcpdump -q -U "$@" -w "$name" "tcp port $port" 2>/dev/null & ;;
    # dumpcap's -f before the first -i is every interface's filter (after an
    # -i, only that interface's).
    dumpcap) dumpcap -q -f "tcp port $port" "$@" -w "$name" 2>/dev/null & ;;
    esac
    dump=$!
    sleep 2
    python3 peers.py "$port" "$framing" "$TMP/req" "$TMP/resp"
    sleep 1
    kill -INT "$dump"
    wait "$dump" || true
}

capture lo-ethernet-ascii4.pcap 47011 ascii4 tcpdump -i lo
capture lo-ethernet-nanos-ascii4.pcap 47012 ascii4 tcpdump -i lo --time-stamp-precision nano
capture any-cooked2-binary2.pcap 47013 binary2 tcpdump -i any
capture any-cooked1-ascii4.pcap 47014 ascii4 tcpdump -i any -y LINUX_SLL
# Two interfaces in one pcapng file: every segment is seen on both.
capture lo-any-dumpcap-binary2.pcapng 47015 binary2 dumpcap -i lo -i any
