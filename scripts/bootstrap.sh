#!/usr/bin/env bash
# Creates (once) the project's virtual environment outside the clone, keyed on the hash of
# requirements.txt, and installs the project into it in editable mode.
# Prints the venv path on stdout; everything else goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${NEURFLOW_VENV_ROOT:-$HOME/.cache/neurflow}"
key="$(sha256sum < "$here/requirements.txt" | cut -c1-16)"
venv="$root/venv-$key"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "bootstrap: creating $venv (first run downloads torch, a few GB)" >&2
  mkdir -p "$root"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$here/requirements.txt" >&2
  touch "$venv/.complete"
fi
# The editable install is cheap and keeps the console script pointing at this checkout. Check from a
# neutral directory: run from the checkout, `import ingest` would find it without any install.
installed="$(cd / && "$venv/bin/python" -c "import ingest, os; print(os.path.dirname(os.path.dirname(ingest.__file__)))" 2>/dev/null || true)"
# pyproject.toml declares the console script and the entry points (the Browser guide), which only an
# install records: reinstall when it changed since the last install.
project="$(sha256sum < "$here/pyproject.toml" | cut -c1-16)"
if [ "$installed" != "$here" ] || [ ! -x "$venv/bin/neurflow" ] || [ ! -f "$venv/.project-$project" ]; then
  "$venv/bin/python" -m pip install -q --no-deps -e "$here" >&2
  rm -f "$venv"/.project-*
  touch "$venv/.project-$project"
fi
echo "$venv"
