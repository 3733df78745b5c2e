#!/usr/bin/env bash
# Checks the monitoring files of deploy/ with the tools that will read them:
# - promtool (Debian's `prometheus` package; when it is not on PATH, its promtool binary is
#   extracted into ${PSEUDOPIPE_PROMTOOL_DIR:-~/.cache/pseudopipe/promtool}: the package
#   is downloaded with apt-get, never installed, so no Prometheus service is set up or
#   started) checks the Prometheus config, the alert rules, and runs their unit tests;
# - python3 checks the Grafana dashboard: valid JSON, uid `pseudopipe`, every panel on the
#   datasource uid `prometheus` with a PromQL query, and every query parsed by promtool.
# One line per check; exits non-zero when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${PSEUDOPIPE_PROMTOOL_DIR:-$HOME/.cache/pseudopipe/promtool}

promtool=$(command -v promtool || true)
if [[ -z $promtool && -x $cache/promtool ]]; then
    promtool=$cache/promtool
fi
if [[ -z $promtool ]]; then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    staging=$(mktemp -d "${TMPDIR:-/tmp}/pseudopipe-promtool.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    echo "check-monitoring: fetching promtool from Debian's prometheus package into $cache"
    # A fresh machine may have no package lists yet: update them once and try again.
    if ! (cd "$staging" && apt-get download -qq prometheus 2>/dev/null); then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        (cd "$staging" && apt-get download -qq prometheus)
    fi
    dpkg-deb -x "$staging"/prometheus_*.deb "$staging/root"
    mkdir -p "$cache"
    install -m 0755 "$staging/root/usr/bin/promtool" "$cache/promtool"
    promtool=$cache/promtool
fi

failed=0
# Runs a check quietly; prints `ok` or `FAILED` and, on failure, what the tool said.
check() {
    local name=$1
    shift
    local output
    if output=$("$@" 2>&1); then
        echo "ok      $name"
    else
        echo "FAILED  $name"
        sed 's/^/        /' <<<"$output"
        failed=1
    fi
}

echo "check-monitoring: $("$promtool" --version 2>&1 | head -n1)"
check "promtool check config deploy/prometheus/prometheus.yml" \
    "$promtool" check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/alerts.yml" \
    "$promtool" check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts.test.yml" \
    "$promtool" test rules deploy/prometheus/alerts.test.yml

dashboard=deploy/grafana/pseudopipe.json
check "python3 -m json.tool $dashboard" python3 -m json.tool "$dashboard"

# Every panel's queries as recording rules, with Grafana's variables replaced by values,
# so that promtool parses the PromQL the dashboard sends.
queries=$(mktemp "${TMPDIR:-/tmp}/pseudopipe-dashboard-queries.XXXXXX.yml")
trap 'rm -f "$queries"; rm -rf "${staging:-}"' EXIT
check "dashboard: uid pseudopipe, every panel on datasource uid prometheus with a query" \
    python3 - "$dashboard" "$queries" <<'EOF'
import json, re, sys

path, out = sys.argv[1], sys.argv[2]
dashboard = json.load(open(path))
problems = []
if dashboard.get("uid") != "pseudopipe":
    problems.append(f"dashboard uid is {dashboard.get('uid')!r}, not 'pseudopipe'")

def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))

def uid(datasource):
    return datasource.get("uid") if isinstance(datasource, dict) else datasource

rules = []
seen = 0
for panel in panels(dashboard.get("panels", [])):
    if panel.get("type") == "row":
        continue
    seen += 1
    title = panel.get("title") or f"panel {panel.get('id')}"
    if uid(panel.get("datasource")) != "prometheus":
        problems.append(f"{title}: datasource is not uid 'prometheus'")
    if not (panel.get("description") or "").strip():
        problems.append(f"{title}: no description")
    targets = panel.get("targets") or []
    if not targets:
        problems.append(f"{title}: no query")
    for target in targets:
        expr = (target.get("expr") or "").strip()
        if not expr:
            problems.append(f"{title} ({target.get('refId')}): empty expr")
            continue
        if uid(target.get("datasource", panel.get("datasource"))) != "prometheus":
            problems.append(f"{title} ({target.get('refId')}): datasource is not uid 'prometheus'")
        # Grafana's variables, as Grafana would interpolate them.
        expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
        expr = re.sub(r"\$\{?(stage|instance|job)\}?", ".*", expr)
        if "$" in expr:
            problems.append(f"{title} ({target.get('refId')}): unknown variable in {expr}")
            continue
        rules.append({"record": f"dashboard:query:{len(rules)}", "expr": expr})
for variable in dashboard.get("templating", {}).get("list", []):
    if variable.get("type") == "query":
        if uid(variable.get("datasource")) != "prometheus":
            problems.append(f"variable {variable.get('name')}: datasource is not uid 'prometheus'")
if seen == 0:
    problems.append("no panel")
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"))
for problem in problems:
    print(problem)
print(f"{seen} panels, {len(rules)} queries")
sys.exit(1 if problems else 0)
EOF
check "promtool check rules <every dashboard query>" "$promtool" check rules "$queries"

if ((failed)); then
    echo "check-monitoring: FAILED"
    exit 1
fi
echo "check-monitoring: all checks passed"
