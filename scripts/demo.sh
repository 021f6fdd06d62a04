#!/usr/bin/env bash
# The demo: sets up the venv if needed, then runs `neurflow demo` on the planted-concept benchmark.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/bootstrap.sh")"
cd "$here"
exec "$venv/bin/neurflow" demo "$@"
