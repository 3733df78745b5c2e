#!/usr/bin/env python3
"""The ingest + sink job of pseudopipe as a data engineer would write it in Python.

Consumes raw coupon-redemption events from the on-prem cluster, applies the policy
(`schemas/coupon_redemption.policy.toml`: keep, drop, keyed tokens per docs/token-spec.md,
generalizations), and produces the result to the cloud cluster over mTLS; a rejected
event goes to the on-prem quarantine topic. Offsets are committed after each batch has
been delivered (at least once). The pseudopipe end-to-end bench measures it next to
pseudopipe; `--transform-only FILE` measures the transform alone on a JSON-lines file.

    python pseudonymize.py --policy POLICY --secret brand-a:1:secret.hex \\
        --brokers ONPREM --group-id G --input-topic RAW --quarantine-topic Q \\
        --cloud-brokers CLOUD --cloud-topic T --cloud-ca ca.pem \\
        --cloud-cert client.pem --cloud-key client.key
    python pseudonymize.py --policy POLICY --secret brand-a:1:secret.hex \\
        --transform-only events.jsonl [--output out.jsonl]

The secret file holds the tenant's 32-byte master secret as 64 hex digits.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import re
import signal
import sys
import time
import tomllib
import unicodedata
from collections.abc import Callable
from typing import Any

TENANT = re.compile(r"[a-z0-9_-]{1,64}")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Messages consumed, transformed and produced before the batch is flushed and committed.
BATCH = 1000


class Rejected(Exception):
    """An event the policy refuses; `reason` is pseudopipe's reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# docs/token-spec.md --------------------------------------------------------------------


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF (RFC 5869) with SHA-256."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def token_key(secret: bytes, tenant: str, domain: str) -> bytes:
    info = tenant.encode() + b"\x00" + domain.encode()
    return hkdf_sha256(b"pseudopipe token v1", secret, info)


def token(key: bytes, version: int, normalized: str) -> str:
    tag = hmac.digest(key, normalized.encode(), "sha256")[:16]
    return f"v{version}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"


def normalize_digits(value: str) -> str:
    value = value.strip()
    plus = "+" if value.startswith("+") else ""
    return plus + "".join(c for c in value if c in "0123456789")


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "exact": lambda value: value,
    "trim": str.strip,
    "lower": lambda value: value.strip().lower(),
    "email": lambda value: value.strip().lower(),
    "digits": normalize_digits,
    "name": lambda value: " ".join(unicodedata.normalize("NFKC", value).lower().split()),
}


def check_token_spec() -> None:
    """The known answers of docs/token-spec.md; refuses to run on a mismatch."""
    m1, m2 = bytes(range(32)), bytes(range(32, 64))
    answers = [
        (m1, 1, "default", "email", "email", "  Alice@Example.COM ", "v1.KxaYpQJkpd4SOvySjpg7xw"),
        (m2, 2, "brand-a", "phone", "digits", "+33 6 12 34 56 78", "v2.D5uRV8fm68YVDDzDJfAGkQ"),
        (m1, 1, "default", "customer", "name", "Émilie  DUPONT", "v1.m9DJHTSjASrFngLbFsAc4w"),
        (m1, 1, "default", "customer", "exact", "1234", "v1.1c2AlXY5OFBGndxZpKQRMg"),
    ]
    for secret, version, tenant, domain, normalizer, value, expected in answers:
        got = token(token_key(secret, tenant, domain), version, NORMALIZERS[normalizer](value))
        if got != expected:
            sys.exit(f"TOKEN-SPEC known answer failed: {value!r} gave {got}, not {expected}")


# The policy -----------------------------------------------------------------------


