#!/usr/bin/env bash
# Interoperability check: the official Python MCP SDK (pinned in
# requirements.txt) lists and calls Tollgate's demo tools over Streamable HTTP,
# in the stateless 2026-07-28 mode and the initialize (2025-11-25) mode.
#
#   bash tests/interop/run.sh        (from any directory)
#
# Needs python3 (>= 3.10) with pip, cargo, and access to PyPI the first time.
# Everything listens on 127.0.0.1 only, on free ports chosen at run time.
#
# Environment (all optional):
#   PYTHON                  interpreter that builds the venv (default: python3)
#   TOLLGATE_INTEROP_VENV   where the SDK is installed (default: <cargo target dir>/interop-venv)
#   TOLLGATE_BIN            use this tollgate binary instead of building the debug one
#   TOLLGATE_INTEROP_WAIT   seconds to wait for /healthz (default: 30)
#
# The last line of output is the client's "N passed, M failed"; the exit code
# is the client's (or 1 if the setup failed before it could run).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
WAIT_SECONDS="${TOLLGATE_INTEROP_WAIT:-30}"
# Loopback only, whatever proxy the environment names.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

log() { printf 'interop: %s\n' "$*" >&2; }

WORK=""
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n "$WORK" ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_gateway_log() {
  if [[ -n "$WORK" && -s "$WORK/gateway.log" ]]; then
    log "last lines of the gateway's log:"
    tail -n 40 "$WORK/gateway.log" | sed 's/^/  gateway| /' >&2
  fi
}

die() {
  log "error: $*"
  show_gateway_log
  # Keep the closing-line convention even when the client never ran.
  echo "0 passed, 1 failed"
  exit 1
}

# --- 1. The Python SDK, in a cached venv ------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON to a Python >= 3.10)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "the MCP SDK needs Python >= 3.10; $PYTHON is $("$PYTHON" -V 2>&1) (set PYTHON)"

# Sets TARGET_DIR to cargo's target directory (honours CARGO_TARGET_DIR and
# .cargo/config), where the venv is cached and the debug binary is built.
TARGET_DIR=""
find_target_dir() {
  [[ -n "$TARGET_DIR" ]] && return
  command -v cargo >/dev/null || die "cargo not found"
  local meta
  meta="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps)" || die "cargo metadata failed in $ROOT"
  TARGET_DIR="$("$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")" \
    || die "cannot read the target directory from cargo metadata"
}

if [[ -n "${TOLLGATE_INTEROP_VENV:-}" ]]; then
  VENV="$TOLLGATE_INTEROP_VENV"
else
  find_target_dir
  VENV="$TARGET_DIR/interop-venv"
fi
REQS="$HERE/requirements.txt"
# The venv is reused while requirements.txt and the interpreter stay the same.
WANT_STAMP="$("$PYTHON" - "$REQS" <<'EOF'
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest(), sys.version.split()[0], sys.executable)
EOF
)"

venv_python() {
  # A venv proper, or (where `python -m venv` is unavailable, e.g. Debian
  # without python3-venv) a --target install run through PYTHONPATH.
  if [[ -x "$VENV/bin/python" ]]; then
    "$VENV/bin/python" "$@"
  else
    PYTHONPATH="$VENV/site${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"
  fi
}

if [[ "$(cat "$VENV/.interop-stamp" 2>/dev/null || true)" != "$WANT_STAMP" ]]; then
  log "installing the Python MCP SDK ($(grep -v '^#' "$REQS" | xargs)) into $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  PIP_FLAGS=(--quiet --disable-pip-version-check --no-input --no-warn-conflicts)
  export PIP_ROOT_USER_ACTION=ignore
  if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && [[ -x "$VENV/bin/python" ]]; then
    "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -r "$REQS" \
      || die "pip could not install $REQS into $VENV"
  else
    log "'$PYTHON -m venv' is unavailable here; installing with pip --target instead"
    rm -rf "$VENV"
    mkdir -p "$VENV/site"
    "$PYTHON" -m pip install "${PIP_FLAGS[@]}" --target "$VENV/site" -r "$REQS" \
      || die "pip could not install $REQS into $VENV/site"
  fi
  printf '%s\n' "$WANT_STAMP" >"$VENV/.interop-stamp"
fi
venv_python -c 'import mcp, httpx2, anyio' 2>/dev/null \
  || die "the SDK in $VENV does not import; delete that directory and run again"

# --- 2. The gateway ----------------------------------------------------------
if [[ -n "${TOLLGATE_BIN:-}" ]]; then
  BIN="$TOLLGATE_BIN"
else
  log "building the gateway (cargo build -p tollgate)"
  find_target_dir
  (cd "$ROOT" && cargo build -p tollgate) >&2 || die "cargo build -p tollgate failed"
  BIN="$TARGET_DIR/debug/tollgate"
