#!/usr/bin/env bash
# End to end through two real Apache Kafka brokers, in one run: a pass-through copy (the
# ceiling), pseudopipe at_least_once and exactly_once, and the Python reference
# (bench/reference/); events/s and MB/s over a pre-filled topic, p50/p99 latency at a
# fixed rate, peak RSS of each stage. Prints one table (benches/end_to_end.rs says how
# each figure is measured).
#
#   scripts/bench-pipeline.sh [--events N] [--rate R] [--seconds S]
#                             [--baseline BINARY [--baseline-policy FILE]] [--repeat N]
#
# --baseline runs another pseudopipe build (e.g. the commit before a change, built with
# `cargo build --release`) beside this one, each right after this one's run of the same mode;
# --baseline-policy gives it the policy of its own commit when it predates the current one's
# tables. --repeat N runs the throughput phase N rounds and prints each mode's median.
#
# Installs what is missing first: the Kafka jars and Java (scripts/install-test-deps.sh),
# and the Python reference's virtual environment (bench/reference/venv.sh).
# About 5 minutes with the defaults (200,000 events, 20,000 events/s for 15 s) on 2 cores,
# plus the first build.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
while (($#)); do
    case $1 in
        --events | --rate | --seconds | --baseline | --baseline-policy | --repeat)
            (($# >= 2)) || { echo "bench-pipeline: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2")
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench-pipeline: unknown argument $1 (expected --events, --rate, --seconds, --baseline, --baseline-policy, --repeat)" >&2
            exit 2
            ;;
    esac
done

scripts/install-test-deps.sh
# Without the reference the bench still runs the other three pipelines and says why.
if python=$(bench/reference/venv.sh); then
    export PSEUDOPIPE_BENCH_PYTHON=$python
fi
cargo bench -p pseudopipe --bench end_to_end -- "${args[@]}"
