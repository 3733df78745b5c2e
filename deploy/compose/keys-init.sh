#!/usr/bin/env bash
# One-shot `keys-init` service of docker-compose.yml, in the pseudopipe image: a KEK and a
# keyring with one active version per tenant, each made once. Re-runs change nothing, so
# `docker compose up` can run it every time; `docker compose down -v` erases both.
#
# The KEK and the keyring live in two volumes: a copy of the keyring without the KEK
# reveals no key. Only this service and ingest mount the KEK's volume (ingest read-only).
set -euo pipefail

kek=${KEK:-/var/lib/pseudopipe-kek/kek}
keyring=${KEYRING:-/var/lib/pseudopipe/keyring.json}
export PSEUDOPIPE_ACTOR=compose-keys-init

if [[ -f $kek ]]; then
    echo "KEK present in the pseudopipe-kek volume: kept."
else
    pseudopipe keys new-kek --out "$kek"
fi

for tenant in ${TENANTS:-brand-a}; do
    # `keys list` opens the keyring with the KEK: a tenant it lists exists already.
    if [[ -f $keyring ]] && pseudopipe keys list --keyring "$keyring" --kek-file "$kek" --tenant "$tenant" >/dev/null 2>&1; then
        echo "Tenant $tenant present in the keyring: kept."
    else
        pseudopipe keys init --keyring "$keyring" --kek-file "$kek" --tenant "$tenant"
    fi
done

# The audit log's public key, for auditors: `audit verify --public-key` needs no KEK.
pseudopipe audit export-key --keyring "$keyring" --kek-file "$kek" --out "$(dirname "$keyring")/audit.pub"
