"""The `neurflow` command line: one module per command or command group, assembled in `app`."""

from ingest.cli.app import main

__all__ = ["main"]
