#!/usr/bin/env bash
# Peer "django": Django Channels 4 + channels_redis under daphne on PORT.
# Installs into ./.venv (once), starts its own redis-server on PORT+1000
# (no persistence) and stops it on exit.
set -euo pipefail
PORT="${1:?usage: run.sh PORT}"
DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$DIR"
REDIS_PORT=$((PORT + 1000))
if [ ! -x .venv/bin/daphne ] || ! cmp -s requirements.txt .venv/.requirements; then
  python3 -m venv .venv >&2
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt >&2
  cp requirements.txt .venv/.requirements
fi
if ! command -v redis-server >/dev/null; then
  (apt-get install -y redis-server || (apt-get update && apt-get install -y redis-server)) >&2
fi
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning >&2 &
REDIS_PID=$!
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' TERM INT
for _ in $(seq 50); do
  (echo PING >/dev/tcp/127.0.0.1/"$REDIS_PORT") 2>/dev/null && break
  sleep 0.1
done
export PEER_REDIS_PORT="$REDIS_PORT" DJANGO_SETTINGS_MODULE=peer.settings
.venv/bin/daphne -b 127.0.0.1 -p "$PORT" peer.asgi:application &
SERVER_PID=$!
wait "$SERVER_PID"
