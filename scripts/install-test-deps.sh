#!/usr/bin/env bash
# Installs what the tests need on a Debian machine, only what is missing:
# - socat (the mTLS gateway in front of the cloud broker), and the headers that
#   rdkafka's build links against (libssl-dev, zlib1g-dev, pkg-config);
# - tansu 0.6.0, the Kafka-compatible broker the black-box tests start
#   (`memory://` and `sqlite://` storage need the dynostore and libsql features).
# Quick when everything is there; the first tansu build takes about 15 minutes.
set -euo pipefail

TANSU_VERSION=0.6.0

missing=()
for package in socat libssl-dev zlib1g-dev pkg-config; do
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

# `tansu --version` prints "tansu 0.6.0"; `tansu --help` ends with the storage engines
# it was built with ("Storage engines: dynostore, libsql"), which the tests need.
tansu=$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")
tansu_ready() {
    [[ "$("$tansu" --version 2>/dev/null || true)" == "tansu $TANSU_VERSION" ]] &&
        [[ "$("$tansu" --help 2>/dev/null || true)" == *"Storage engines: dynostore, libsql"* ]]
}
if ! tansu_ready; then
    echo "install-test-deps: installing tansu $TANSU_VERSION (about 15 minutes)"
    # --force: a tansu 0.6.0 built without these features counts as installed for cargo.
    cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --locked --force
    tansu="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
fi
echo "install-test-deps: $("$tansu" --version), socat at $(command -v socat)"
