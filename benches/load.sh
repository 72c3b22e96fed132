#!/usr/bin/env bash
# Receive-saga load through the switch (embedded store, synchronous=FULL) and,
# in the same run, the one-hop floor: the same load of single credits sent
# straight to one bank simulator. Everything runs on this machine: two
# banksims, the switch and walletsim share its cores.
#
#   benches/load.sh [RATE...]        default rates: 5000 10000 20000
#   REPORTS=DIR benches/load.sh      where the CSV (load.csv, also printed), a
#                                    picture per rate and mode (load-RATE-MODE.svg)
#                                    and walletsim's whole report beside it
#                                    (load-RATE-MODE.json) go; default target/load-reports
#   DURATION=10 CONNECTIONS=4 benches/load.sh 8000
#   CAPTURE=1 benches/load.sh 5000   the switch records every link ([capture])
#   KEYS=1 benches/load.sh 5000      card data sealed at rest ([security] data_key_file)
#   MACS=1 benches/load.sh 5000      X9.19 MACs on the wallet listener and both bank links
#   MACS=aes-cmac benches/load.sh 5000   the same with AES-CMAC
#   SWITCH=/tmp/switchboard-before benches/load.sh 5000   another build of the
#                                    switch (A/B comparisons in one session;
#                                    target/pgo/switchboard is benches/pgo.sh's)
#   SIMULATORS=/tmp/sims-before benches/load.sh 5000   banksim and walletsim from
#                                    another directory (A/B comparisons of the simulators)
#   RULES=benches/risk-20.toml benches/load.sh 5000   risk rules judge every request
#   COMMIT_INTERVAL_MS=0 benches/load.sh 10000   the store's batches never wait for
#                                    the one before ([store] commit_interval_ms;
#                                    default 1.5 ms: while busy they begin 1.5 ms apart)
#   COMMIT_INTERVAL_US=1500 benches/load.sh 10000   the interval to the microsecond
#                                    ([store] commit_interval_us; not with _MS)
#   COMMIT_INTERVAL_ABOVE=0 benches/load.sh 10000   the interval applies at any rate
#                                    ([store] commit_interval_above, store commands a
#                                    second; default 10000, about 5,000 receives/s)
#   COMMIT_DELAY_US=0 benches/load.sh 10000   small batches do not wait for company
#                                    ([store] commit_delay_us; default 200)
#   DECISION_LOG=false benches/load.sh 10000   every batch commits in SQLite
#                                    ([store] decision_log; default true)
#   SWITCH_WORKERS=1 benches/load.sh 10000   the switch's tokio worker threads
#                                    (TOKIO_WORKER_THREADS for the switch alone;
#                                    default: serve's own, one fewer than
#                                    the cores with the embedded store)
#   PIN=1 benches/load.sh 5000      the switch alone on CPU 0, the simulators on CPU 1:
#                                    its throughput is then its own CPU's, not shared
#                                    with the simulators' work (needs taskset, 2+ CPUs)
#   MAX_IN_FLIGHT=256 benches/load.sh 20000   at most 256 receives outstanding: offered
#                                    far past saturation, the load is closed-loop and
#                                    the switch's best rate is measured without an
#                                    ever-growing queue (default: walletsim's 20000)
#   MODES=switch benches/load.sh 8000   only through the switch (default: switch direct)
#   NO_BUILD=1 benches/load.sh 5000   use the release binaries as they are: A/B runs
#                                    (SWITCH=, SIMULATORS=) go on while the sources change
#   METRICS=1 benches/load.sh 10000  the switch gets an admin listener (127.0.0.1:9100);
#                                    after each run through it its /metrics go to metrics-RATE-switch.txt
#                                    and how many of its store's batches took over 10, 20
#                                    and 50 ms (since it started) is printed: the writer's stalls
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace -q
B=${CARGO_TARGET_DIR:-target}/release
SWITCH=${SWITCH:-$B/switchboard}
SIMULATORS=${SIMULATORS:-$B}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-4}
RATES=("${@:-5000 10000 20000}")
REPORTS=${REPORTS:-target/load-reports}
mkdir -p "$REPORTS"
work=$(mktemp -d)
pids=()
# With PIN the switch has CPU 0 to itself and everything else shares CPU 1.
on_switch_cpu=() on_sim_cpu=()
if [ -n "${PIN:-}" ]; then
    on_switch_cpu=(taskset -c 0) on_sim_cpu=(taskset -c 1)
