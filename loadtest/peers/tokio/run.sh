#!/usr/bin/env bash
# Peer "tokio": src/bin/peer_tokio.rs (tokio-tungstenite + broadcast channels).
# Uses $PEER_TOKIO_BIN if set (loadtest compare sets it), else builds it.
set -euo pipefail
PORT="${1:?usage: run.sh PORT}"
DIR="$(cd "$(dirname "$0")" && pwd)"
BIN="${PEER_TOKIO_BIN:-}"
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
  ROOT="$(cd "$DIR/../../.." && pwd)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  (cd "$ROOT" && cargo build --release -p loadtest --bin peer_tokio) >&2
  BIN="$CARGO_TARGET_DIR/release/peer_tokio"
fi
exec "$BIN" "127.0.0.1:${PORT}"
