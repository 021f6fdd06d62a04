"""A Neo4j driver built from the stack configuration, with errors that say what to do.

Managed transactions (``session.execute_write``) retry transient errors and lost connections for
``retry_seconds``; the default (60 s, ``NEURFLOW_NEO4J_RETRY_SECONDS``) outlasts a restart of the
local Neo4j, so an ingest survives one.
"""

from __future__ import annotations

import os
from typing import Any

from neo4j import Driver, GraphDatabase, ManagedTransaction
from neo4j.exceptions import AuthError, ConfigurationError, DriverError, Neo4jError, ServiceUnavailable

from graphmodel.stack.config import StackConfig, load_config

DEFAULT_RETRY_SECONDS = 60.0
RETRY_VARIABLE = "NEURFLOW_NEO4J_RETRY_SECONDS"


class GraphStoreError(RuntimeError):
    """A problem with the graph store that the user can act on; the message says how."""


def retry_seconds_from_env() -> float:
    text = os.environ.get(RETRY_VARIABLE)
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        raise GraphStoreError(f"{RETRY_VARIABLE}={text!r} is not a number of seconds") from None
    if value < 0:
        raise GraphStoreError(f"{RETRY_VARIABLE}={text!r} must be >= 0")
    return value


def unreachable_message(uri: str, exc: BaseException) -> str:
    detail = " ".join(str(exc).split())
    return (
        f"cannot reach Neo4j at {uri}: {detail}. Start it with `neurflow stack up`, or set "
        "NEURFLOW_NEO4J_URI to a running Neo4j 5"
    )


def connect(
    cfg: StackConfig | None = None,
    *,
    retry_seconds: float | None = None,
    connection_timeout: float = 5.0,
    verify: bool = True,
) -> Driver:
    """Open a driver for ``cfg`` (default: ``load_config()``) and, when ``verify``, check that the
    server answers with the configured credentials. Raises GraphStoreError naming the URI."""
    cfg = cfg or load_config()
    retry = retry_seconds_from_env() if retry_seconds is None else retry_seconds
    try:
        driver = GraphDatabase.driver(
            cfg.neo4j_uri,
            auth=(cfg.neo4j_user, cfg.neo4j_password),
            connection_timeout=connection_timeout,
            max_transaction_retry_time=retry,
            notifications_min_severity="OFF",
        )
    except (ConfigurationError, ValueError) as exc:
        raise GraphStoreError(
            f"NEURFLOW_NEO4J_URI={cfg.neo4j_uri!r} is not a usable Bolt URI: {exc}"
        ) from exc
    if not verify:
        return driver
    try:
        driver.verify_connectivity()
    except AuthError as exc:
        driver.close()
        raise GraphStoreError(
            f"Neo4j at {cfg.neo4j_uri} rejected user {cfg.neo4j_user!r} with the configured password "
            f"({exc.code}); set NEURFLOW_NEO4J_USER / NEURFLOW_NEO4J_PASSWORD to that server's credentials"
        ) from exc
    except (ServiceUnavailable, DriverError, Neo4jError, OSError) as exc:
        driver.close()
        raise GraphStoreError(unreachable_message(cfg.neo4j_uri, exc)) from exc
    return driver


def read_rows(driver: Driver, query: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of one read-only query, as dicts, in a managed read transaction (retried on transient
    errors like every transaction of the store)."""

    def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
        return [record.data() for record in tx.run(query, params)]

    with driver.session() as session:
        return session.execute_read(work)
