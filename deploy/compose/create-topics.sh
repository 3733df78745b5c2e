#!/usr/bin/env bash
# One-shot `topics` service of docker-compose.yml (apache/kafka image): the pipeline's
# topics on both clusters, created if missing (re-runs change nothing). The brokers do not
# create topics on first use (auto.create.topics.enable=false), so a misspelt topic in a
# config is an error at start-up, not a silent new topic.
set -euo pipefail

# The defaults are the container's paths; the variables let the script run elsewhere too.
kafka_topics=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}
onprem=${ONPREM_BROKERS:-kafka-onprem:9092}
cloud=${CLOUD_BROKERS:-kafka-cloud:9093}
# Partitions of the pipeline's topics: how many instances of a stage can share the work.
partitions=${PARTITIONS:-4}
# The cloud admin's TLS files (make-certs.sh), given to the tools as a client config.
cloud_config=$(mktemp)
trap 'rm -f "$cloud_config"' EXIT
tls=${CLOUD_ADMIN_TLS:-/etc/kafka/secrets}
cat "${CLOUD_ADMIN_PROPERTIES:-/etc/pseudopipe-compose/admin.properties}" >"$cloud_config"
printf 'ssl.keystore.location=%s\nssl.truststore.location=%s\n' \
    "$tls/keystore.pem" "$tls/ca.pem" >>"$cloud_config"

# create BOOTSTRAP CLIENT_CONFIG TOPIC PARTITIONS [--config K=V]...
create() {
    local bootstrap=$1 client_config=$2 topic=$3 count=$4
    shift 4
    local extra=()
    [[ -n $client_config ]] && extra=(--command-config "$client_config")
    "$kafka_topics" --bootstrap-server "$bootstrap" "${extra[@]}" --create --if-not-exists \
        --topic "$topic" --partitions "$count" --replication-factor 1 "$@"
}

# On-prem: raw events (personal data), their pseudonymized form, the quarantine (personal
# data, never forwarded), the audit mirror (one partition, one record per sequence number
# kept) and the rotation bridge (one pair per old token kept).
create "$onprem" "" redemptions.raw "$partitions"
create "$onprem" "" redemptions.pseudonymized "$partitions"
create "$onprem" "" redemptions.quarantine "$partitions"
create "$onprem" "" pseudopipe.audit 1 --config cleanup.policy=compact
create "$onprem" "" pseudopipe.bridge "$partitions" --config cleanup.policy=compact
# Cloud: what analysts read, and the sink's source offsets for exactly once (as many
# partitions as redemptions.pseudonymized; it holds no records).
create "$cloud" "$cloud_config" redemptions "$partitions"
create "$cloud" "$cloud_config" pseudopipe.sink-offsets "$partitions" --config cleanup.policy=compact

"$kafka_topics" --bootstrap-server "$onprem" --list
"$kafka_topics" --bootstrap-server "$cloud" --command-config "$cloud_config" --list
