#!/usr/bin/env bash
# Installs what the tests need on a Debian machine, only what is missing:
# - a Java runtime (17 or later) and Maven, to fetch and run Apache Kafka;
# - the headers that rdkafka's build links against (libssl-dev, zlib1g-dev, pkg-config);
# - Debian's chromium, whose headless screenshot of the HTML audit report a test checks;
# - the Apache Kafka broker jars pinned in testkit/kafka/pom.xml, resolved from Maven
#   Central into ${PSEUDOPIPE_KAFKA_LIBS:-~/.cache/pseudopipe/kafka-VERSION/libs},
#   where testkit looks for them.
# Takes seconds when everything is there; the first Kafka download about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

pom=testkit/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
libs=${PSEUDOPIPE_KAFKA_LIBS:-$HOME/.cache/pseudopipe/kafka-$version/libs}

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
echo "install-test-deps: Apache Kafka $version in $libs ($(ls "$libs" | wc -l) jars), $(java -version 2>&1 | head -1), $(chromium --version 2>/dev/null | tail -1)"
