#!/usr/bin/env bash
# The chaos suite (tests/chaos.rs) at a larger scale than CI runs it: SIGKILL of ingest,
# sink or both, SIGTERM rolling restarts, three ingests with one killed and one added, the
# cloud broker down for longer than the sink's message.timeout.ms (with the stages' memory
# sampled), the on-prem broker restarted, the link to the cloud cut; through two real
# Apache Kafka brokers, in both delivery modes, with CPU pressure beside the stages (busy
# threads, as a loaded CI runner has), for one seed or several. Counts what the cloud topic
# holds (read_committed) and prints one table: seed, CPU hogs, produced, delivered, lost,
# stalled (missing from the cloud but still waiting upstream, past a stage's committed
# offset), duplicated (and the bound allowed), out of order per key, leaked, quarantined,
# wall time, the verdict; then the memory of the stages while the cloud was down.
#
#   scripts/chaos.sh [--events N] [--rate R] [--mode exactly_once|at_least_once|both]
#                    [--kills K] [--outage-seconds S] [--cut-seconds S]
#                    [--seed S | --seed A..B] [--seeds N] [--repeat N] [--cpu-hogs H]
#                    [--stall-seconds S] [--scenario NAME] [--results FILE]
#   scripts/chaos.sh --print FILE     (the tables of a results file from an earlier run)
#
# Defaults: 200,000 events per scenario at 1,500 events/s (so that producing outlasts the
# outage), 10 kills, the cloud down 120 s, the link cut 90 s, both modes, every scenario
# (sigkill, sigterm_rolling, three_ingests, cloud_broker_down, onprem_broker, link), seed
# 0, 2 CPU hogs (--cpu-hogs 0: a quiet run), and a run stops waiting for the cloud once
# nothing new has reached it nor the pseudonymized topic for 150 s (--stall-seconds).
# Seeds: --seed A..B runs every selected scenario with each seed from A to B, --seeds N
# with N seeds from --seed on; each seed draws other fault moments (and other events).
# --repeat N runs each seed N times over: the same seed replays the same faults at the
# same moments, so repeats catch what depends on the scheduling alone. To hunt a flaky
# scenario, e.g.: scripts/chaos.sh --events 20000 --rate 1000 --scenario onprem_broker
# --mode at_least_once --seed 0..9 (CI's scale; CI runs seed 0 with no hogs of its own, its runner's load beside it).
# One scenario runs at a time; about 45 minutes per seed and repeat with the defaults on
# 2 cores, plus the first build. Needs jq for the table; installs the Kafka jars and Java
# if missing (scripts/install-test-deps.sh). Exits non-zero if a scenario's verdict fails
# (lost, stalled, leaked, duplicated beyond the bound, ...); a failed scenario keeps its
# stages' logs and configs and says where (CHAOS_KEEP_LOGS=1: every one).
set -euo pipefail
cd "$(dirname "$0")/.."

# Prints the verdicts of a results file (one JSON line per scenario) as tables.
print_tables() {
    local results=$1
    echo
    # Rows of older results files have no stalled, cpu_hogs nor passed: shown as "-".
    jq -r '[.scenario, .mode, "\(.seed)\(if .chaos_seed == null then "" else " (\(.chaos_seed))" end)", (.cpu_hogs // "-"), .faults, .produced, .delivered, .lost,
            (if .stalled == null then "-" else "\(.stalled) (ingest \(.stalled_at_ingest), sink \(.stalled_at_sink))" end),
            "\(.duplicated) (<= \(.duplicate_bound))", .out_of_order, .leaked,
            "\(.quarantined)/\(.quarantine_expected)", .exits, "\(.wall_seconds) s",
            (if .passed == null then "-" elif .passed then "ok" else "FAILED" end)] | @tsv' "$results" |
        (printf 'scenario\tmode\tseed (--seed)\tcpu hogs\tfaults\tproduced\tdelivered\tlost\tstalled (at ingest, sink)\tduplicated (bound)\tout of order\tleaked\tquarantined\texits\twall\tverdict\n'; cat) |
        column -t -s $'\t'
    if grep -q '"memory":{' "$results"; then
        echo
        jq -r 'select(.memory != null) | .memory as $m | [.mode, $m.samples, $m.sink_peak_in_flight,
            "\($m.sink_peak_rss_mib | floor) MiB", "\($m.sink_hwm_mib | floor) MiB",
            "\($m.sink_first_half_mib | floor) -> \($m.sink_second_half_mib | floor) MiB", (if $m.flatness_judged then $m.sink_flat else "not judged (< 60 s)" end),
            "\($m.ingest_peak_rss_mib | floor) MiB", "\($m.ingest_hwm_mib | floor) MiB",
            "\($m.ingest_first_half_mib | floor) -> \($m.ingest_second_half_mib | floor) MiB", $m.ingest_flat] | @tsv' "$results" |
            (printf 'cloud down: mode\tsamples (1/s)\tsink in flight (peak)\tsink peak RSS\tsink VmHWM\tsink 1st -> 2nd half\tflat\tingest peak RSS\tingest VmHWM\tingest 1st -> 2nd half\tflat\n'; cat) |
            column -t -s $'\t'
    fi
}