fi
# Waits (up to 20 s) for the processes to be gone: a switch still draining
# a saturated run's queue would hold its ports against the next run.
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$work"
}
trap cleanup EXIT

# With MACS every link has its own key, given through the environment.
bank_a_mac=() bank_b_mac=() wallet_mac=() direct_mac=()
if [ -n "${MACS:-}" ]; then
    alg=x9.19
    [ "$MACS" = aes-cmac ] && alg=aes-cmac
    export SB_WALLET_MAC=11223344556677888877665544332211
    export SB_BANK_A_MAC=0123456789ABCDEFFEDCBA9876543210
    export SB_BANK_B_MAC=FEDCBA98765432100123456789ABCDEF
    bank_a_mac=(--mac "$alg" --mac-key "$SB_BANK_A_MAC") bank_b_mac=(--mac "$alg" --mac-key "$SB_BANK_B_MAC")
    wallet_mac=(--mac "$alg" --mac-key "$SB_WALLET_MAC") direct_mac=(--mac "$alg" --mac-key "$SB_BANK_B_MAC")
fi
"${on_sim_cpu[@]}" $SIMULATORS/banksim --listen 127.0.0.1:7001 --admin 127.0.0.1:7101 --institution 48020000 --bin 622202 \
    --accounts 200 --balance 100000000000 --seed 1 "${bank_a_mac[@]}" >"$work/bank-a.log" 2>&1 & pids+=($!)
"${on_sim_cpu[@]}" $SIMULATORS/banksim --listen 127.0.0.1:7002 --admin 127.0.0.1:7102 --institution 01050000 --bin 621700 \
    --accounts 200 --balance 100000000000 --seed 2 "${bank_b_mac[@]}" >"$work/bank-b.log" 2>&1 & pids+=($!)
sed "s#path = \"switchboard.db\"#path = \"$work/switchboard.db\"#" examples/switchboard.toml >"$work/switch.toml"
if [ -n "${MACS:-}" ]; then
    sed -i -e "s#^listen = \"127.0.0.1:5000\"#&\\nmac = { algorithm = \"$alg\", key_env = \"SB_WALLET_MAC\" }#" \
        -e "s#^hosts = \\[\"127.0.0.1:7001\"\\]#&\\nmac = { algorithm = \"$alg\", key_env = \"SB_BANK_A_MAC\" }#" \
        -e "s#^hosts = \\[\"127.0.0.1:7002\"\\]#&\\nmac = { algorithm = \"$alg\", key_env = \"SB_BANK_B_MAC\" }#" "$work/switch.toml"
fi
if [ -n "${KEYS:-}" ]; then
    $B/switchboard keygen --out "$work/keys.toml" >/dev/null
    printf '\n[security]\ndata_key_file = "%s/keys.toml"\nrequire_encryption = true\n' "$work" >>"$work/switch.toml"
fi
if [ -n "${COMMIT_INTERVAL_MS:-}" ]; then
    sed -i "s#^path = \"$work/switchboard.db\"#&\ncommit_interval_ms = $COMMIT_INTERVAL_MS#" "$work/switch.toml"
fi
if [ -n "${COMMIT_INTERVAL_US:-}" ]; then
    sed -i "s#^path = \"$work/switchboard.db\"#&\ncommit_interval_us = $COMMIT_INTERVAL_US#" "$work/switch.toml"
fi
if [ -n "${COMMIT_INTERVAL_ABOVE:-}" ]; then
    sed -i "s#^path = \"$work/switchboard.db\"#&\ncommit_interval_above = $COMMIT_INTERVAL_ABOVE#" "$work/switch.toml"
