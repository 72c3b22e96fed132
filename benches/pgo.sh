#!/usr/bin/env bash
# The switch's binary optimized with a profile of its own work (profile-guided
# optimization): an instrumented build of `switchboard` runs the demo (every
# scenario, faults included) and load through the bank simulators on both
# stores (PostgreSQL when its server is installed), LLVM
# records which branches and calls the work takes, and the release build is
# made again with that profile, so the hot paths are laid out and inlined
# for how the switch is actually used.
#
#   benches/pgo.sh                 writes target/pgo/switchboard (about 15 min on
#                                  two cores: the instrumented build, the optimized
#                                  build and about two minutes of training)
#   SWITCH=target/pgo/switchboard NO_BUILD=1 benches/load.sh 10000   measure it
#   TRAIN_RATES="10000 20000" TRAIN_SECONDS=10 benches/pgo.sh   the load it learns from
#
# Needs the llvm-profdata of the toolchain's own LLVM: `rustup component add
# llvm-tools`. The sources are the same; only the compiler's choices differ,
# so the tests that pass for `cargo build --release` describe this binary
# too. A profile is only good for the sources it was recorded on: run the
# script again after a change. RUSTFLAGS set in the environment are kept
# and the profile's flags added to them.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/pgo
TRAIN_RATES=${TRAIN_RATES:-10000 20000}
TRAIN_SECONDS=${TRAIN_SECONDS:-10}
# Cargo would take these over RUSTFLAGS, and drop the profile's flags.
unset CARGO_ENCODED_RUSTFLAGS

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
    echo "pgo.sh: $profdata is missing; install it with: rustup component add llvm-tools" >&2
    exit 1
fi

mkdir -p "$OUT"
raw=$(realpath "$OUT")/raw

# The simulators as they are (an ordinary release build): only the switch
# is trained.
cargo build --release --workspace -q

echo "pgo.sh: building the instrumented switch ($TARGET/pgo-generate)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" CARGO_TARGET_DIR=$TARGET/pgo-generate \
    cargo build --release -q --bin switchboard
# Build scripts are instrumented too and leave their profiles behind: only
# the switch's runs below count.
rm -rf "$raw"
instrumented=$TARGET/pgo-generate/release/switchboard

echo "pgo.sh: training: the demo, then load at ${TRAIN_RATES}/s" >&2
"$instrumented" demo > "$OUT/train-demo.log" 2>&1 || {
    echo "pgo.sh: the demo failed under the instrumented build: $OUT/train-demo.log" >&2
    exit 1
}
# shellcheck disable=SC2086 # the rates are words
SWITCH=$instrumented NO_BUILD=1 MODES=switch DURATION=$TRAIN_SECONDS \
    REPORTS=$OUT/train/plain benches/load.sh $TRAIN_RATES > "$OUT/train-load.log"
# Card data sealed, MACs and risk rules: their paths are trained too, at a
# rate the instrumented build keeps up with.
SWITCH=$instrumented NO_BUILD=1 MODES=switch DURATION=5 KEYS=1 MACS=aes-cmac \
    RULES=benches/risk-20.toml REPORTS=$OUT/train/secured benches/load.sh 5000 >> "$OUT/train-load.log"
# The PostgreSQL store's paths when a server is installed (`load-pg.sh`
# starts a throwaway cluster of its own); untrained, they would be built
# as code that never runs.
if ls /usr/lib/postgresql/*/bin/pg_ctl > /dev/null 2>&1 || command -v pg_ctl > /dev/null; then
    SWITCH=$instrumented NO_BUILD=1 DURATION=5 PGBENCH_SECONDS=2 \
        benches/load-pg.sh 3000 >> "$OUT/train-load.log"
else
    echo "pgo.sh: no PostgreSQL server (apt-get install -y postgresql): the PostgreSQL store is not trained" >&2
fi
if ! ls "$raw"/*.profraw > /dev/null 2>&1; then
    echo "pgo.sh: the training left no profile in $raw" >&2
    exit 1
fi

merged=$OUT/merged.profdata
"$profdata" merge -o "$merged" "$raw"/*.profraw
# Named by its contents: a new profile changes RUSTFLAGS, which makes cargo
# build every crate again. Under one name, the dependencies (whose
# inputs cargo does not look at again) would keep an older profile.
profile=$(realpath "$OUT")/switchboard-$(sha256sum "$merged" | cut -c1-16).profdata
rm -f "$OUT"/switchboard-*.profdata
mv "$merged" "$profile"
echo "pgo.sh: building the switch with $profile ($TARGET/pgo-use)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" CARGO_TARGET_DIR=$TARGET/pgo-use \
    cargo build --release -q --bin switchboard
# Beside it, then renamed: a switch running from the old file keeps it.
cp "$TARGET/pgo-use/release/switchboard" "$OUT/switchboard.new"
mv -f "$OUT/switchboard.new" "$OUT/switchboard"
echo "pgo.sh: $OUT/switchboard (trained: $OUT/train-demo.log, $OUT/train-load.log)"
