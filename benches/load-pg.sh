#!/usr/bin/env bash
# Receive-saga load through the switch on PostgreSQL (fsync on), and in the
# same run pgbench's simple-update TPS on the same server: the database's own
# ceiling on this machine. Everything runs here: a throwaway cluster, two
# banksims, the switch and walletsim share the cores.
#
#   benches/load-pg.sh [RATE...]        default rates: 2000 5000 10000 15000
#   DURATION=10 CONNECTIONS=4 PGBENCH_SECONDS=20 benches/load-pg.sh 8000
#   STATEMENTS=1 benches/load-pg.sh 5000   # also where PostgreSQL's time goes,
#                                          # per statement (pg_stat_statements)
#   SWITCH=/tmp/switchboard-before benches/load-pg.sh 6000   another build of the
#                                          # switch, for before/after comparisons
#   NO_BUILD=1 benches/load-pg.sh 6000      # the release binaries as they are,
#                                          # while the sources change
#
# For each rate the switch is started afresh, so its store counters (printed
# at shutdown) belong to that run alone. Columns: answered receives/s and
# latency (open loop, from when each request was due), then per receive:
# WAL fsyncs, WAL bytes and transactions at the server, round trips,
# statements and batched commands of the switch's store, and CPU
# milliseconds spent by the switch, by PostgreSQL and by the two bank
# simulators.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace -q
B=$(realpath "${CARGO_TARGET_DIR:-target}")/release
SWITCH=${SWITCH:-$B/switchboard}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-4}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-20}
RATES=("${@:-2000 5000 10000 15000}")
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
# Or the server found on PATH (a build installed elsewhere).
[ -x "$PGBIN/pg_ctl" ] || PGBIN=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
[ -x "$PGBIN/pg_ctl" ] || { echo "no PostgreSQL server binaries: apt-get install -y postgresql" >&2; exit 1; }
# The client programs, beside the server's or on PATH.
pg_program() { if [ -x "$PGBIN/$1" ]; then echo "$PGBIN/$1"; else command -v "$1" || echo "$1"; fi; }
PSQL=$(pg_program psql) PGBENCH=$(pg_program pgbench)

work=$(mktemp -d)
chmod 755 "$work"
pids=()
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    as_pg "$PGBIN/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$work/pg"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
extra=""
[ "${STATEMENTS:-0}" = 1 ] && extra="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
as_pg "$PGBIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w -o \
    "-p $PORT -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
     -c max_connections=100 -c shared_buffers=256MB -c max_wal_size=4GB $extra" start >/dev/null
psql() { "$PSQL" -h 127.0.0.1 -p "$PORT" -U postgres -X -q -t -A "$@"; }
psql -c "CREATE DATABASE pgbench" -c "CREATE DATABASE switchboard"

