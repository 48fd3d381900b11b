#!/usr/bin/env bash
# Peer "uws": uWebSockets via PyPI socketify (needs libuv1 from Debian),
# installed into ./.venv once; runs server.py on PORT in the foreground.
set -euo pipefail
PORT="${1:?usage: run.sh PORT}"
DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$DIR"
if ! ldconfig -p | grep 'libuv\.so\.1' >/dev/null; then
  (apt-get install -y libuv1 || (apt-get update && apt-get install -y libuv1)) >&2
fi
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/.requirements; then
  python3 -m venv .venv >&2
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt >&2
  cp requirements.txt .venv/.requirements
fi
exec .venv/bin/python server.py "$PORT"
