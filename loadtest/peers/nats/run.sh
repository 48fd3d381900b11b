#!/usr/bin/env bash
# Peer "nats": nats-server with a WebSocket listener on PORT (no TLS).
# The NATS client port is chosen at random (not used by the load client).
# Installs nats-server from Debian if missing.
set -euo pipefail
PORT="${1:?usage: run.sh PORT}"
DIR="$(cd "$(dirname "$0")" && pwd)"
BIN="$(command -v nats-server || true)"
[ -z "$BIN" ] && [ -x /usr/sbin/nats-server ] && BIN=/usr/sbin/nats-server
if [ -z "$BIN" ]; then
  (apt-get install -y nats-server || (apt-get update && apt-get install -y nats-server)) >&2
  BIN=/usr/sbin/nats-server
fi
CONF="$(mktemp /tmp/nats-peer-XXXXXX.conf)"
cat > "$CONF" <<CONF
listen: "127.0.0.1:-1"
websocket {
  listen: "127.0.0.1:${PORT}"
  no_tls: true
  compression: false
}
CONF
exec "$BIN" -c "$CONF"
