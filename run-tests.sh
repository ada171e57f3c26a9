#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs them.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v storescu >/dev/null || ! command -v getscu >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk >/dev/null
fi
# Tests use the PostgreSQL and Redis servers on 127.0.0.1; start them if they are down.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
