#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs them.
set -euo pipefail
cd "$(dirname "$0")"
# dcmtk's clients and Orthanc are the real peers the tests talk to; chromium and its driver
# are the browser the console's test drives.
missing=()
command -v storescu >/dev/null && command -v getscu >/dev/null || missing+=(dcmtk)
command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  apt-get update -qq
  # The orthanc package would start its service on every interface: tests start their own.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"; made_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "${made_policy:-}" ]; then rm -f "$policy"; fi
fi
# The OHIF viewer (@ohif/app's built dist/) that tests/integration/test_ohif.py serves, fetched
# once into a cache (OHIF_DIST names another copy). Without npm that test skips (fails in CI).
ohif_cache="$HOME/.cache/scp-node-tests/ohif-3.13.2"
if [ -z "${OHIF_DIST:-}" ] && [ ! -f "$ohif_cache/package/dist/index.html" ] && command -v npm >/dev/null; then
  mkdir -p "$ohif_cache" && ohif_tmp="$(mktemp -d "$ohif_cache/.fetch.XXXXXX")"
  if (cd "$ohif_tmp" && npm pack --silent @ohif/app@3.13.2 && tar xzf ohif-app-3.13.2.tgz) >/dev/null 2>&1; then
    rm -rf "$ohif_cache/package" && mv "$ohif_tmp/package" "$ohif_cache/package"
  else
    echo "npm pack @ohif/app@3.13.2 failed: test_ohif.py will skip (fail in CI)" >&2
  fi
  rm -rf "$ohif_tmp"
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
# Two workers (the machines have two cores): many tests wait on peers, sockets and subprocesses.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
