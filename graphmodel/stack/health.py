"""Health checks that exercise each service the way the product uses it.

Each check returns ``None`` when healthy and a short reason otherwise. A rejected credential is not
a "not ready yet" condition, so it raises :class:`StackError` at once.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from graphmodel.stack.config import StackConfig, StackError


def neo4j_problem(cfg: StackConfig, timeout: float = 3.0) -> str | None:
    """A real Bolt ``RETURN 1`` with the configured user and password."""
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable, SessionExpired

    try:
        with GraphDatabase.driver(
            cfg.neo4j_uri,
            auth=(cfg.neo4j_user, cfg.neo4j_password),
            connection_timeout=timeout,
            connection_acquisition_timeout=timeout,  # bounds the handshake too: a hung server answers nothing
            max_transaction_retry_time=0,
        ) as driver:
            records, _, _ = driver.execute_query("RETURN 1 AS ok")
            return None if records and records[0]["ok"] == 1 else "RETURN 1 gave no row"
    except AuthError as exc:
        raise StackError(
            f"Neo4j at {cfg.neo4j_uri} rejected user {cfg.neo4j_user!r} with the configured password "
            f"({exc.code}). If this is not the stack's own Neo4j, stop it or point "
            "NEURFLOW_NEO4J_URI elsewhere; otherwise set NEURFLOW_NEO4J_PASSWORD to its password."
        ) from exc
    except (ServiceUnavailable, SessionExpired, OSError) as exc:
        return f"not reachable: {exc}"
    except Neo4jError as exc:
        return f"not ready: {exc.code}"


def _s3_client(cfg: StackConfig, secret: str | None = None, timeout: float = 3.0):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint,
        aws_access_key_id=cfg.s3_access_key,
        aws_secret_access_key=secret if secret is not None else cfg.s3_secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=timeout,
            read_timeout=timeout * 4,
            retries={"max_attempts": 1},
        ),
    )


def s3_client(cfg: StackConfig):
    """A boto3 S3 client for the configured endpoint and credentials (path-style addressing)."""
    return _s3_client(cfg, timeout=10.0)


def s3_problem(cfg: StackConfig, timeout: float = 3.0) -> str | None:
    """A signed ListBuckets with the configured key and secret."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3_client(cfg, timeout=timeout).list_buckets()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}:
            raise StackError(
                f"the S3 endpoint {cfg.s3_endpoint} rejected the configured access key ({code}). "
                "If it is not the stack's own S3 server, stop it or point NEURFLOW_S3_ENDPOINT "
                "elsewhere; otherwise set NEURFLOW_S3_ACCESS_KEY / NEURFLOW_S3_SECRET_KEY."
            ) from exc
        return f"error {code}"
    except BotoCoreError as exc:
        return f"not reachable: {exc}"
    return None


def ensure_bucket(cfg: StackConfig) -> None:
    from botocore.exceptions import ClientError

    client = s3_client(cfg)
    try:
        client.head_bucket(Bucket=cfg.s3_bucket)
    except ClientError:
        client.create_bucket(Bucket=cfg.s3_bucket)


def _page(url: str, timeout: float) -> tuple[str | None, str]:
    """(problem or None, start of the body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(65536).decode(errors="replace")
            if response.status != 200:
                return f"HTTP {response.status}", body
    except (urllib.error.URLError, OSError) as exc:
        return f"not reachable: {exc}", ""
    return None, body


def browser_problem(cfg: StackConfig, timeout: float = 3.0) -> str | None:
    """HTTP 200 with Neo4j Browser's index page where the local Neo4j serves it."""
    problem, body = _page(cfg.browser_url, timeout)
    if problem:
        return f"Neo4j Browser at {cfg.browser_url}: {problem}"
    return None if "Neo4j Browser" in body else f"the page at {cfg.browser_url} is not Neo4j Browser"


def guide_problem(cfg: StackConfig, timeout: float = 3.0) -> str | None:
    """HTTP 200 with the NeurFlow guide (the guide server answers 404 when no guide is installed)."""
    problem, body = _page(cfg.guide_url, timeout)
    if problem:
        return problem
    return None if "<slide" in body else "the guide page has no slides"
