#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while: scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]
#
# The targets (fuzz/fuzz_targets) call plain functions (`corecast_net::fuzz::frames`,
# `corecast_engine::fuzz::config`, `corecast_services::resp::fuzz::requests`); the checked-in
# corpus in fuzz/corpus/<target> seeds them and is replayed on stable by
# services/tests/fuzz_corpus.rs. New inputs go to target/fuzz-corpus/<target> (not checked in);
# a crash leaves its input in fuzz/artifacts/<target>: fix the bug, then copy the input into
# fuzz/corpus/<target> so the replay keeps it fixed.
#
# cargo-fuzz needs nightly flags; with the one stable toolchain here, RUSTC_BOOTSTRAP=1 enables
# them. Installs cargo-fuzz with cargo if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames config resp)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "target/fuzz-corpus/$t"
    echo "== fuzzing $t for ${seconds}s" >&2
    (cd fuzz && cargo fuzz run -O --sanitizer none "$t" "../target/fuzz-corpus/$t" "corpus/$t" \
        -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1) 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread|panicked)" || true
    if ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "fuzz: $t crashed; inputs in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
echo "fuzz: no crash in ${targets[*]}"
