#!/bin/sh
# One-shot `certs` service of docker-compose.yml (alpine): a throw-away CA and the
# certificates of the cloud side of the private link, in three volumes:
#
#   /tls/broker  keystore.pem (key + certificate of kafka-cloud), ca.pem  -> kafka-cloud
#   /tls/sink    sink.pem, sink.key, ca.pem (the sink's client certificate) -> sink
#   /tls/admin   keystore.pem, ca.pem (a client certificate for creating topics) -> topics
#
# The broker demands a client certificate signed by the CA (mTLS), so only the sink and the
# topics job reach it. The CA key is not kept: nothing else can be issued later. Existing
# certificates are kept; `docker compose down -v` makes new ones at the next `up`.
set -eu
TLS=${TLS:-/tls}

if [ -f "$TLS/broker/keystore.pem" ] && [ -f "$TLS/sink/sink.key" ] && [ -f "$TLS/admin/keystore.pem" ]; then
    echo "Certificates present: kept."
    exit 0
fi
command -v openssl >/dev/null || apk add --no-cache --quiet openssl

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
days=825

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout ca.key -out ca.pem -days "$days" -subj "/CN=pseudopipe compose throw-away CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# issue NAME COMMON_NAME EXTENDED_KEY_USAGE [SUBJECT_ALT_NAME]: NAME.key (PKCS#8, as Kafka's
# PEM key store wants it) and NAME.pem signed by the CA.
issue() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
        -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$3"
        if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi
    } >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    openssl verify -CAfile ca.pem "$1.pem" >/dev/null
}
# The broker talks to itself over its SSL listener (transaction markers): its certificate
# serves as a client certificate too.
issue broker kafka-cloud serverAuth,clientAuth "DNS:kafka-cloud,DNS:localhost,IP:127.0.0.1"
issue sink pseudopipe-sink clientAuth
issue admin pseudopipe-topics clientAuth

# place OWNER STAGING TARGET: the staged files into TARGET (a volume), readable by their
# container's user only (the Kafka image runs as appuser, uid 1000; pseudopipe as 10001).
place() {
    mkdir -p "$3"
    cp "$2"/* "$3"/
    chown -R "$1:$1" "$3"
    chmod 0400 "$3"/*
    chmod 0500 "$3"
}
mkdir broker sink admin
cat broker.key broker.pem >broker/keystore.pem
cat admin.key admin.pem >admin/keystore.pem
cp sink.key sink.pem sink/
cp ca.pem broker/ && cp ca.pem sink/ && cp ca.pem admin/
place 1000 broker "$TLS/broker"
place 1000 admin "$TLS/admin"
place 10001 sink "$TLS/sink"
echo "Certificates made: CA, kafka-cloud, pseudopipe-sink, pseudopipe-topics."