# The database's ceiling: pgbench's simple update (-N), 8 clients, 2 threads.
"$PGBENCH" -h 127.0.0.1 -p "$PORT" -U postgres -i -q pgbench >/dev/null 2>&1
pgbench_tps=$("$PGBENCH" -h 127.0.0.1 -p "$PORT" -U postgres -N -c 8 -j 2 \
    -T "$PGBENCH_SECONDS" pgbench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
echo "pgbench -N -c 8 -j 2 -T $PGBENCH_SECONDS: $pgbench_tps TPS (PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}'), fsync on)"

$B/banksim --listen 127.0.0.1:7001 --admin 127.0.0.1:7101 --institution 48020000 --bin 622202 \
    --accounts 200 --balance 100000000000 --seed 1 >"$work/bank-a.log" 2>&1 & pids+=($!); bank_a=$!
$B/banksim --listen 127.0.0.1:7002 --admin 127.0.0.1:7102 --institution 01050000 --bin 621700 \
    --accounts 200 --balance 100000000000 --seed 2 >"$work/bank-b.log" 2>&1 & pids+=($!); bank_b=$!
sed "s#^path = \"switchboard.db\"#url = \"postgres://postgres@127.0.0.1:$PORT/switchboard\"#" \
    examples/switchboard.toml >"$work/switch.toml"
grep -q "^url = " "$work/switch.toml" || { echo "examples/switchboard.toml has no store path line" >&2; exit 1; }
postmaster=$(head -1 "$work/pg/data/postmaster.pid")

# CPU ticks (user + system) of processes, children that exited included.
ticks() { for p in "$@"; do awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0; done | awk '{s+=$1} END {print s+0}'; }
pg_ticks() { ticks "$postmaster" $(pgrep -P "$postmaster" | tr '\n' ' '); }
pgstat() { psql -d switchboard -F ' ' -c "SELECT (SELECT wal_sync FROM pg_stat_wal), (SELECT wal_bytes FROM pg_stat_wal), (SELECT xact_commit FROM pg_stat_database WHERE datname = 'switchboard')"; }
hz=$(getconf CLK_TCK)

common=(--switch 127.0.0.1:5000 --payer-admin 127.0.0.1:7101 --receiver-admin 127.0.0.1:7102
        --duration "$DURATION" --connections "$CONNECTIONS" --freeze-amount 10000000 --json)
echo "rate,answered_per_s,p50_us,p99_us,p999_us,max_us,codes,fsyncs_per_receive,wal_bytes_per_receive,xacts_per_receive,round_trips_per_receive,statements_per_receive,commands_per_batch,cpu_ms_per_1000_switch,cpu_ms_per_1000_postgres,cpu_ms_per_1000_banks"
sleep 0.5
for rate in ${RATES[@]}; do
    "$SWITCH" serve --config "$work/switch.toml" >"$work/switch.log" 2>&1 &
    switch=$!
    sleep 1.5
    read -r wal0 walb0 xact0 < <(pgstat)
    sw0=$(ticks $switch); pg0=$(pg_ticks); banks0=$(ticks $bank_a $bank_b)
    out=$($B/walletsim load "${common[@]}" --rate "$rate")
    sw1=$(ticks $switch); pg1=$(pg_ticks); banks1=$(ticks $bank_a $bank_b)
    read -r wal1 walb1 xact1 < <(pgstat)
    kill -TERM $switch; wait $switch || true
    stats=$(grep -o 'PgStats {[^}]*}' "$work/switch.log" | tail -1)
    python3 - "$out" "$rate" "$stats" $((wal1-wal0)) $((walb1-walb0)) $((xact1-xact0)) $((sw1-sw0)) $((pg1-pg0)) $((banks1-banks0)) "$hz" <<'EOF'
import json, re, sys
r = json.loads(sys.argv[1]); rate = sys.argv[2]
stats = dict((k, int(v)) for k, v in re.findall(r'(\w+): (\d+)', sys.argv[3]))
wal, wal_bytes, xact, sw, pg, banks, hz = (int(x) for x in sys.argv[4:11])
n = max(1, r.get("codes", {}).get("00", 0))
ms = lambda t: round(t * 1000 / hz / n * 1000, 1)
print(",".join(str(x) for x in [rate, round(r["throughput_per_s"]), r["latency_us_p50"], r["latency_us_p99"],
    r["latency_us_p999"], r["latency_us_max"], "|".join(f"{k}:{v}" for k, v in r["codes"].items()),
    round(wal / n, 3), round(wal_bytes / n), round(xact / n, 2), round(stats.get("round_trips", 0) / n, 2),
    round(stats.get("statements", 0) / n, 2),
    round(stats.get("commands", 0) / max(1, stats.get("batches", 1)), 1), ms(sw), ms(pg), ms(banks)]))
EOF
done
if [ "${STATEMENTS:-0}" = 1 ]; then
    echo "PostgreSQL time by statement (all rates): calls, mean execution and planning in us, share of the total"
    psql -d switchboard -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
    psql -d switchboard -F ' | ' -c "
        SELECT calls, round((total_exec_time / greatest(calls, 1) * 1000)::numeric, 1),
               round((total_plan_time / greatest(plans, 1) * 1000)::numeric, 1),
               round((100 * (total_exec_time + total_plan_time)
                     / greatest(sum(total_exec_time + total_plan_time) OVER (), 0.001))::numeric, 1) || '%',
               left(regexp_replace(query, '\s+', ' ', 'g'), 90)
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'switchboard')
        ORDER BY total_exec_time + total_plan_time DESC LIMIT 12"
fi