fi
if [ -n "${COMMIT_DELAY_US:-}" ]; then
    sed -i "s#^path = \"$work/switchboard.db\"#&\ncommit_delay_us = $COMMIT_DELAY_US#" "$work/switch.toml"
fi
if [ -n "${DECISION_LOG:-}" ]; then
    sed -i "s#^path = \"$work/switchboard.db\"#&\ndecision_log = $DECISION_LOG#" "$work/switch.toml"
fi
if [ -n "${RULES:-}" ]; then
    sed -i "s#^\# rules_file = \"risk.toml\"#rules_file = \"$(realpath "$RULES")\"#" "$work/switch.toml"
fi
if [ -n "${CAPTURE:-}" ]; then
    printf '\n[capture]\npath = "%s/switch.pcapng"\nmax_bytes = 1073741824\nmax_files = 2\n' "$work" >>"$work/switch.toml"
fi
if [ -n "${METRICS:-}" ]; then
    printf '\n[admin]\nlisten = "127.0.0.1:9100"\n' >>"$work/switch.toml"
fi
# What ran before (a build, the last run's files) goes to the disk now, not
# during this run, where its writeback would slow the store's fsyncs.
sync
sleep 0.5
# SWITCH_WORKERS: the switch's tokio worker threads (TOKIO_WORKER_THREADS;
# `env` execs the switch, so the pid is the switch's).
"${on_switch_cpu[@]}" env ${SWITCH_WORKERS:+TOKIO_WORKER_THREADS=$SWITCH_WORKERS} \
    "$SWITCH" serve --config "$work/switch.toml" >"$work/switch.log" 2>&1 & pids+=($!)
