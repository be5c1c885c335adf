#!/usr/bin/env python3
"""Mint a demo workload-identity JWT (ES256) for Tollgate's example issuer.

Stands in for a real identity provider (OIDC, SPIFFE JWT-SVID, Kubernetes
service-account tokens). Needs only python3 and the openssl command line.
The key in this folder is for this example only: never trust it anywhere.

    python3 mint-token.py                       # spiffe://corp/agents/invoice-bot, 10 minutes
    python3 mint-token.py --sub spiffe://corp/agents/unknown --ttl 60
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der: bytes) -> bytes:
    """ECDSA signature: DER SEQUENCE{INTEGER r, INTEGER s} -> r||s (JWS form)."""
    if der[0] != 0x30:
        raise ValueError("not a DER sequence")
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise ValueError("not a DER integer")
        n = der[i + 1]
        value = der[i + 2 : i + 2 + n].lstrip(b"\x00")
        out += value.rjust(32, b"\x00")
        i += 2 + n
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sub", default="spiffe://corp/agents/invoice-bot")
    p.add_argument("--aud", default="https://tollgate.example.com")
    p.add_argument("--iss", default="https://idp.example.com")
    p.add_argument("--ttl", type=int, default=600, help="seconds")
    p.add_argument("--key", default=os.path.join(HERE, "demo-issuer-key.pem"))
    a = p.parse_args()
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": "demo-1"}
    claims = {"iss": a.iss, "aud": a.aud, "sub": a.sub, "iat": now, "exp": now + a.ttl}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", a.key],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    print(f"{signing_input}.{b64(der_to_raw(der))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
