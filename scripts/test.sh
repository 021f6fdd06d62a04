#!/usr/bin/env bash
# The project's test command: sets up everything it needs (venv with pinned packages), lints, and
# runs the test suite. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k importance`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/bootstrap.sh")"
cd "$here"
echo "== ruff" >&2
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
echo "== pytest" >&2
exec "$venv/bin/python" -m pytest "$@"
