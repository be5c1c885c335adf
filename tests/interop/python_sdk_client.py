#!/usr/bin/env python3
"""Interoperability check: the official Python MCP SDK (PyPI `mcp`, 2.x) against Tollgate.

Connects to a running gateway over Streamable HTTP with an agent key for
`support-bot` and, once per protocol mode, lists and calls the demo tools:

- ``auto``: the SDK's default; probes ``server/discover`` and must end up on
  the stateless 2026-07-28 revision (no ``Mcp-Session-Id`` anywhere).
- ``2026-07-28``: the SDK pinned to that revision, with no probe at all: every
  request stands alone.
- ``legacy``: the ``initialize`` handshake (2025-11-25) with a session.

With $TOLLGATE_TASK_TOKEN (a task with billing.refund) and
$TOLLGATE_APPROVER_KEY (head-of-support's credential) set, each mode also
waits on a refund that needs approval, with progress notifications, and
approves it through the approvals HTTP API.

Usage:
    python_sdk_client.py [URL [KEY]]
URL and KEY fall back to $TOLLGATE_URL and $TOLLGATE_KEY (prefer the variable
for the key: argv is visible to other local users).

Prints one line per check (``PASS`` / ``FAIL``), the HTTP exchanges of any
mode that failed on stderr (the Authorization header is never printed), and a
final line ``N passed, M failed``. Exits 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import builtins
import importlib.metadata
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

EXPECTED_TOOLS = [
    "billing.get_invoice",
    "billing.refund",
    "helpdesk.add_comment",
    "helpdesk.close_ticket",
    "helpdesk.get_ticket",
    "helpdesk.search_tickets",
    "tollgate.start_task",
]
WITHHELD_TOOL = "billing.delete_customer"
NONEXISTENT_TOOL = "helpdesk.no_such_tool"
INVALID_PARAMS = -32602
MODES = ("auto", "2026-07-28", "legacy")
MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSION = "2025-11-25"
MODE_TIMEOUT_SECONDS = 60.0
BODY_PREVIEW = 600


@dataclass
class Exchange:
    """One HTTP request/response as seen on the wire (for diagnostics)."""

    method: str
    request_headers: dict[str, str]
    request_body: str
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""

    def render(self) -> str:
        lines = [f"> {self.method}"]
        lines += [f"> {k}: {v}" for k, v in self.request_headers.items()]
        if self.request_body:
            lines.append(f"> {self.request_body}")
        if self.status is None:
            lines.append("< (no response)")
        else:
            lines.append(f"< {self.status}")
            lines += [f"< {k}: {v}" for k, v in self.response_headers.items()]
            if self.response_body:
                lines.append(f"< {self.response_body}")
        return "\n".join(lines)


class Recorder:
    """httpx2 event hooks that keep every exchange of one mode.

    Response bodies are read only when they are plain JSON: a text/event-stream
    response (the session's standalone GET stream in particular) may stay open
    for the whole session and must be left to the SDK.
    """

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._open: dict[int, Exchange] = {}

    @staticmethod
    def _headers(headers: httpx2.Headers) -> dict[str, str]:
        return {
            k: ("<redacted>" if k.lower() == "authorization" else v)
            for k, v in headers.items()
        }

    async def on_request(self, request: httpx2.Request) -> None:
        body = ""
        if request.method != "GET":
            body = request.content.decode("utf-8", "replace")[:BODY_PREVIEW]
        ex = Exchange(request.method, self._headers(request.headers), body)
        self.exchanges.append(ex)
        self._open[id(request)] = ex

    async def on_response(self, response: httpx2.Response) -> None:
        ex = self._open.pop(id(response.request), None)
        if ex is None:
            return
        ex.status = response.status_code
        ex.response_headers = self._headers(response.headers)
        if response.headers.get("content-type", "").startswith("application/json"):
            await response.aread()
            ex.response_body = response.text[:BODY_PREVIEW]

    def session_ids_sent(self) -> set[str]:
        return {
            v for ex in self.exchanges for k, v in ex.request_headers.items() if k.lower() == "mcp-session-id"
        }

    def session_ids_issued(self) -> set[str]:
        return {
            v for ex in self.exchanges for k, v in ex.response_headers.items() if k.lower() == "mcp-session-id"
        }


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, mode: str, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        line = f"{'PASS' if ok else 'FAIL'} [{mode}] {name}"
        # A failure always says what was seen; a pass only when that is short.
        if detail and (not ok or len(detail) <= 100):
            line += f": {detail}"
        print(line, flush=True)
        return ok


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def short(value: Any, limit: int = 300) -> str:
    try:
        s = json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def http_client(key: str, recorder: Recorder) -> httpx2.AsyncClient:
    # trust_env=False: no proxy from the environment; this talks to loopback only.
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx2.Timeout(30.0, read=60.0),
        trust_env=False,
        event_hooks={"request": [recorder.on_request], "response": [recorder.on_response]},
    )


async def unknown_tool_error(client: Client, name: str, arguments: dict[str, Any]) -> MCPError | Any:
    """The MCPError a call raises, or the result it returned instead."""
    try:
        return await client.call_tool(name, arguments)
    except MCPError as e:
        return e


async def approval_flow(mode: str, url: str, task_token: str, approver_key: str, amount: float, report: Report) -> None:
    """A refund above 100 waits for head-of-support: the call stays open with
    progress notifications while this script, as the approver, finds the
    request through the HTTP API and approves it; the call then completes."""

    def check(name: str, ok: bool, detail: str = "") -> bool:
        return report.check(mode, name, ok, detail)

    base = url.rsplit("/mcp", 1)[0]
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    result: dict[str, Any] = {}

    async def agent() -> None:
        async with http_client(task_token, Recorder()) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=mode, read_timeout_seconds=60.0) as client:
                result["r"] = await client.call_tool(
                    "billing.refund",
                    {"invoice_id": "INV-1060", "amount": amount, "currency": "EUR", "reason": "interop"},
                    progress_callback=on_progress,
                )

    async def approver() -> None:
        headers = {"authorization": f"Bearer {approver_key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=10.0, trust_env=False) as http:
            with anyio.fail_after(30):
                while True:
                    listing = (await http.get(f"{base}/api/approvals")).json()
                    mine = [
                        r for r in listing.get("requests", [])
                        if r.get("tool") == "billing.refund" and r.get("arguments", {}).get("amount") == amount
                    ]
                    if mine:
                        break
                    await anyio.sleep(0.1)
            # Let a progress notification or two go out while the call waits.
            with anyio.move_on_after(10):
                while not progress:
                    await anyio.sleep(0.1)
            r = await http.post(
                f"{base}/api/approvals/{mine[0]['id']}/approve",
                json={"reason": f"interop {mode}"},
            )
            result["approve_status"] = r.status_code

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent)
        tg.start_soon(approver)

    r = result.get("r")
    check(
        "approval: the approver's API call succeeds (200)",
        result.get("approve_status") == 200,
        f"status={result.get('approve_status')}",
    )
    check(
        "approval: the waiting call sends progress ('waiting for approval by head-of-support')",
        any("waiting for approval by head-of-support" in m for m in progress),
        f"progress={progress[:3]}",
    )
    check(
        "approval: the call completes with the refund once approved",
        r is not None
        and not r.is_error
        and isinstance(r.structured_content, dict)
        and r.structured_content.get("status") == "issued"
        and "Approved by head-of-support" in text_of(r),
        f"result={short(r)}",
    )


async def run_mode(mode: str, url: str, key: str, report: Report, recorder: Recorder) -> None:
    def check(name: str, ok: bool, detail: str = "") -> bool:
        return report.check(mode, name, ok, detail)

    async with http_client(key, recorder) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=30.0) as client:
            session = client.session
            version = client.protocol_version
            if mode == "legacy":
                check(
                    f"initialize handshake negotiates {HANDSHAKE_VERSION}",
                    version == HANDSHAKE_VERSION and session.initialize_result is not None,
                    f"protocol_version={version!r}",
                )
            elif mode == "auto":
                check(
                    f"server/discover probe adopts {MODERN_VERSION} (no initialize fallback)",
                    version == MODERN_VERSION
                    and session.discover_result is not None
                    and session.initialize_result is None,
                    f"protocol_version={version!r}, discovered={session.discover_result is not None}",
                )
            else:
                check(
                    f"pinned to {MODERN_VERSION} without a probe",
                    version == MODERN_VERSION,
                    f"protocol_version={version!r}",
                )
            if mode != MODERN_VERSION:  # a pinned client never hears the server's identity
                info = client.server_info
                check(
                    "server identifies itself as tollgate",
                    info is not None and info.name == "tollgate",
                    f"server_info={info!r}",
                )

            # tools/list: exactly support-bot's grants, the withheld tool absent.
            listed = await client.list_tools()
            names = [t.name for t in listed.tools]
            check(
                "tools/list returns exactly support-bot's 6 tools and tollgate.start_task",
                sorted(names) == EXPECTED_TOOLS and len(names) == len(set(names)),
                f"got {names}",
            )
            check(f"{WITHHELD_TOOL} is not listed", WITHHELD_TOOL not in names)
            no_cursor = listed.next_cursor is None
            check("tools/list is one complete page", no_cursor, f"next_cursor={listed.next_cursor!r}")

            # helpdesk.search_tickets: structured result, ticket 4521 first.
            r = await client.call_tool("helpdesk.search_tickets", {"query": "charged twice"})
            sc = r.structured_content
            first_id = None
            if isinstance(sc, dict) and isinstance(sc.get("tickets"), list) and sc["tickets"]:
                first = sc["tickets"][0]
                first_id = first.get("id") if isinstance(first, dict) else None
            check(
                'helpdesk.search_tickets {"query":"charged twice"} -> tickets[0].id == 4521',
                not r.is_error and first_id == 4521,
                f"isError={r.is_error}, structuredContent={short(sc)}" + ("" if sc else f", text={text_of(r)!r}"),
            )

            # helpdesk.get_ticket: the same ticket, read back.
            r = await client.call_tool("helpdesk.get_ticket", {"ticket_id": 4521})
            sc = r.structured_content
            check(
                'helpdesk.get_ticket {"ticket_id":4521} succeeds with id 4521',
                not r.is_error and isinstance(sc, dict) and sc.get("id") == 4521,
                f"isError={r.is_error}, structuredContent={short(sc)}" + ("" if sc else f", text={text_of(r)!r}"),
            )

            # billing.delete_customer: refused exactly like a tool that does not exist.
            withheld = await unknown_tool_error(client, WITHHELD_TOOL, {"customer_id": "cus_ana"})
            ok = (
                isinstance(withheld, MCPError)
                and withheld.code == INVALID_PARAMS
                and withheld.message == f"Unknown tool: {WITHHELD_TOOL}"
            )
            detail = (
                f"code={withheld.code}, message={withheld.message!r}, data={short(withheld.data)}"
                if isinstance(withheld, MCPError)
                else f"no JSON-RPC error; result isError={getattr(withheld, 'is_error', None)}, "
                f"text={text_of(withheld)!r}"
            )
            check(f'{WITHHELD_TOOL} -> JSON-RPC {INVALID_PARAMS} "Unknown tool: ..."', ok, detail)
            missing = await unknown_tool_error(client, NONEXISTENT_TOOL, {"customer_id": "cus_ana"})
            if isinstance(withheld, MCPError) and isinstance(missing, MCPError):
                same = (
                    missing.code == withheld.code
                    and missing.message.replace(NONEXISTENT_TOOL, "<tool>")
                    == withheld.message.replace(WITHHELD_TOOL, "<tool>")
                    and missing.data == withheld.data
                )
                detail = (
                    f"withheld: {withheld.code} {withheld.message!r} {short(withheld.data)}; "
                    f"nonexistent: {missing.code} {missing.message!r} {short(missing.data)}"
                )
            else:
                same, detail = False, f"nonexistent tool gave {missing!r}"
            check(f"the refusal is indistinguishable from a nonexistent tool ({NONEXISTENT_TOOL})", same, detail)

            # billing.refund with bad arguments: a tool result with isError, not a protocol error.
            try:
                r = await client.call_tool("billing.refund", {"invoice_id": "INV-1042", "amount": "40"})
            except MCPError as e:
                check(
                    'billing.refund {"amount":"40"} -> tool result isError with "Invalid arguments"',
                    False,
                    f"JSON-RPC error instead: code={e.code}, message={e.message!r}",
                )
            else:
                text = text_of(r)
                check(
                    'billing.refund {"amount":"40"} -> tool result isError with "Invalid arguments"',
                    r.is_error is True and "Invalid arguments" in text,
                    f"isError={r.is_error}, text={text!r}",
                )

    # After the client closed: how the transport behaved over the whole mode.
    issued, sent = recorder.session_ids_issued(), recorder.session_ids_sent()
    if mode == "legacy":
        check(
            "initialize issues an Mcp-Session-Id that later requests carry",
            len(issued) == 1 and sent == issued,
            f"issued={sorted(issued)}, sent={sorted(sent)}",
        )
        deletes = [ex for ex in recorder.exchanges if ex.method == "DELETE"]
        check(
            "closing the client ends the session (DELETE -> 2xx)",
            len(deletes) == 1 and deletes[0].status is not None and 200 <= deletes[0].status < 300,
            f"DELETE statuses={[ex.status for ex in deletes]}",
        )
    else:
        check(
            "stateless: no Mcp-Session-Id issued or sent",
            not issued and not sent,
            f"issued={sorted(issued)}, sent={sorted(sent)}",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("TOLLGATE_URL"))
    parser.add_argument("key", nargs="?", default=os.environ.get("TOLLGATE_KEY"))
    parser.add_argument(
        "--mode", action="append", choices=MODES, help="run only this mode (repeatable; default: all)"
    )
    parser.add_argument("--trace", action="store_true", help="print every mode's HTTP exchanges on stderr")
    args = parser.parse_args()
    if not args.url or not args.key:
        parser.error("give URL and KEY as arguments or in $TOLLGATE_URL and $TOLLGATE_KEY")

    # SDK log records (warnings and up) go to stderr, marked as such.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="note: %(name)s: %(message)s")

    print(f"client: official Python MCP SDK mcp=={importlib.metadata.version('mcp')}", flush=True)
    print(f"server: {args.url}", flush=True)
    report = Report()
    for mode in args.mode or MODES:
        recorder = Recorder()
        failed_before = report.failed
        try:
            anyio.run(_bounded, mode, args.url, args.key, report, recorder)
        except BaseException as e:  # noqa: BLE001 - any escape is one failed check, reported
            if isinstance(e, KeyboardInterrupt):
                raise
            report.check(mode, "mode ran to the end", False, describe(e))
        if args.trace or report.failed > failed_before:
            print(f"--- [{mode}] HTTP exchanges ({len(recorder.exchanges)})", file=sys.stderr)
            for ex in recorder.exchanges:
                print(ex.render(), file=sys.stderr)
            print(f"--- [{mode}] end of exchanges", file=sys.stderr, flush=True)

    if report.passed + report.failed == 0:
        report.check("-", "ran at least one check", False)
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    return 0 if report.failed == 0 else 1


async def _bounded(mode: str, url: str, key: str, report: Report, recorder: Recorder) -> None:
    with anyio.fail_after(MODE_TIMEOUT_SECONDS):
        await run_mode(mode, url, key, report, recorder)
        task_token = os.environ.get("TOLLGATE_TASK_TOKEN")
        approver_key = os.environ.get("TOLLGATE_APPROVER_KEY")
        if task_token and approver_key:
            # A different amount per mode: each is its own request.
            amount = {"auto": 110.0, MODERN_VERSION: 120.0, "legacy": 130.0}.get(mode, 140.0)
            await approval_flow(mode, url, task_token, approver_key, amount, report)


def describe(e: BaseException) -> str:
    """One line for an exception, unwrapping exception groups from task groups."""
    group = getattr(builtins, "BaseExceptionGroup", None)  # Python 3.11+; anyio's backport before
    if group is None:
        from exceptiongroup import BaseExceptionGroup as group  # type: ignore[no-redef]
    if isinstance(e, group) and len(e.exceptions) == 1:
        return describe(e.exceptions[0])
    if isinstance(e, MCPError):
        return f"MCPError code={e.code} message={e.message!r} data={short(e.data)}"
    if isinstance(e, TimeoutError):
        return f"timed out after {MODE_TIMEOUT_SECONDS:.0f}s"
    return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    sys.exit(main())
