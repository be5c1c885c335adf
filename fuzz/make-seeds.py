#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (see FUZZING.md).

Run from anywhere: python3 fuzz/make-seeds.py. Needs the `cryptography`
package only for the JWT seeds, which are signed with the fuzzing-only key
in fuzz/fixtures/. The seeds are committed; rerun this after changing a
target's input format.
"""
import base64
import json
import pathlib
import shutil

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def j(v):
    return json.dumps(v, separators=(",", ":")).encode()


# --- manifest: the shipped manifests and examples, alone and in pairs.
for p in sorted((ROOT / "manifests").glob("*.yaml")):
    write("manifest", p.stem, p.read_bytes())
for p in sorted((ROOT / "examples").glob("*/manifests/*.yaml")):
    write("manifest", f"example-{p.stem}", p.read_bytes())
write(
    "manifest",
    "helpdesk+agents",
    (ROOT / "manifests/helpdesk.yaml").read_bytes()
    + b"\0"
    + (ROOT / "manifests/agents.yaml").read_bytes(),
)
write("manifest", "bad-kind", "kind: Nope\nid: x\n")
write("manifest", "two-docs", "kind: Agent\nid: a\n---\nkind: Connector\nid: c\n")

# --- jsonrpc: first byte = header flags, NUL between requests.
STATELESS = 0x10  # MCP-Protocol-Version: 2026-07-28, JSON body, both Accepts
HANDSHAKE = 0x30  # MCP-Protocol-Version: 2025-06-18 (never 0x00: NUL separates requests)
SESSION = 0x40  # replay the previous response's Mcp-Session-Id
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def rpc(method, params=None, id=1):
    m = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        m["id"] = id
    if params is not None:
        m["params"] = params
    return j(m)


def req(flags, body):
    return bytes([flags]) + body


call = {"name": "inventory.get_item", "arguments": {"item_id": "42"}, "_meta": META}
write("jsonrpc", "stateless-call", req(STATELESS, rpc("tools/call", call)))
write("jsonrpc", "stateless-list", req(STATELESS, rpc("tools/list", {"_meta": META})))
write(
    "jsonrpc",
    "stateless-create",
    req(
        STATELESS,
        rpc(
            "tools/call",
            {"name": "inventory.create_item", "arguments": {"name": "x", "qty": 3}, "_meta": META},
        ),
    ),
)
write(
    "jsonrpc",
    "stateless-not-granted",
    req(STATELESS, rpc("tools/call", {"name": "inventory.purge", "arguments": {}, "_meta": META})),
)
write(
    "jsonrpc",
    "stateless-bad-args",
    req(
        STATELESS,
        rpc("tools/call", {"name": "inventory.get_item", "arguments": {"item_id": 7}, "_meta": META}),
    ),
)
init = rpc(
    "initialize",
    {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "fuzz", "version": "1"},
    },
)
write(
    "jsonrpc",
    "handshake-call",
    b"\0".join(
        [
            req(HANDSHAKE, init),
            req(SESSION | HANDSHAKE, rpc("notifications/initialized", id=None)),
            req(
                SESSION | HANDSHAKE,
                rpc("tools/call", {"name": "inventory.get_item", "arguments": {"item_id": "1"}}, id=2),
            ),
        ]
    ),
)
write("jsonrpc", "not-json", req(STATELESS, b"{not json"))
write("jsonrpc", "batch", req(STATELESS, b"[" + rpc("tools/call", call) + b"," + rpc("tools/list", {"_meta": META}, id=2) + b"]"))
write("jsonrpc", "ping", req(STATELESS, rpc("ping", {"_meta": META})))
write("jsonrpc", "foreign-origin", req(STATELESS | 0x80, rpc("tools/call", call)))

# --- constraint: text NUL arguments.
for name, text, args in [
    ("le", "amount <= 500", {"amount": 40}),
    ("eq-string", 'currency == "EUR"', {"currency": "EUR"}),
    ("in-list", "ticket_id in [4521, 4522]", {"ticket_id": 4522}),
    ("gt-float", "amount > 1.5e3", {"amount": 2000}),
    ("ne-bool", "flag != true", {"flag": False}),
    ("lt-absent", "n < -3", {}),
]:
    write("constraint", name, text.encode() + b"\0" + j(args))

# --- jwt: mode byte, then fields. Signed with the fixture key.
key = serialization.load_der_private_key((FUZZ / "fixtures/jwt-issuer-key.p8.der").read_bytes(), None)
ISS, AUD, KID = "https://issuer.fuzz.example", "tollgate-fuzz", "fuzz-key"
HEADER = {"alg": "ES256", "kid": KID, "typ": "JWT"}
CLAIMS = {"iss": ISS, "aud": AUD, "sub": "spiffe://fuzz/agent", "exp": 4102444800, "iat": 1767225600}


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(header, claims):
    signing_input = b64(j(header)) + b"." + b64(j(claims))
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return signing_input + b"." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


write("jwt", "raw-valid", b"\0" + token(HEADER, CLAIMS))
write("jwt", "raw-expired", b"\0" + token(HEADER, dict(CLAIMS, exp=1000)))
write("jwt", "raw-alg-none", b"\0" + b64(j({"alg": "none"})) + b"." + b64(j(CLAIMS)) + b".")
write("jwt", "signed-valid", b"\1" + j(HEADER) + b"\0" + j(CLAIMS))
write("jwt", "signed-aud-list", b"\1" + j(HEADER) + b"\0" + j(dict(CLAIMS, aud=["x", AUD])))
write("jwt", "signed-no-kid", b"\1" + j({"alg": "ES256"}) + b"\0" + j(CLAIMS))
write("jwt", "signed-rs256", b"\1" + j(dict(HEADER, alg="RS256")) + b"\0" + j(CLAIMS))
write("jwt", "signed-nbf", b"\1" + j(HEADER) + b"\0" + j(dict(CLAIMS, nbf=4102444000)))
write("jwt", "forged", b"\2" + j(HEADER) + b"\0" + j(CLAIMS) + b"\0" + bytes(range(64)))

# --- task_token: even = a token as text, odd = edits of the valid token.
write("task_token", "unchanged", b"\1")
write("task_token", "replace-middle", b"\1\x80\x00A")
write("task_token", "delete-last", b"\1\xff\x02\x00")
write("task_token", "swap-segments", b"\1\x00\x03\x01")
write("task_token", "alg-none", b"\0" + b64(j({"alg": "none"})) + b"." + b64(j({"typ": "task"})) + b".")
write("task_token", "garbage", b"\0not.a.token")
