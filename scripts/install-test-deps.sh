#!/usr/bin/env bash
# Installs what the tests need on a Debian machine, only what is missing:
# - a Java runtime (17 or later) and Maven, to fetch and run Apache Kafka;
# - the headers that rdkafka's build links against (libssl-dev, zlib1g-dev, pkg-config);
# - Debian's chromium, whose headless screenshot of the HTML audit report a test checks;
# - the Apache Kafka broker jars pinned in testkit/kafka/pom.xml, resolved from Maven
#   Central into ${PSEUDOPIPE_KAFKA_LIBS:-~/.cache/pseudopipe/kafka-VERSION/libs},
#   where testkit looks for them;
# - the schema registry pinned in testkit/registry/pom.xml (Apicurio Registry, its Quarkus
#   app from Maven Central), unpacked into
#   ${PSEUDOPIPE_REGISTRY_HOME:-~/.cache/pseudopipe/apicurio-registry-VERSION};
# - python3-venv, and a venv at ${PSEUDOPIPE_PYTHON_VENV:-~/.cache/pseudopipe/venv} with
#   scripts/requirements-test.txt (confluent-kafka[avro], for scripts/produce-avro.py).
# Takes seconds when everything is there; the first Kafka download about a minute, the
# registry (140 MB) and the venv about as long.
set -euo pipefail
cd "$(dirname "$0")/.."

pom=testkit/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
libs=${PSEUDOPIPE_KAFKA_LIBS:-$HOME/.cache/pseudopipe/kafka-$version/libs}
registry_pom=testkit/registry/pom.xml
registry_version=$(sed -n 's:.*<registry.version>\(.*\)</registry.version>.*:\1:p' "$registry_pom")
registry_home=${PSEUDOPIPE_REGISTRY_HOME:-$HOME/.cache/pseudopipe/apicurio-registry-$registry_version}
requirements=scripts/requirements-test.txt
venv=${PSEUDOPIPE_PYTHON_VENV:-$HOME/.cache/pseudopipe/venv}

# The major version of `java` on PATH, or 0.
java_major() {
    command -v java >/dev/null || { echo 0; return; }
    java -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p'
}

missing=()
if (($(java_major) < 17)); then
    # Java 17 on Debian 12, the distribution's default (17 or later) elsewhere.
    missing+=(default-jre-headless)
fi
if ! command -v mvn >/dev/null; then
    missing+=(maven)
fi
if ! command -v chromium >/dev/null; then
    missing+=(chromium)
fi
# Debian's python3 makes venvs only with python3-venv (ensurepip).
if ! command -v python3 >/dev/null; then
    missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
for package in libssl-dev zlib1g-dev pkg-config; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    echo "install-test-deps: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The folder is complete when it holds the marker written after the last successful
# copy, for this very pom (a changed pom resolves again).
stamp=$(sha256sum "$pom" | cut -d' ' -f1)
if [[ "$(cat "$libs/.complete" 2>/dev/null || true)" != "$stamp" ]]; then
    echo "install-test-deps: resolving Apache Kafka $version into $libs (about a minute)"
    staging=$(mktemp -d "${TMPDIR:-/tmp}/pseudopipe-kafka-libs.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$staging"
    test -f "$staging/kafka_2.13-$version.jar"
    echo "$stamp" >"$staging/.complete"
    mkdir -p "$(dirname "$libs")"
    rm -rf "$libs"
    mv "$staging" "$libs"
    trap - EXIT
fi

# The registry: complete when its marker holds this pom's hash, like Kafka's folder.
stamp=$(sha256sum "$registry_pom" | cut -d' ' -f1)
if [[ "$(cat "$registry_home/.complete" 2>/dev/null || true)" != "$stamp" ]]; then
    echo "install-test-deps: unpacking Apicurio Registry $registry_version into $registry_home (140 MB)"
    staging=$(mktemp -d "${TMPDIR:-/tmp}/pseudopipe-registry.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    mvn -q -B -Dstyle.color=never -f "$registry_pom" dependency:unpack -Dregistry.output="$staging"
    test -f "$staging/apicurio-registry-app-$registry_version-runner.jar"
    echo "$stamp" >"$staging/.complete"
    mkdir -p "$(dirname "$registry_home")"
    rm -rf "$registry_home"
    mv "$staging" "$registry_home"
    trap - EXIT
fi

# The venv: complete when its marker holds the hash of the requirements and of the
# python that made it (a new interpreter needs new wheels).
stamp=$( (cat "$requirements"; python3 --version) | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$venv/.complete" 2>/dev/null || true)" != "$stamp" ]]; then
    echo "install-test-deps: installing $requirements into $venv"
    # Replaced whole, but only if it is a venv: the variable may point anywhere.
    if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" && -n "$(ls -A "$venv")" ]]; then
        echo "install-test-deps: $venv is not a Python venv: set PSEUDOPIPE_PYTHON_VENV to a new folder" >&2
        exit 1
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    "$venv/bin/python" -c 'import confluent_kafka.schema_registry.avro'
    echo "$stamp" >"$venv/.complete"
fi

echo "install-test-deps: Apache Kafka $version in $libs ($(ls "$libs" | wc -l) jars), $(java -version 2>&1 | head -1), $(chromium --version 2>/dev/null | tail -1)"
echo "install-test-deps: Apicurio Registry $registry_version in $registry_home, confluent-kafka $("$venv/bin/python" -c 'import confluent_kafka; print(confluent_kafka.__version__)') in $venv"
