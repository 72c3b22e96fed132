#!/bin/sh
# Makes the real captures in this folder: a client and a server (peers.py)
# exchange the messages of requests.jsonl and responses.jsonl on loopback,
# framed by `switchboard encode`, while tcpdump records them.
# Needs root, tcpdump (4.99 or later: `-i any` writes cooked v2) and the
# debug binary (`cargo build`). Run from anywhere: sh make.sh
set -eu
cd "$(dirname "$0")"
SB=../../../../target/debug/switchboard
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# name, port, framing, then tcpdump's interface and options
capture() {
    name=$1 port=$2 framing=$3
    shift 3
    "$SB" encode --raw --framing "$framing" < requests.jsonl > "$TMP/req"
    "$SB" encode --raw --framing "$framing" < responses.jsonl > "$TMP/resp"
    tcpdump -q -U "$@" -w "$name" "tcp port $port" 2>/dev/null &
    dump=$!
    sleep 1
    python3 peers.py "$port" "$framing" "$TMP/req" "$TMP/resp"
    sleep 1
    kill -INT "$dump"
    wait "$dump" || true
}

capture lo-ethernet-ascii4.pcap 47011 ascii4 -i lo
capture lo-ethernet-nanos-ascii4.pcap 47012 ascii4 -i lo --time-stamp-precision nano
capture any-cooked2-binary2.pcap 47013 binary2 -i any
capture any-cooked1-ascii4.pcap 47014 ascii4 -i any -y LINUX_SLL
