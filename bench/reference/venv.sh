#!/usr/bin/env bash
# Makes the Python reference's virtual environment, only when missing or when
# requirements.txt changed, and prints its interpreter's path on stdout (messages go to
# stderr). Fails, saying why, when Python or pip does.
#
#   python=$(bench/reference/venv.sh)    # ${PSEUDOPIPE_BENCH_VENV:-~/.cache/pseudopipe/bench-venv}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${PSEUDOPIPE_BENCH_VENV:-$HOME/.cache/pseudopipe/bench-venv}
requirements=$here/requirements.txt
stamp=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ "$(cat "$venv/.complete" 2>/dev/null || true)" == "$stamp" ]] &&
    "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
    echo "$venv/bin/python"
    exit 0
fi

command -v python3 >/dev/null || { echo "bench venv: python3 is not installed" >&2; exit 1; }
# Debian splits `venv` (its ensurepip) into python3-venv.
if ! python3 -c 'import ensurepip' 2>/dev/null; then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    echo "bench venv: installing python3-venv" >&2
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
fi

echo "bench venv: creating $venv from $requirements" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
if ! python3 -m venv "$venv" >&2 ||
    ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2; then
    rm -rf "$venv"
    echo "bench venv: could not create $venv (python3 -m venv or pip install failed)" >&2
    exit 1
fi
echo "$stamp" >"$venv/.complete"
echo "$venv/bin/python"