def scalar_text(value: Any) -> str:
    """A string as is, an integer in decimal; anything else is the wrong type."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Rejected("wrong_type", "expected a string or an integer")


def year(value: Any) -> str:
    if not isinstance(value, str):
        raise Rejected("wrong_type", "expected a date string")
    try:
        if len(value) == 10:
            if not DATE.fullmatch(value):
                raise ValueError(value)
            return f"{datetime.date.fromisoformat(value).year:04d}"
        return f"{datetime.datetime.fromisoformat(value).year:04d}"
    except ValueError:
        raise Rejected("invalid_value", "expected a date or an RFC 3339 timestamp") from None


def ip_network(value: Any, bits_v4: int, bits_v6: int) -> str:
    if not isinstance(value, str):
        raise Rejected("wrong_type", "expected an IP address string")
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        raise Rejected("invalid_value", "expected an IPv4 or IPv6 address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise Rejected("invalid_value", "expected an IP address without a zone")
    bits = bits_v4 if ip.version == 4 else bits_v6
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def keep(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        raise Rejected("wrong_type", "keep takes a scalar")
    return value


class Pseudonymizer:
    """The policy file compiled into one function per field path, plus tenant keys."""

    def __init__(self, policy_path: str, secrets: dict[str, tuple[int, bytes]]) -> None:
        with open(policy_path, "rb") as file:
            policy = tomllib.load(file)
        self.tenant_field = policy["tenant_field"].split(".")
        self.default_tenant: str = policy["default_tenant"]
        self.record_key = policy["record_key"].split(".")
        self.required = [path.split(".") for path in policy["required"]]
        self.max_event_bytes: int = policy["limits"]["max_event_bytes"]
        self.secrets = secrets
        # (tenant, domain) -> token key, derived once.
        self.keys = {
            (tenant, rule["domain"]): token_key(secret, tenant, rule["domain"])
            for tenant, (_, secret) in secrets.items()
            for rule in policy["fields"].values()
            if isinstance(rule, dict) and rule["action"] == "token"
        }
        # Field path -> None (drop) or a function of (value, tenant).
        self.rules: dict[str, Callable[[Any, str], Any] | None] = {
            path: self.compile(path, rule) for path, rule in policy["fields"].items()
        }
        # Paths of nested objects ("customer.address") and of arrays ("basket.items").
        self.objects: set[str] = set()
        self.arrays: set[str] = set()
        for path in self.rules:
            parts = path.split(".")
            for end in range(1, len(parts)):
                parent = ".".join(parts[:end])
                if parent.endswith("[]"):
                    self.arrays.add(parent[:-2])
                self.objects.add(parent)

    def compile(self, path: str, rule: Any) -> Callable[[Any, str], Any] | None:
        if rule == "keep":
            return lambda value, tenant: keep(value)
        if rule == "drop":
            return None
        if isinstance(rule, dict) and rule.get("action") == "token":
            normalize = NORMALIZERS[rule["normalizer"]]
            domain = rule["domain"]
            return lambda value, tenant: token(
                self.keys[tenant, domain],
                self.secrets[tenant][0],
                normalize(scalar_text(value)),
            )
        if isinstance(rule, dict) and rule.get("action") == "generalize":
            if rule["to"] == "year":
                return lambda value, tenant: year(value)
            if rule["to"] == "prefix":
                length = rule["length"]
                return lambda value, tenant: scalar_text(value)[:length]
            if rule["to"] == "ip_network":
                bits_v4, bits_v6 = rule.get("bits", 24), rule.get("bits_v6", 48)
                return lambda value, tenant: ip_network(value, bits_v4, bits_v6)
        sys.exit(f"{path}: the Python reference does not implement the rule {rule!r}")

    def pseudonymize(self, payload: bytes) -> tuple[bytes, bytes | None]:
        """The pseudonymized event and its record key, or `Rejected`."""
        if len(payload) > self.max_event_bytes:
            raise Rejected("too_large", f"event of {len(payload)} bytes")
        try:
            event = json.loads(payload.decode())
        except UnicodeDecodeError:
            raise Rejected("invalid_utf8", "payload is not valid UTF-8") from None
        except RecursionError:
            raise Rejected("too_deep", "payload nests too deep") from None
        except ValueError as error:
            raise Rejected("malformed_json", f"payload is not valid JSON: {error}") from None
        if not isinstance(event, dict):
            raise Rejected("not_an_object", "payload is not a JSON object")
        for path in self.required:
            if resolve(event, path) is None:
                raise Rejected("missing_field", f"required field `{'.'.join(path)}` is missing")
        tenant = resolve(event, self.tenant_field)
        if tenant is None:
            tenant = self.default_tenant
        elif not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
            raise Rejected("invalid_tenant", "the tenant field is not a valid tenant name")
        if tenant not in self.secrets:
            raise Rejected("unknown_tenant", f"tenant `{tenant}` has no key")
        self.apply_object(event, "", tenant)
        key = resolve(event, self.record_key)
        output = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        return output, key.encode() if isinstance(key, str) else None

    def apply_object(self, obj: dict[str, Any], prefix: str, tenant: str) -> None:
        for name in list(obj):
            path = prefix + name
            value = obj[name]
            if path in self.rules:
                rule = self.rules[path]
                if rule is None:
                    del obj[name]
                elif value is not None:
                    obj[name] = rule(value, tenant)
            elif path in self.arrays:
                if isinstance(value, list):
                    for item in value:
                        if isinstance(item, dict):
                            self.apply_object(item, path + "[].", tenant)
                        elif item is not None:
                            raise Rejected("wrong_type", f"`{path}[]` holds a scalar")
                elif value is not None:
                    raise Rejected("wrong_type", f"`{path}` is not an array")
            elif path in self.objects:
                if isinstance(value, dict):
                    self.apply_object(value, path + ".", tenant)
                elif value is not None:
                    raise Rejected("wrong_type", f"`{path}` is not an object")
            else:
                raise Rejected("unknown_field", f"field `{path}` has no rule in the policy")


def resolve(event: dict[str, Any], path: list[str]) -> Any:
    """The value at `path`, or None if a step is missing or not an object."""
    value: Any = event
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


# Modes ------------------------------------------------------------------------------


def transform_only(pseudonymizer: Pseudonymizer, path: str, output: str | None) -> None:
    """Times the transform over a JSON-lines file, in this one thread, without Kafka."""
    with open(path, "rb") as file:
        lines = file.read().splitlines()
    results: list[bytes] = []
    rejected = 0
    started = time.perf_counter()
    for line in lines:
        try:
            results.append(pseudonymizer.pseudonymize(line)[0])
        except Rejected:
            rejected += 1
    seconds = time.perf_counter() - started
    size = sum(len(line) for line in lines)
    print(
        f"python reference transform, 1 thread: {len(lines)} events, "
        f"{len(lines) / seconds:.0f} events/s, {size / seconds / 1e6:.1f} MB/s "
        f"({len(results)} pseudonymized, {rejected} rejected, {seconds:.3f} s)"
    )
    if output:
        with open(output, "wb") as file:
            file.writelines(result + b"\n" for result in results)


def pipeline(pseudonymizer: Pseudonymizer, args: argparse.Namespace) -> None:
    """Consume raw → transform → produce to the cloud, until SIGTERM or SIGINT."""
    from confluent_kafka import Consumer, KafkaException, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    durable = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
    cloud = Producer(
        {
            "bootstrap.servers": args.cloud_brokers,
            "security.protocol": "ssl",
            "ssl.ca.location": args.cloud_ca,
            "ssl.certificate.location": args.cloud_cert,
            "ssl.key.location": args.cloud_key,
            "compression.type": "zstd",
            **durable,
        }
    )
    quarantine = Producer({"bootstrap.servers": args.brokers, **durable})
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    stopping = False

    def stop(_signal: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([args.input_topic])
    while not stopping:
        messages = consumer.consume(num_messages=BATCH, timeout=0.1)
        for message in messages:
            if message.error():
                raise KafkaException(message.error())
            payload = message.value() or b""
            try:
                value, key = pseudonymizer.pseudonymize(payload)
            except Rejected as rejected:
                quarantine.produce(
                    args.quarantine_topic,
                    payload,
                    headers={
                        "pseudopipe-reason": rejected.reason,
                        "pseudopipe-message": str(rejected),
                    },
                    on_delivery=delivered,
                )
            else:
                cloud.produce(args.cloud_topic, value, key, on_delivery=delivered)
        if messages:
            # At least once: commit only what both producers have delivered.
            cloud.flush()
            quarantine.flush()
            if failures:
                sys.exit(f"{len(failures)} records not delivered, first: {failures[0]}")
            consumer.commit(asynchronous=False)
    consumer.close()


def parse_secret(text: str) -> tuple[str, int, bytes]:
    tenant, version, path = text.split(":", 2)
    with open(path, encoding="ascii") as file:
        secret = bytes.fromhex(file.read().strip())
    if len(secret) != 32:
        raise argparse.ArgumentTypeError(f"{path}: expected 32 bytes as 64 hex digits")
    return tenant, int(version), secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument(
        "--secret",
        action="append",
        type=parse_secret,
        required=True,
        metavar="TENANT:VERSION:FILE",
        help="a tenant's active key; repeatable",
    )
    parser.add_argument(
        "--transform-only", metavar="FILE", help="time the transform over JSON lines"
    )
    parser.add_argument("--output", help="with --transform-only: write the results there")
    for name in [
        "brokers",
        "group-id",
        "input-topic",
        "quarantine-topic",
        "cloud-brokers",
        "cloud-topic",
        "cloud-ca",
        "cloud-cert",
        "cloud-key",
    ]:
        parser.add_argument(f"--{name}")
    args = parser.parse_args()
    check_token_spec()
    secrets = {tenant: (version, secret) for tenant, version, secret in args.secret}
    pseudonymizer = Pseudonymizer(args.policy, secrets)
    if args.transform_only:
        transform_only(pseudonymizer, args.transform_only, args.output)
        return
    missing = [
        name
        for name, value in vars(args).items()
        if value is None and name not in ("transform_only", "output")
    ]
    if missing:
        parser.error("the pipeline needs --" + ", --".join(m.replace("_", "-") for m in missing))
    pipeline(pseudonymizer, args)


if __name__ == "__main__":
    main()