main() {
    events=200000 rate=1500 mode=both kills=10 outage=120 cut=90 seed=0 seeds="" repeat=1
    hogs=2 stall=150 scenario="" results=""
    usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
    while (($#)); do
        (($# >= 2)) || [[ $1 == -h || $1 == --help ]] || { echo "chaos: $1 needs a value" >&2; exit 2; }
        case $1 in
            --events) events=$2 ;;
            --rate) rate=$2 ;;
            --mode) mode=$2 ;;
            --kills) kills=$2 ;;
            --outage-seconds) outage=$2 ;;
            --cut-seconds) cut=$2 ;;
            --seed) seed=$2 ;;
            --seeds) seeds=$2 ;;
            --repeat) repeat=$2 ;;
            --cpu-hogs) hogs=$2 ;;
            --stall-seconds) stall=$2 ;;
            --scenario) scenario=$2 ;;
            --results) results=$2 ;;
            --print) print_tables "$2"; exit 0 ;;
            -h | --help) usage; exit 0 ;;
            *) echo "chaos: unknown argument $1" >&2; usage >&2; exit 2 ;;
        esac
        shift 2
    done
    case $mode in
        both) modes=(exactly_once at_least_once) ;;
        exactly_once | at_least_once) modes=("$mode") ;;
        *) echo "chaos: --mode is exactly_once, at_least_once or both, not $mode" >&2; exit 2 ;;
    esac
    number='^[0-9]+$'
    if [[ $seed =~ ^([0-9]+)\.\.([0-9]+)$ ]]; then
        [[ -z $seeds ]] || { echo "chaos: --seed A..B and --seeds N do not go together" >&2; exit 2; }
        first=${BASH_REMATCH[1]} last=${BASH_REMATCH[2]}
        ((first <= last)) || { echo "chaos: --seed $seed: the range is empty" >&2; exit 2; }
    elif [[ $seed =~ $number ]]; then
        [[ -z $seeds || ($seeds =~ $number && $seeds -ge 1) ]] ||
            { echo "chaos: --seeds is a number of seeds (1 or more), not $seeds" >&2; exit 2; }
        first=$seed last=$((seed + ${seeds:-1} - 1))
    else
        echo "chaos: --seed is a number or a range A..B, not $seed" >&2
        exit 2
    fi
    [[ $repeat =~ $number && $repeat -ge 1 ]] || { echo "chaos: --repeat is 1 or more, not $repeat" >&2; exit 2; }
    [[ $hogs =~ $number ]] || { echo "chaos: --cpu-hogs is a number (0: none), not $hogs" >&2; exit 2; }
    [[ $stall =~ $number && $stall -ge 1 ]] || { echo "chaos: --stall-seconds is 1 or more, not $stall" >&2; exit 2; }
    command -v jq >/dev/null || { echo "chaos: jq is needed to print the table (apt-get install jq)" >&2; exit 2; }

    scripts/install-test-deps.sh
    cargo test -p pseudopipe --test blackbox --no-run

    results=${results:-$(mktemp -t chaos-results.XXXXXX)}
    log=${results%.jsonl}.log
    : >"$results"
    : >"$log"
    export CHAOS_EVENTS=$events CHAOS_RATE=$rate CHAOS_KILLS=$kills CHAOS_CPU_HOGS=$hogs
    export CHAOS_OUTAGE_SECONDS=$outage CHAOS_CUT_SECONDS=$cut CHAOS_STALL_SECONDS=$stall
    export CHAOS_RESULTS=$results
    echo "chaos: $events events at $rate/s, $kills kills, cloud down ${outage} s, link cut ${cut} s," \
        "seeds $first..$last, $repeat time(s) each, $hogs CPU hogs, stall after ${stall} s"
    echo "chaos: rows in $results, the tests' output in $log"

    started=$(date +%s)
    status=0
    for ((s = first; s <= last; s++)); do
        for ((r = 1; r <= repeat; r++)); do
            for m in "${modes[@]}"; do
                # One test at a time: the faults' timing and the memory figures are the run's own.
                CHAOS_SEED=$s cargo test -p pseudopipe --test blackbox "chaos::${m}_${scenario}" -- \
                    --test-threads=1 --nocapture >>"$log" 2>&1 || status=1
                grep -E '^test result:' "$log" | tail -1 | sed "s/^/chaos: seed $s, run $r, $m: /"
            done
        done
    done
    wall=$(($(date +%s) - started))

    print_tables "$results"
    echo
    echo "chaos: wall time $((wall / 60)) min $((wall % 60)) s; $(wc -l <"$results") scenarios counted," \
        "$(jq -s 'map(select(.passed == false)) | length' "$results") failed"
    exit $status
}

# Everything is in functions, read whole before it runs: editing this file during a run
# does not change the run.
main "$@"
