#!/usr/bin/env bash
# The transform alone, no Kafka, on the same simulated events: the Python reference
# (bench/reference/pseudonymize.py --transform-only: json.loads, the policy with
# hmac/hashlib, json.dumps, one thread) and pseudopipe's record path
# (`pseudopipe bench transform`, compared per core: its events per CPU-second).
# Also checks that both write the same bytes for every event (`pseudopipe pseudonymize`
# under a keyring holding the reference's secret), so that they do the same work.
#
#   scripts/bench-transform.sh [--events N] [--threads T]    # default 200,000 events
#
# --threads goes to `pseudopipe bench transform`; the Python reference runs on one thread.
set -euo pipefail
cd "$(dirname "$0")/.."

events=200000
threads=()
while (($#)); do
    case $1 in
        --events) events=${2:?--events needs a value}; shift 2 ;;
        --threads) threads=(--threads "${2:?--threads needs a value}"); shift 2 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "bench-transform: unknown argument $1 (expected --events, --threads)" >&2; exit 2 ;;
    esac
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/pseudopipe-bench-transform.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
pseudopipe=target/release/pseudopipe
policy=schemas/coupon_redemption.policy.toml

# The events `pseudopipe bench transform --events N` measures (seed 1, tenants brand-a and brand-b),
# written by the end-to-end bench binary, which also builds target/release/pseudopipe.
cargo bench -q -p pseudopipe --bench end_to_end -- --write-events "$scratch/events.jsonl" --events "$events"

# One master secret for both tenants, as `pseudopipe bench transform` uses.
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$scratch/secret.hex"
export PSEUDOPIPE_ACTOR=bench-transform
"$pseudopipe" keys new-kek --out "$scratch/kek" >/dev/null
for tenant in brand-a brand-b; do
    "$pseudopipe" keys import --keyring "$scratch/keyring.json" --kek-file "$scratch/kek" \
        --tenant "$tenant" --version 1 --secret-file "$scratch/secret.hex" >/dev/null
done

echo "== Python reference (python3 $(python3 -c 'import platform; print(platform.python_version())'), --transform-only)"
python_line=$(python3 bench/reference/pseudonymize.py --policy "$policy" \
    --secret "brand-a:1:$scratch/secret.hex" --secret "brand-b:1:$scratch/secret.hex" \
    --transform-only "$scratch/events.jsonl" --output "$scratch/python.jsonl")
echo "$python_line"

"$pseudopipe" pseudonymize --policy "$policy" --keyring "$scratch/keyring.json" \
    --kek-file "$scratch/kek" --input "$scratch/events.jsonl" --output "$scratch/pseudopipe.jsonl" \
    --quarantine "$scratch/quarantine.jsonl" 2>/dev/null
if cmp -s "$scratch/python.jsonl" "$scratch/pseudopipe.jsonl"; then
    echo "same output: the reference and \`pseudopipe pseudonymize\` wrote identical bytes for all $events events"
else
    echo "DIFFERENT output: the reference and \`pseudopipe pseudonymize\` disagree; first difference:"
    cmp "$scratch/python.jsonl" "$scratch/pseudopipe.jsonl" || true
fi

command=("$pseudopipe" bench transform --events "$events" "${threads[@]}")
echo "== ${command[*]}"
rust_output=$("${command[@]}")
echo "$rust_output"

# The last events/s figure of each (for `bench transform`, per core by CPU time).
rate() { grep -oE '[0-9.]+ +events/s' | tail -1 | grep -oE '^[0-9.]+'; }
python_rate=$(rate <<<"$python_line")
rust_rate=$(rate <<<"$rust_output" || true)
if [[ -n $rust_rate ]]; then
    python3 -c "import sys; r, p = map(float, sys.argv[1:]); print(f'record path / Python reference: {r:.0f} / {p:.0f} = {r / p:.1f}x (target: 60x)')" \
        "$rust_rate" "$python_rate"
fi
