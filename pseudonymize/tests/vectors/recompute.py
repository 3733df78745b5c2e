#!/usr/bin/env python3
"""Recomputes tokens.json from docs/token-spec.md with nothing but Python's standard library.

An auditor's independent check: HKDF (RFC 5869) is written out with `hmac`, the
normalizers with `unicodedata`. Usage: python3 recompute.py tokens.json
"""
import base64
import hashlib
import hmac
import json
import sys
import unicodedata


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def normalize(name: str, value: str) -> str:
    if name == "exact":
        return value
    if name == "trim":
        return value.strip()
    if name in ("lower", "email"):
        return value.strip().lower()
    if name == "digits":
        value = value.strip()
        plus = "+" if value.startswith("+") else ""
        return plus + "".join(c for c in value if c in "0123456789")
    if name == "name":
        return " ".join(unicodedata.normalize("NFKC", value).lower().split())
    raise ValueError(name)


def token(secret: bytes, version: int, tenant: str, domain: str, normalized: str) -> str:
    key = hkdf_sha256(b"pseudopipe token v1", secret, tenant.encode() + b"\x00" + domain.encode())
    tag = hmac.new(key, normalized.encode(), hashlib.sha256).digest()[:16]
    return "v%d.%s" % (version, base64.urlsafe_b64encode(tag).rstrip(b"=").decode())


def main() -> int:
    vectors = json.load(open(sys.argv[1], encoding="utf-8"))
    secrets = {k["key"]: bytes.fromhex(k["master_secret_hex"]) for k in vectors["keys"]}
    failures = 0
    for k in vectors["keys"]:
        fp = hashlib.sha256(b"pseudopipe fingerprint v1\x00" + secrets[k["key"]]).hexdigest()[:16]
        if fp != k["fingerprint"]:
            print("fingerprint mismatch for", k["key"], fp, k["fingerprint"])
            failures += 1
    for v in vectors["tokens"]:
        value = v["value"] if isinstance(v["value"], str) else str(v["value"])
        got = token(secrets[v["key"]], v["version"], v["tenant"], v["domain"], normalize(v["normalizer"], value))
        if got != v["token"]:
            print("token mismatch:", v, got)
            failures += 1
    count = len(vectors["keys"]) + len(vectors["tokens"])
    if failures:
        print("%d of %d vectors FAILED" % (failures, count))
        return 1
    print("%d vectors OK" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