switch_pid=$!
sleep 1
# The switch's own CPU (user + system, in clock ticks) from /proc: divided by
# the answered requests it is the CPU one receive costs the switch, a figure
# that holds up on a busy machine where throughput at saturation does not.
clk_tck=$(getconf CLK_TCK)
switch_ticks() { awk '{print $14 + $15}' "/proc/$switch_pid/stat"; }
# What the switch had the disk write (its store: WAL frames, checkpoints),
# in bytes; divided by the answered requests, the bytes one receive costs.
switch_written() { awk '/^write_bytes/ {print $2}' "/proc/$switch_pid/io"; }
# The context switches of all the switch's threads (voluntary and not):
# divided by the answered requests, how often its threads sleep and wake
# for one receive, which its CPU a receive moves with from rate to rate.
switch_switches() { cat /proc/"$switch_pid"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {t += $2} END {print t + 0}'; }
# Both bank simulators' CPU, in clock ticks: what the load costs the
# machine's other residents, which share its cores with the switch.
bank_pids=("${pids[0]}" "${pids[1]}")
banks_ticks() { cat "/proc/${bank_pids[0]}/stat" "/proc/${bank_pids[1]}/stat" | awk '{t += $14 + $15} END {print t}'; }
# The whole machine's CPU time, in clock ticks: busy (user, nice, system,
# irq, softirq, steal), stolen by the host, and all (busy, idle, iowait).
# A p99 on a machine busy at 80 % is a queue for its cores; a run that
# lost time to the host says so.
machine_ticks() { awk '/^cpu / {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, $9, busy + $5 + $6}' /proc/stat; }

common=(--switch 127.0.0.1:5000 --payer-admin 127.0.0.1:7101 --receiver-admin 127.0.0.1:7102
        --duration "$DURATION" --connections "$CONNECTIONS" --freeze-amount 10000000 --json
        --max-in-flight "${MAX_IN_FLIGHT:-20000}")
echo "rate,mode,answered_per_s,p50_us,p99_us,p999_us,max_us,codes,switch_cpu_us,switch_written_b,banks_cpu_us,walletsim_cpu_us,machine_busy_pct,machine_stolen_pct,switch_switches" | tee "$REPORTS/load.csv"
for rate in ${RATES[@]}; do
    for mode in ${MODES:-switch direct}; do
        extra=("${wallet_mac[@]}")
        [ "$mode" = direct ] && extra=(--direct 127.0.0.1:7002 "${direct_mac[@]}")
        before=$(switch_ticks) written_before=$(switch_written) banks_before=$(banks_ticks)
        switches_before=$(switch_switches)
        machine_before=$(machine_ticks)
        # walletsim's own CPU (user + system seconds) from bash's `time`.
        status=0
        out=$({ TIMEFORMAT='%3U %3S'; time "${on_sim_cpu[@]}" $SIMULATORS/walletsim load "${common[@]}" --rate "$rate" "${extra[@]}" --report "$REPORTS/load-$rate-$mode.svg" 2>"$work/walletsim.err"; } 2>"$work/walletsim.time") || status=$?
        cat "$work/walletsim.err" >&2
        [ "$status" = 0 ] || exit "$status"
        # The whole report (latency second by second too) beside its picture.
        printf '%s\n' "$out" >"$REPORTS/load-$rate-$mode.json"
        ticks=$(($(switch_ticks) - before)) written=$(($(switch_written) - written_before))
        banks=$(($(banks_ticks) - banks_before))
        switches=$(($(switch_switches) - switches_before))
        walletsim_s=$(awk '{print $1 + $2}' "$work/walletsim.time")
        machine=$(echo "$machine_before $(machine_ticks)" | awk '{all = $6 - $3; if (all > 0) printf "%.0f %.1f", 100 * ($4 - $1) / all, 100 * ($5 - $2) / all}')
        # switch_cpu_us, switch_written_b: the switch's CPU and disk writes
        # per answered request (blank for the direct mode, which does not go
        # through the switch); banks_cpu_us, walletsim_cpu_us: the
        # simulators' CPU per answered request (walletsim's includes making
        # and closing its packets); machine_busy_pct, machine_stolen_pct:
        # the share of the machine's CPU time busy, and stolen by its host,
        # during the run; switch_switches: the switch's context switches
        # per answered request.
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); n=r["answered"]; mine=sys.argv[3]!="direct" and n; cpu=round(int(sys.argv[4]) * 1e6 / int(sys.argv[5]) / n, 1) if mine else ""; wr=round(int(sys.argv[6]) / n) if mine else ""; banks=round(int(sys.argv[7]) * 1e6 / int(sys.argv[5]) / n) if n else ""; wallet=round(float(sys.argv[8]) * 1e6 / n) if n else ""; print(",".join(str(x) for x in [sys.argv[2], sys.argv[3], round(r["throughput_per_s"]), r["latency_us_p50"], r["latency_us_p99"], r["latency_us_p999"], r["latency_us_max"], "|".join(f"{k}:{v}" for k,v in r["codes"].items()), cpu, wr, banks, wallet] + (sys.argv[9].split() + ["", ""])[:2] + [round(int(sys.argv[10]) / n, 2) if mine else ""]))' "$out" "$rate" "$mode" "$ticks" "$clk_tck" "$written" "$banks" "$walletsim_s" "$machine" "$switches" \
            | tee -a "$REPORTS/load.csv"
        if [ -n "${METRICS:-}" ] && [ "$mode" != direct ]; then
            python3 - "$REPORTS/metrics-$rate-$mode.txt" <<'PY' >&2
import re, sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=5).read().decode()
open(sys.argv[1], "w").write(text)
le = {m[0]: int(float(m[1])) for m in re.findall(r'store_commit_duration_seconds_bucket\{le="([^"]+)"[^}]*\} (\S+)', text)}
n = le.get("+Inf", 0)
print(f"store batches since start: {n}, over 10 ms {n - le.get('0.01', n)}, over 20 ms {n - le.get('0.02', n)}, over 50 ms {n - le.get('0.05', n)}")
PY
        fi
    done
done
echo "CSV, pictures and reports in $REPORTS" >&2
if [ -n "${CAPTURE:-}" ]; then
    # What the switch recorded; it logs packets dropped from the capture at shutdown.
    kill -INT "${pids[2]}" 2>/dev/null; sleep 2
    ls -l "$work"/switch.pcapng* >&2
    grep -E "capture (written|dropped)|dropped" "$work/switch.log" >&2 || true
fi
