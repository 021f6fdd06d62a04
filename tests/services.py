"""Real local services for tests: a Neo4j + S3Proxy stack on free loopback ports, in a temporary
state dir, with this process's NEURFLOW_* variables pointing at it while it runs."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from graphmodel.stack import StackConfig, down, load_config, up

STACK_ENV = (
    "NEURFLOW_STATE_DIR",
    "NEURFLOW_STACK_BUILD_DIR",
    "NEURFLOW_NEO4J_URI",
    "NEURFLOW_NEO4J_USER",
    "NEURFLOW_NEO4J_PASSWORD",
    "NEURFLOW_S3_ENDPOINT",
    "NEURFLOW_S3_ACCESS_KEY",
    "NEURFLOW_S3_SECRET_KEY",
    "NEURFLOW_S3_BUCKET",
    "NEURFLOW_BROWSER_PORT",
    "NEURFLOW_GUIDE_PORT",
)


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@contextlib.contextmanager
def stack_env(state_dir: Path) -> Iterator[StackConfig]:
    """The config of a stack on free loopback ports with `state_dir`; while the block runs, this
    process's NEURFLOW_* variables point at it (any the user had set are hidden)."""
    bolt, s3, browser, guide = free_ports(4)
    build_dir = os.environ.get("NEURFLOW_STACK_BUILD_DIR") or str(
        Path.home() / ".cache" / "neurflow" / "stack-build"
    )
    with pytest.MonkeyPatch.context() as env:
        for name in STACK_ENV:
            env.delenv(name, raising=False)
        env.setenv("NEURFLOW_STATE_DIR", str(state_dir))
        env.setenv("NEURFLOW_STACK_BUILD_DIR", build_dir)
        env.setenv("NEURFLOW_NEO4J_URI", f"bolt://127.0.0.1:{bolt}")
        env.setenv("NEURFLOW_S3_ENDPOINT", f"http://127.0.0.1:{s3}")
        env.setenv("NEURFLOW_S3_BUCKET", "neurflow-test")
        env.setenv("NEURFLOW_BROWSER_PORT", str(browser))
        env.setenv("NEURFLOW_GUIDE_PORT", str(guide))
        yield load_config()


@contextlib.contextmanager
def local_stack(state_dir: Path, *, guide: bool = False) -> Iterator[StackConfig]:
    """Neo4j (serving Browser) and S3Proxy (and the guide server when `guide`) running for the
    block, configured by `stack_env`."""
    with stack_env(state_dir) as cfg:
        try:
            up(cfg, guide=guide, timeout=240)
            yield cfg
        finally:
            down(cfg)


def cli_env(stack: StackConfig, state_dir: Path, *, threads: int = 2) -> dict[str, str]:
    """The environment of a `neurflow` subprocess against `stack`: its Neo4j, no S3 configured, its
    own state dir (so the stack's running S3 server is not picked up automatically)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURFLOW_")}
    env.update(
        NEURFLOW_STATE_DIR=str(state_dir),
        NEURFLOW_NEO4J_URI=stack.neo4j_uri,
        NEURFLOW_NEO4J_PASSWORD=stack.neo4j_password,
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        OMP_NUM_THREADS=str(threads),
    )
    return env
