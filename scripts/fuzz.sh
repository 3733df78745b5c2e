#!/usr/bin/env bash
# Fuzzes the record path: any bytes through ingest's transform (decode, policy) and the
# sink's leak guard, under the default policy (target fuzz/fuzz_targets/record_path.rs,
# invariants in fuzz/src/invariants.rs). Installs cargo-fuzz when it is missing, seeds
# the corpus with the simulator's valid and malformed events, then runs libFuzzer with
# bounds on time per input, memory and single allocations; prints libFuzzer's final stats.
#
#   scripts/fuzz.sh [--seconds N]          # default 600 (10 minutes)
#
# A failing input lands in fuzz/artifacts/record_path/. Make it a regression: copy it to
# fuzz/regressions/ under a name saying what broke; `cargo test -p pseudonymize --test
# hostile_input` replays every file there, so CI does without cargo-fuzz.
#
# cargo-fuzz builds with sanitizer flags that need nightly features; RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them (its rust-std ships the AddressSanitizer runtime).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
while (($#)); do
    case $1 in
        --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "fuzz: unknown argument $1 (expected --seconds)" >&2; exit 2 ;;
    esac
done

# The version this script was written against; --locked builds it with its own lock file.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
export RUSTC_BOOTSTRAP=1

corpus=fuzz/corpus/record_path
dictionary=fuzz/corpus/record_path.dict
(cd fuzz && cargo run --quiet --example seed_corpus -- "${corpus#fuzz/}" "${dictionary#fuzz/}")

# -timeout: seconds one input may take (a hang); -rss_limit_mb: the whole process;
# -malloc_limit_mb: one allocation, far above what a 64 KiB input (-max_len) justifies.
cargo fuzz run record_path "$corpus" -- \
    -dict="$dictionary" \
    -max_total_time="$seconds" \
    -max_len=65536 \
    -timeout=5 \
    -rss_limit_mb=2048 \
    -malloc_limit_mb=64 \
    -print_final_stats=1
