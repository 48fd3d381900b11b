#!/usr/bin/env bash
# CI smoke test: starts a ringcast binary on a free port, runs a short
# fan-out (200 subscribers, 3 s) and a brief connection storm, then (when
# redis-server is on PATH) a tiny two-node fleet fan-out through Redis
# (`loadtest fleet`, 100 subscribers, 2 s), and exits non-zero unless
# messages were delivered with zero loss / duplicates and no connection
# failed.
#
#   loadtest/smoke.sh [RINGCAST_BIN]        (default target/release/ringcast)
#
# Env: LOADTEST_BIN (prebuilt loadtest; else built with cargo),
#      SMOKE_TARGET (adapter, default ringcast; a binary named peer_tokio is
#      started as `peer_tokio ADDR` and tested with --target tokio).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target/release/ringcast}"
[ -x "$BIN" ] || { echo "smoke: server binary $BIN not found" >&2; exit 1; }

LOADTEST="${LOADTEST_BIN:-}"
if [ -z "$LOADTEST" ]; then
  (cd "$ROOT" && cargo build --release -p loadtest) >&2
  LOADTEST="${CARGO_TARGET_DIR:-$ROOT/target}/release/loadtest"
fi

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADDR="127.0.0.1:$PORT"
LOG="$(mktemp /tmp/smoke-server-XXXXXX.log)"
if [ "$(basename "$BIN")" = peer_tokio ]; then
  TARGET="${SMOKE_TARGET:-tokio}"
  "$BIN" "$ADDR" >"$LOG" 2>&1 &
else
  TARGET="${SMOKE_TARGET:-ringcast}"
  "$BIN" serve --dev --listen "$ADDR" >"$LOG" 2>&1 &
fi
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
}
trap cleanup EXIT

for i in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "smoke: server exited" >&2; cat "$LOG" >&2; exit 1; }
  [ "$i" = 100 ] && { echo "smoke: port $PORT never opened" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done

status=0
echo "== smoke: fanout ($TARGET at $ADDR)"
timeout 120 "$LOADTEST" fanout --target "$TARGET" --url "$ADDR" --conns 200 --duration 3s \
  --rate 500 --server-pid "$SERVER_PID" --check || status=1
echo "== smoke: storm"
timeout 60 "$LOADTEST" storm --target "$TARGET" --url "$ADDR" --conns 16 --duration 2s \
  --check || status=1
if [ "$TARGET" = ringcast ]; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "== smoke: fleet (two nodes through Redis vs. one node)"
    timeout 90 "$LOADTEST" fleet --ringcast-bin "$BIN" --conns 100 --rate 200 --duration 2s \
      --check || status=1
  else
    echo "== smoke: fleet skipped (no redis-server on PATH)"
  fi
fi
if [ "$status" != 0 ]; then
  echo "smoke: FAILED (server log: $LOG)" >&2
  tail -20 "$LOG" >&2 || true
  exit 1
fi
echo "smoke: passed"
