#!/usr/bin/env bash
# Fuzz the parsers that take user input (queueURI, trace CSV, WPA manifest, HTTP metrics JSON)
# with cargo-fuzz / libFuzzer, each target for SECONDS (default 20; CI runs the default).
#
#   hack/fuzz.sh [SECONDS] [TARGET...]
#
# Seeds are in fuzz/seeds/<target>; what libFuzzer learns goes to fuzz/corpus/<target>
# (git-ignored) so longer local runs build on earlier ones. The random seed is fixed
# (FUZZ_SEED, default 1) so that, for the same code, a run from the seeds alone (as in CI's
# clean checkout) walks the same inputs every time: CI is not red by luck, and a longer local
# run with an empty corpus covers what CI will try. FUZZ_SEED=0 picks a new seed each run. A crash stops the run and leaves
# the input in fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run -s none --dev <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(queue_uri queue_uri_secret trace_csv wpa_manifest http_metrics)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# libFuzzer's instrumentation needs unstable rustc flags: use a nightly toolchain when one is
# installed, otherwise let the stable one accept them.
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

# Rust code cannot corrupt memory without `unsafe`, so no sanitizer: the targets hunt panics,
# failed invariants and hangs. A debug build keeps overflow checks on and builds faster.
fuzz=(cargo "${toolchain[@]}" fuzz run --sanitizer none --dev)
for target in "${targets[@]}"; do
    echo "==> fuzz $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
    log="fuzz/target/fuzz-$target.log"
    mkdir -p fuzz/target
    status=0
    "${fuzz[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|thread|  left|  right|==[0-9]+== ERROR|SUMMARY)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
