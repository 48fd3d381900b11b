#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client (all 517 cases) against ringcast's dev `/echo`.
# usage: tests/conformance/run.sh [--quick]      (builds the release binary if needed)
# Exit 0 only when no case FAILED. Reports land in ~/.cache/autobahn-wstest/autobahn-reports/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${RINGCAST_BIN:-$root/target/release/ringcast}"
[[ -x "$bin" ]] || (cd "$root" && cargo build --release)

log="$(mktemp)"
"$bin" serve --dev --listen 127.0.0.1:0 --shards 2 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr="$(grep -o 'listening on [0-9.:]*' "$log" | awk '{print $3}' || true)"
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "conformance: server did not start"; cat "$log"; exit 2; }
bash "$here/autobahn.sh" "ws://$addr/echo" --agent ringcast "$@"
