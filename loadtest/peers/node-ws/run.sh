#!/usr/bin/env bash
# Peer "node-ws": installs the `ws` package into ./node_modules (once) and
# runs server.js on PORT in the foreground.
set -euo pipefail
PORT="${1:?usage: run.sh PORT}"
DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$DIR"
if [ ! -f node_modules/ws/package.json ]; then
  npm install --no-audit --no-fund --loglevel=error >&2
fi
exec node server.js "$PORT"
