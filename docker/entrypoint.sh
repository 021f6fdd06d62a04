#!/bin/sh
# Entrypoint of the ingest image: check that /out is writable, then run `neurflow "$@"`.
# Docker creates a missing bind-mount folder (../out) as root, which uid 1000 cannot write to.
set -e
if [ ! -w /out ]; then
  echo "neurflow: /out (the output folder, NEURFLOW_OUT_DIR on the host) is not writable by uid $(id -u): create it before starting the container (mkdir -p out), or run as its owner with NEURFLOW_UID=\$(id -u) NEURFLOW_GID=\$(id -g)" >&2
  exit 2
fi
exec neurflow "$@"
