"""Shared fixtures. `stack` and `driver` are module-scoped: every test module that asks for them gets
its own real Neo4j + S3Proxy (fresh state dir, free ports), so modules cannot disturb each other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphmodel.connection import connect
from graphmodel.stack import StackConfig
from tests.services import local_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    with local_stack(tmp_path_factory.mktemp("stack-state")) as cfg:
        yield cfg


@pytest.fixture(scope="module")
def driver(stack):
    with connect(stack) as drv:
        yield drv
