#!/usr/bin/env bash
# Two builds (or two settings) of the switch compared in one session, runs
# interleaved A B B A A B B A ... so that the machine's drift from minute to
# minute falls on both alike, each run one `benches/load.sh` through the
# switch at one rate. Prints every run, then each side's mean and median,
# B's ratio to A, in how many adjacent pairs B came out ahead (and how many
# were even), and the sign test's two-sided p for that split.
#
#   benches/ab.sh A_SWITCH B_SWITCH [RATE]   default rate 10000, 6 pairs
#   PAIRS=10 DURATION=10 benches/ab.sh /tmp/sw-before target/release/switchboard 10000
#   SIMULATORS_A=DIR SIMULATORS_B=DIR        banksim and walletsim per side
#                                            (default: both sides the same, SIMULATORS or
#                                            the release directory)
#   ENV_A="COMMIT_INTERVAL_MS=0" ENV_B="COMMIT_INTERVAL_MS=1" benches/ab.sh S S 10000
#                                            the same build under two settings of load.sh
#   PIN=1 MAX_IN_FLIGHT=256 benches/ab.sh A B 20000   the switch's own saturation
#                                            (passed through to load.sh, as any of its
#                                            variables are)
#   REPORTS=DIR                              where each run's load.sh reports go
#                                            (default target/ab-reports)
#
# Nothing is built: give two binaries that exist (copy a build aside before
# changing the sources). Compare the means only alongside the pairs: on a
# noisy machine a difference of a few per cent that wins 5 of 10 pairs is
# noise.
set -euo pipefail
self=$(realpath "$0")
if [ $# -lt 2 ]; then
    sed -n '2,25p' "$self" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
for build in "$1" "$2"; do
    [ -x "$build" ] || { echo "ab.sh: $build is not an executable" >&2; exit 2; }
done
# The binaries as given from where the script was called; it runs from the
# repository's root.
A=$(realpath "$1") B=$(realpath "$2") RATE=${3:-10000}
cd "$(dirname "$self")/.."
PAIRS=${PAIRS:-6}
release=${CARGO_TARGET_DIR:-target}/release
SIMULATORS_A=${SIMULATORS_A:-${SIMULATORS:-$release}}
SIMULATORS_B=${SIMULATORS_B:-${SIMULATORS:-$release}}
REPORTS=${REPORTS:-target/ab-reports}
mkdir -p "$REPORTS"
runs="$REPORTS/ab.csv"

# A B, then B A: the order within each pair alternates.
order=()
for ((i = 0; i < PAIRS; i++)); do
    if ((i % 2 == 0)); then order+=(A B); else order+=(B A); fi
done

echo "side,pair,rate,answered_per_s,p50_us,p99_us,switch_cpu_us,machine_busy_pct,banks_cpu_us,walletsim_cpu_us,switch_switches" |
    tee "$runs"
n=0
for side in "${order[@]}"; do
    pair=$((n / 2 + 1))
    n=$((n + 1))
    if [ "$side" = A ]; then
        build=$A sims=$SIMULATORS_A settings=${ENV_A:-}
    else
        build=$B sims=$SIMULATORS_B settings=${ENV_B:-}
    fi
    # shellcheck disable=SC2086 # the settings are words of VAR=value
    line=$(env $settings NO_BUILD=1 MODES=switch SWITCH="$build" SIMULATORS="$sims" \
        REPORTS="$REPORTS/$side-$pair" benches/load.sh "$RATE" 2>"$REPORTS/$side-$pair.log" |
        grep -E "^$RATE,switch," || true)
    if [ -z "$line" ]; then
        echo "ab.sh: run $n ($side) printed no result; see $REPORTS/$side-$pair.log" >&2
        exit 1
    fi
    # load.sh's columns: rate,mode,answered_per_s,p50_us,p99_us,p999_us,max_us,codes,
    # switch_cpu_us,switch_written_b,banks_cpu_us,walletsim_cpu_us,machine_busy_pct,
    # machine_stolen_pct,switch_switches
    echo "$line" | awk -F, -v side="$side" -v pair="$pair" \
        '{ print side "," pair "," $1 "," $3 "," $4 "," $5 "," $9 "," $13 "," $11 "," $12 "," $15 }' |
        tee -a "$runs"
    # The ports of the run before are let go before the next one binds them.
    sleep 1
done

# Means, medians, B/A, and the pairs B won (more answered, lower p99, less
# CPU, fewer context switches).
awk -F, '
    NR == 1 { next }
    {
        k = $1; c[k]++
        ans[k, c[k]] = $4; p99[k, c[k]] = $6; cpu[k, c[k]] = $7; cs[k, c[k]] = $11
        sa[k] += $4; sp[k] += $6; sc[k] += $7; ss[k] += $11
        pa[$2, k] = $4; pp[$2, k] = $6; pc[$2, k] = $7; ps[$2, k] = $11; last = $2
    }
    function ratio(b, a) { return a == 0 ? "n/a" : sprintf("%.3f", b / a) }
    # The sign test: how likely a split of the pairs that differ at least
    # this uneven is when neither side is better (two-sided, pairs even left out).
    function sign_p(ahead, behind,    n, k, i, tail, term) {
        n = ahead + behind; k = ahead > behind ? ahead : behind
        if (n == 0) return 1
        term = 1; for (i = 0; i < n; i++) term /= 2          # C(n, 0) / 2^n
        tail = 0
        for (i = 0; i <= n; i++) {
            if (i >= k) tail += term
            term = term * (n - i) / (i + 1)                   # C(n, i + 1) / 2^n
        }
        return 2 * tail > 1 ? 1 : 2 * tail
    }
    function pairs_text(ahead, behind, pairs) {
        return sprintf("%d of %d%s, sign test p %.2f", ahead, pairs,
            pairs - ahead - behind ? sprintf(" (%d even)", pairs - ahead - behind) : "",
            sign_p(ahead, behind))
    }
    function median(arr, side, n,    i, j, t, v) {
        for (i = 1; i <= n; i++) v[i] = arr[side, i] + 0
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    END {
        if (!c["A"] || !c["B"]) exit 1
        for (i = 1; i <= last; i++) {
            if ((i, "A") in pa && (i, "B") in pa) {
                pairs++
                wa += pa[i, "B"] > pa[i, "A"]; wp += pp[i, "B"] < pp[i, "A"]; wc += pc[i, "B"] < pc[i, "A"]
                la += pa[i, "B"] < pa[i, "A"]; lp += pp[i, "B"] > pp[i, "A"]; lc += pc[i, "B"] > pc[i, "A"]
                ws += ps[i, "B"] < ps[i, "A"]; ls += ps[i, "B"] > ps[i, "A"]
            }
        }
        printf "\n%-24s %15s %15s %8s %s\n", "", "A mean (median)", "B mean (median)", "B/A", "pairs B ahead"
        printf "%-24s %7.0f (%5.0f) %7.0f (%5.0f) %8s %s\n", "answered/s",
            sa["A"] / c["A"], median(ans, "A", c["A"]), sa["B"] / c["B"], median(ans, "B", c["B"]),
            ratio(sa["B"] / c["B"], sa["A"] / c["A"]), pairs_text(wa, la, pairs)
        printf "%-24s %7.1f (%5.1f) %7.1f (%5.1f) %8s %s\n", "p99, ms",
            sp["A"] / c["A"] / 1000, median(p99, "A", c["A"]) / 1000, sp["B"] / c["B"] / 1000,
            median(p99, "B", c["B"]) / 1000, ratio(sp["B"] / c["B"], sp["A"] / c["A"]), pairs_text(wp, lp, pairs)
        printf "%-24s %7.1f (%5.1f) %7.1f (%5.1f) %8s %s\n", "switch CPU/receive, us",
            sc["A"] / c["A"], median(cpu, "A", c["A"]), sc["B"] / c["B"], median(cpu, "B", c["B"]),
            ratio(sc["B"] / c["B"], sc["A"] / c["A"]), pairs_text(wc, lc, pairs)
        printf "%-24s %7.2f (%5.2f) %7.2f (%5.2f) %8s %s\n", "switches/receive",
            ss["A"] / c["A"], median(cs, "A", c["A"]), ss["B"] / c["B"], median(cs, "B", c["B"]),
            ratio(ss["B"] / c["B"], ss["A"] / c["A"]), pairs_text(ws, ls, pairs)
    }' "$runs"
