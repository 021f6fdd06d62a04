"""Configuration of the local stack, from environment variables with safe defaults.

Secrets that the user does not set are generated once and kept in ``<state_dir>/credentials.json``
(mode 0600), so every process of the same user agrees on them without them ever being printed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

CREDENTIALS_FILE = "credentials.json"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class StackError(RuntimeError):
    """A problem with the local stack that the user can act on; the message says how."""


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str = field(repr=False)
    s3_endpoint: str
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    s3_bucket: str
    browser_port: int
    build_dir: Path
    guide_port: int = 7475
    neo4j_heap: str = "1g"
    neo4j_pagecache: str = "128m"
    # Neo4j prunes transaction logs beyond this at each checkpoint (its own default keeps them all
    # for two days: gigabytes after a campaign). Any value of db.tx_log.rotation.retention_policy.
    neo4j_tx_logs: str = "256M size"

    @property
    def neo4j_address(self) -> tuple[str, int]:
        return _host_port(self.neo4j_uri, 7687, "NEURFLOW_NEO4J_URI")

    @property
    def s3_address(self) -> tuple[str, int]:
        default = 443 if self.s3_endpoint.startswith("https:") else 80
        return _host_port(self.s3_endpoint, default, "NEURFLOW_S3_ENDPOINT")

    @property
    def browser_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.browser_port

    @property
    def browser_url(self) -> str:
        """Neo4j Browser as the local Neo4j serves it, with the connect form filled in (Bolt address
        and user: only the password is left to type)."""
        parts = urlsplit(self.neo4j_uri)
        user = quote(self.neo4j_user, safe="")
        return f"http://127.0.0.1:{self.browser_port}/browser/?dbms={parts.scheme}://{user}@{parts.netloc}"

    @property
    def guide_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.guide_port

    @property
    def guide_url(self) -> str:
        """The NeurFlow Browser guide; ``:play`` it in Browser."""
        return f"http://127.0.0.1:{self.guide_port}/guide/neurflow.html"


def _host_port(url: str, default_port: int, variable: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise StackError(f"{variable}={url!r} has no host; expected e.g. scheme://127.0.0.1:PORT")
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise StackError(f"{variable}={url!r} has an invalid port: {exc}") from exc
    return parts.hostname, port


def check_url(url: str, schemes: tuple[str, ...], variable: str, example: str) -> None:
    """Refuse a URL without a known scheme, a host, or a valid port before anything connects to it
    (the drivers would fall back to localhost or wrap the port, and send the password there)."""
    parts = urlsplit(url)
    fix = f"set {variable} like {example}"
    if parts.scheme not in schemes:
        raise StackError(
            f"{variable}={url!r} has scheme {parts.scheme!r}, not one of {', '.join(schemes)}; {fix}"
        )
    if not parts.hostname:
        raise StackError(f"{variable}={url!r} has no host; {fix}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise StackError(f"{variable}={url!r} has an invalid port (a port is a number 1..65535); {fix}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StackError(f"{variable}={url!r} has a path or query; give only scheme://host:port ({fix})")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "neurflow"


SECRET_KEYS = ("neo4j_password", "s3_access_key", "s3_secret_key")
# The keys of the config file: the NEURFLOW_* variables without the prefix, in lower case.
FILE_KEYS = (
    "state_dir",
    "stack_build_dir",
    "neo4j_uri",
    "neo4j_user",
    "neo4j_password",
    "neo4j_heap",
    "neo4j_pagecache",
    "neo4j_tx_logs",
    "neo4j_retry_seconds",
    "s3_endpoint",
    "s3_access_key",
    "s3_secret_key",
    "s3_bucket",
    "browser_port",
    "guide_port",
)
BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def config_file_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(os.environ.get("NEURFLOW_CONFIG") or Path(base) / "neurflow" / "config.toml").expanduser()


def _file_settings() -> dict[str, str]:
    """Settings from the optional TOML config file, as NEURFLOW_* names (the environment wins).

    Keys are the variable names without the prefix, in lower case: ``neo4j_uri = "bolt://..."``.
    A file holding secrets must not be readable by others.
    """
    path = config_file_path()
    if not path.is_file():
        if os.environ.get("NEURFLOW_CONFIG"):
            raise StackError(f"NEURFLOW_CONFIG={str(path)!r} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StackError(f"cannot read the config file {path}: {exc}") from exc
    if any(k in data for k in SECRET_KEYS) and path.stat().st_mode & 0o077:
        raise StackError(f"{path} holds secrets but others can read it; run `chmod 600 {path}`")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, FILE_KEYS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise StackError(
            f"{path}: unknown setting {', '.join(hints)}; the keys are {', '.join(FILE_KEYS)}. Nothing was "
            "connected to"
        )
    settings = {}
    for key, value in data.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise StackError(f"{path}: {key} must be a string or a number, got {value!r}")
        settings[f"NEURFLOW_{key.upper()}"] = str(value)
    return settings


def load_config() -> StackConfig:
    """Read the ``NEURFLOW_*`` variables (over the optional config file); create a missing state dir
    (0700) and missing secrets."""
    env = {**_file_settings(), **os.environ}
    state_dir = Path(env.get("NEURFLOW_STATE_DIR") or default_state_dir()).expanduser().resolve()
    if not state_dir.exists():
        state_dir.mkdir(parents=True, mode=0o700)
    stored = _stored_credentials(state_dir)
    browser_port = _port(env, "NEURFLOW_BROWSER_PORT", 7474)
    guide_port = _port(env, "NEURFLOW_GUIDE_PORT", 7475)
    if guide_port == browser_port:
        raise StackError(
            f"NEURFLOW_GUIDE_PORT and NEURFLOW_BROWSER_PORT are both {guide_port}; the guide and Neo4j "
            "Browser need two ports. Change one of them."
        )
    build_dir = env.get("NEURFLOW_STACK_BUILD_DIR")
    neo4j_uri = env.get("NEURFLOW_NEO4J_URI", "bolt://127.0.0.1:7687")
    s3_endpoint = env.get("NEURFLOW_S3_ENDPOINT", "http://127.0.0.1:9000")
    check_url(neo4j_uri, BOLT_SCHEMES, "NEURFLOW_NEO4J_URI", "bolt://127.0.0.1:7687")
    check_url(s3_endpoint, ("http", "https"), "NEURFLOW_S3_ENDPOINT", "http://127.0.0.1:9000")
    return StackConfig(
        state_dir=state_dir,
        neo4j_uri=neo4j_uri,
        neo4j_user=env.get("NEURFLOW_NEO4J_USER", "neo4j"),
        neo4j_password=env.get("NEURFLOW_NEO4J_PASSWORD") or stored["neo4j_password"],
        s3_endpoint=s3_endpoint,
        s3_access_key=env.get("NEURFLOW_S3_ACCESS_KEY") or stored["s3_access_key"],
        s3_secret_key=env.get("NEURFLOW_S3_SECRET_KEY") or stored["s3_secret_key"],
        s3_bucket=env.get("NEURFLOW_S3_BUCKET", "neurflow"),
        browser_port=browser_port,
        guide_port=guide_port,
        build_dir=Path(build_dir).expanduser().resolve() if build_dir else state_dir / "java",
        neo4j_heap=env.get("NEURFLOW_NEO4J_HEAP", "1g"),
        neo4j_pagecache=env.get("NEURFLOW_NEO4J_PAGECACHE", "128m"),
        neo4j_tx_logs=_tx_log_retention(env.get("NEURFLOW_NEO4J_TX_LOGS", "256M size")),
    )


def _port(env: dict[str, str], variable: str, default: int) -> int:
    text = env.get(variable, str(default))
    try:
        port = int(text)
    except ValueError as exc:
        raise StackError(f"{variable}={text!r} is not a port number") from exc
    if not 1 <= port <= 65535:
        raise StackError(f"{variable}={text!r} is out of range: a port is 1..65535")
    return port


_RETENTION = re.compile(r"^(true|false|keep_all|keep_none|\d+[kKmMgG]? (files|size|txs|entries|hours|days))$")


def _tx_log_retention(value: str) -> str:
    """Neo4j's retention syntax, checked here so a typo is one line, not a Neo4j that will not start."""
    value = " ".join(value.split())
    if not _RETENTION.match(value):
        raise StackError(
            f"NEURFLOW_NEO4J_TX_LOGS={value!r} is not a transaction-log retention; use e.g. '256M size', "
            "'2 files', '1 days' or 'keep_all' (Neo4j's db.tx_log.rotation.retention_policy)"
        )
    return value


