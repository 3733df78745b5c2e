# syntax=docker/dockerfile:1
# The pseudopipe binary in a small runtime image: `docker build -t pseudopipe .`
# One image for every role (ingest, sink, produce, keys, audit): the subcommand picks it.

FROM rust:1.95-bookworm AS builder
# rdkafka (features ssl, zstd) builds librdkafka from source with its ./configure and make
# (not cmake): a C toolchain, pkg-config, and the OpenSSL and zlib headers. zstd is built
# by zstd-sys itself. Versions are not pinned: bookworm's security updates replace them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and the target folder live in BuildKit caches, so a rebuild after a code
# change recompiles only pseudopipe's crates; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pseudopipe \
 && install -m 0755 target/release/pseudopipe /usr/local/bin/pseudopipe

FROM debian:bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pseudopipe" \
      org.opencontainers.image.description="Pseudonymizes coupon-redemption events between an on-prem Kafka and a cloud Kafka" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://example.invalid/pseudopipe"
# libssl3 for librdkafka's TLS, ca-certificates for a cloud cluster with a public CA. No
# curl: health checks use /readyz over bash's /dev/tcp (docker-compose.yml) or the
# kubelet's httpGet.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
# uid 10001: not a uid of the base image, not root. The keyring's and the KEK's folders
# belong to it, so that a fresh named volume mounted there (Compose) is writable by it.
RUN useradd --system --uid 10001 --gid 0 --home-dir /var/lib/pseudopipe --no-create-home pseudopipe \
 && install -d -o 10001 -g 0 -m 0700 /var/lib/pseudopipe /var/lib/pseudopipe-kek
COPY --from=builder /usr/local/bin/pseudopipe /usr/local/bin/pseudopipe
COPY schemas/coupon_redemption.policy.toml schemas/*.avsc schemas/coupon_redemption.json /etc/pseudopipe/
COPY config/pseudopipe.example.toml /etc/pseudopipe/
USER 10001
# ingest's and the sink's /metrics, /healthz and /readyz ([metrics] listen).
EXPOSE 9464 9465
ENTRYPOINT ["pseudopipe"]
CMD ["--help"]
