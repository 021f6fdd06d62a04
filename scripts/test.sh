#!/usr/bin/env bash
# The project's test command: sets up everything it needs (venv with pinned packages), lints, and
# runs the test suite. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k importance`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/bootstrap.sh")"
cd "$here"
# Headless Chromium drives the Neo4j Browser and HTML report tests (Debian package `chromium`).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing chromium (Browser and report tests)" >&2
  apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; } \
    || echo "chromium could not be installed; the Browser and report tests will be skipped" >&2
fi
echo "== ruff" >&2
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
echo "== pytest" >&2
exec "$venv/bin/python" -m pytest "$@"