def _stored_credentials(state_dir: Path) -> dict[str, str]:
    """Generated secrets, created atomically with mode 0600 on first use."""
    path = state_dir / CREDENTIALS_FILE
    if not path.exists():
        generated = {
            "neo4j_password": secrets.token_urlsafe(24),
            "s3_access_key": "neurflow-" + secrets.token_hex(6),
            "s3_secret_key": secrets.token_urlsafe(30),
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                json.dump(generated, handle)
            return generated
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise StackError(
            f"cannot read the stack credentials in {path} ({exc}); delete the file to generate new "
            "ones (a Neo4j database created with the old password then needs the old password in "
            "NEURFLOW_NEO4J_PASSWORD, or a new state dir)"
        ) from exc


def require_local(cfg: StackConfig, service: str) -> tuple[str, int]:
    """Address of a service this machine should run; refuse remote addresses."""
    host, port = {
        "neo4j": cfg.neo4j_address,
        "s3": cfg.s3_address,
        "browser": cfg.browser_address,
        "guide": cfg.guide_address,
    }[service]
    if host not in LOOPBACK_HOSTS:
        variable = {"neo4j": "NEURFLOW_NEO4J_URI", "s3": "NEURFLOW_S3_ENDPOINT"}[service]
        raise StackError(
            f"{variable} points to {host}, not to this machine; the local stack only starts "
            f"services on 127.0.0.1. Unset {variable}, or leave {service} out of `up`."
        )
    return ("127.0.0.1" if host == "localhost" else host), port