fi
[[ -x "$BIN" ]] || die "no gateway binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-interop.XXXXXX")"

# Two free loopback ports: the gateway's and the demo backend's (the shipped
# manifests put the demo backend on 127.0.0.1:8931, which may be taken).
free_ports() {
  "$PYTHON" - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

healthz() {
  "$PYTHON" - "$1" <<'EOF'
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2) as r:
        sys.exit(0 if r.status == 200 and r.read().strip() == b"ok" else 1)
except Exception:
    sys.exit(1)
EOF
}

# A port picked free can be taken before the gateway binds it: start over with
# new ports a few times before giving up.
started=""
for attempt in 1 2 3; do
  ports="$(free_ports)" || die "could not pick free loopback ports"
  read -r PORT DEMO_PORT <<<"$ports"
  rm -rf "$WORK/data" "$WORK/manifests"
  mkdir -p "$WORK/data" "$WORK/manifests"
  cp -R "$ROOT/manifests/." "$WORK/manifests/"
  while IFS= read -r -d '' f; do
    sed -i.orig "s/127\.0\.0\.1:8931/127.0.0.1:$DEMO_PORT/g" "$f" && rm -f "$f.orig"
  done < <(find "$WORK/manifests" -type f \( -name '*.yaml' -o -name '*.yml' \) -print0)
  if grep -rq --include='*.yaml' --include='*.yml' '127\.0\.0\.1:8931' "$WORK/manifests"; then
    die "the manifest copy still names 127.0.0.1:8931"
  fi
  # The demo backend must have moved too, or it would clash with anything on 8931.
  while IFS= read -r f; do
    grep -q "127\.0\.0\.1:$DEMO_PORT" "$f" \
      || die "the DemoBackend manifest $(basename "$f") does not listen on 127.0.0.1:8931, so it was not moved"
  done < <(grep -rl --include='*.yaml' --include='*.yml' '^kind: *DemoBackend' "$WORK/manifests" || true)

  KEY="$("$BIN" --data "$WORK/data" --manifests "$WORK/manifests" agents issue-key support-bot 2>"$WORK/issue-key.err")" \
    || die "issue-key failed: $(cat "$WORK/issue-key.err")"
  [[ -n "$KEY" ]] || die "issue-key printed no key"

  log "starting the gateway on 127.0.0.1:$PORT (demo backend on 127.0.0.1:$DEMO_PORT), attempt $attempt"
  NO_COLOR=1 "$BIN" --data "$WORK/data" --manifests "$WORK/manifests" serve --listen "127.0.0.1:$PORT" \
    >"$WORK/gateway.log" 2>&1 </dev/null &
  SERVER_PID=$!

  deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      break
    fi
    if healthz "$PORT"; then
      started=yes
      break
    fi
    sleep 0.2
  done
  [[ -n "$started" ]] && break
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    die "the gateway did not answer GET /healthz with \"ok\" within ${WAIT_SECONDS}s"
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  log "the gateway exited before it was healthy:"
  sed 's/^/  gateway| /' "$WORK/gateway.log" >&2
done
[[ -n "$started" ]] || die "the gateway did not start in 3 attempts"

# A task for the approval flow, and head-of-support's credential.
TASK_TOKEN="$("$BIN" --data "$WORK/data" --manifests "$WORK/manifests" tasks start --agent support-bot \
  --purpose "interop: refunds that wait for approval" --tools billing.refund --ttl 15m 2>"$WORK/task.err")" \
  || die "tasks start failed: $(cat "$WORK/task.err")"
APPROVER_KEY="$("$BIN" --data "$WORK/data" --manifests "$WORK/manifests" approvers issue-key head-of-support 2>"$WORK/approver.err")" \
  || die "approvers issue-key failed: $(cat "$WORK/approver.err")"

# --- 3. The client -----------------------------------------------------------
log "running the Python SDK client against http://127.0.0.1:$PORT/mcp"
set +e
TOLLGATE_URL="http://127.0.0.1:$PORT/mcp" TOLLGATE_KEY="$KEY" \
  TOLLGATE_TASK_TOKEN="$TASK_TOKEN" TOLLGATE_APPROVER_KEY="$APPROVER_KEY" \
  venv_python "$HERE/python_sdk_client.py" 2>&1 | tee "$WORK/client.out"
status=${PIPESTATUS[0]}
set -e

if ((status != 0)); then
  log "the client exited with status $status"
  show_gateway_log
  # The summary stays the last line of output.
  summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/client.out" | tail -n 1 || true)"
  echo "${summary:-0 passed, 1 failed}"
fi
exit "$status"
