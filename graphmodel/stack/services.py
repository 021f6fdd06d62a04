"""Start, stop and inspect the local services: Neo4j, S3Proxy and Neo4j Browser.

Layout of the state dir::

    credentials.json        generated secrets (0600)
    run/<service>.pid       pid and kernel start time of each running service
    logs/                   neo4j-launcher.log, s3proxy.log, browser.log, maven-build.log
    neo4j/data, neo4j/logs  the Neo4j store and Neo4j's own logs (debug.log, security.log, ...)
    s3/<bucket>/            the S3 objects (S3Proxy's filesystem backend)
    s3proxy/s3proxy.conf    S3Proxy settings, with the S3 secret (0600)
    java/                   the Maven build output (unless NEURFLOW_STACK_BUILD_DIR is set)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from graphmodel.stack import health
from graphmodel.stack.build import JavaBuild, ensure_built
from graphmodel.stack.config import StackConfig, StackError, load_config, require_local
from graphmodel.stack.processes import (
    listener_description,
    port_open,
    running_pid,
    spawn,
    stop,
    tail,
)

SERVICES = ("neo4j", "s3", "browser")
_MARKERS = {
    "neo4j": "org.neurflow.stack.Neo4jLauncher",
    "s3": "org.gaul.s3proxy.Main",
    "browser": "browser_server.py",
}
_LOGS = {"neo4j": "neo4j-launcher.log", "s3": "s3proxy.log", "browser": "browser.log"}
_STOP_TIMEOUT = {"neo4j": 60.0, "s3": 15.0, "browser": 5.0}
_NEO4J_READY = "neurflow-neo4j: ready"
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "JAVA_HOME", "TMPDIR")


def _pid_file(cfg: StackConfig, service: str) -> Path:
    return cfg.state_dir / "run" / f"{service}.pid"


def _log_file(cfg: StackConfig, service: str) -> Path:
    return cfg.state_dir / "logs" / _LOGS[service]


def _address(cfg: StackConfig, service: str) -> str:
    return {"neo4j": cfg.neo4j_uri, "s3": cfg.s3_endpoint, "browser": cfg.browser_url}[service]


def _pid(cfg: StackConfig, service: str) -> int | None:
    return running_pid(_pid_file(cfg, service), _MARKERS[service])


@contextlib.contextmanager
def _locked(cfg: StackConfig) -> Iterator[None]:
    """Serialise up/down/restart of one state dir across processes."""
    with open(cfg.state_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _base_env(**extra: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
    env.update(extra)
    return env


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "`java` is not on PATH; the local Neo4j and S3 servers need Java 17 "
            "(Debian: apt-get install openjdk-17-jre-headless), or use Docker: "
            "docker compose -f docker/compose.yml up"
        )
    return found


def _check_password(cfg: StackConfig) -> None:
    if len(cfg.neo4j_password) < 8:
        raise StackError(
            f"the Neo4j password has {len(cfg.neo4j_password)} characters; Neo4j requires at "
            "least 8. Set a longer NEURFLOW_NEO4J_PASSWORD (or unset it to use a generated one)."
        )


def _start_neo4j(cfg: StackConfig, build: JavaBuild) -> int:
    host, port = require_local(cfg, "neo4j")
    _check_password(cfg)
    home = cfg.state_dir / "neo4j"
    home.mkdir(parents=True, exist_ok=True)
    command = [
        _java(),
        f"-Xmx{cfg.neo4j_heap}",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Dfile.encoding=UTF-8",
        _MARKERS["neo4j"],
        str(home),
        host,
        str(port),
        cfg.neo4j_pagecache,
        cfg.neo4j_tx_logs,
    ]
    env = _base_env(CLASSPATH=build.neo4j_classpath, NEURFLOW_NEO4J_PASSWORD=cfg.neo4j_password)
    return spawn(
        command, pid_file=_pid_file(cfg, "neo4j"), log_file=_log_file(cfg, "neo4j"), env=env, cwd=home
    )


def _start_s3(cfg: StackConfig, build: JavaBuild) -> int:
    host, port = require_local(cfg, "s3")
    data = cfg.state_dir / "s3"
    data.mkdir(parents=True, exist_ok=True)
    conf_dir = cfg.state_dir / "s3proxy"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "s3proxy.conf"
    settings = {
        "s3proxy.endpoint": f"http://{host}:{port}",
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": cfg.s3_access_key,
        "s3proxy.credential": cfg.s3_secret_key,
        "jclouds.provider": "filesystem",
        "jclouds.filesystem.basedir": str(data),
    }
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in settings.items())
    command = [
        _java(),
        "-Xmx256m",
        "-XX:+ExitOnOutOfMemoryError",
        f"-Dlogback.configurationFile={build.s3proxy_logback}",
        _MARKERS["s3"],
        "--properties",
        str(conf),
    ]
    env = _base_env(CLASSPATH=build.s3proxy_classpath)
    return spawn(command, pid_file=_pid_file(cfg, "s3"), log_file=_log_file(cfg, "s3"), env=env, cwd=conf_dir)


def _start_browser(cfg: StackConfig, build: JavaBuild) -> int:
    host, port = require_local(cfg, "browser")
    script = Path(__file__).resolve().parent / _MARKERS["browser"]
    command = [
        sys.executable,
        str(script),
        "--root",
        str(build.browser_root),
        "--host",
        host,
        "--port",
        str(port),
        "--bolt",
        cfg.neo4j_uri,
    ]
    return spawn(
        command,
        pid_file=_pid_file(cfg, "browser"),
        log_file=_log_file(cfg, "browser"),
        env=_base_env(),
        cwd=cfg.state_dir,
    )


_STARTERS: dict[str, Callable[[StackConfig, JavaBuild], int]] = {
    "neo4j": _start_neo4j,
    "s3": _start_s3,
    "browser": _start_browser,
}
_CHECKS: dict[str, Callable[..., str | None]] = {
    "neo4j": health.neo4j_problem,
    "s3": health.s3_problem,
    "browser": health.browser_problem,
}


def _check_port_free(cfg: StackConfig, service: str) -> None:
    host, port = require_local(cfg, service)
    if port_open(host, port):
        variable = {
            "neo4j": "NEURFLOW_NEO4J_URI",
            "s3": "NEURFLOW_S3_ENDPOINT",
            "browser": "NEURFLOW_BROWSER_PORT",
        }[service]
        raise StackError(
            f"cannot start {service}: {host}:{port} is already in use by "
            f"{listener_description(port)}, which this stack (state dir {cfg.state_dir}) did not "
            f"start. Stop that process, or choose another port with {variable}."
        )


def _wait_healthy(cfg: StackConfig, pending: dict[str, tuple[int, int]], deadline: float) -> dict[str, float]:
    """Wait until every service in ``pending`` (service -> (pid, log offset)) answers its check."""
    started = time.monotonic()
    ready: dict[str, float] = {}
    problems: dict[str, str] = {}
    while pending:
        for service, (pid, offset) in list(pending.items()):
            log = _log_file(cfg, service)
            if _pid(cfg, service) != pid:
                raise StackError(f"{service} exited during start-up; last lines of {log}:\n{tail(log, 30)}")
            if service == "neo4j" and offset >= 0 and not _log_says(log, offset, _NEO4J_READY):
                problems[service] = "starting"
                continue
            problem = _CHECKS[service](cfg, timeout=2.0)
            if problem is None:
                ready[service] = time.monotonic() - started
                del pending[service]
            else:
                problems[service] = problem
        if pending and time.monotonic() > deadline:
            details = "; ".join(f"{s}: {problems.get(s, 'starting')}" for s in pending)
            raise StackError(
                f"timed out waiting for {', '.join(pending)} ({details}); logs in {cfg.state_dir / 'logs'}"
            )
        if pending:
            time.sleep(0.3)
    return ready


MIN_FREE_BYTES = 64 * 2**20
SINCE_START = b"\n--- started "


def _log_since_start(log: Path, limit: int = 4 * 2**20) -> str:
    """The log of the service's current start (after the last start marker `spawn` writes)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - limit))
            data = handle.read()
    except OSError:
        return ""
    return data[data.rfind(SINCE_START) + 1 :].decode("utf-8", "replace")


def disk_full_problem(folder: Path, min_free: int = MIN_FREE_BYTES) -> str | None:
    """A line saying the disk under `folder` is (nearly) full, or None."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    if usage.free >= min_free:
        return None
    return (
        f"the disk under {folder} is full ({usage.free / 2**20:.1f} MB free of "
        f"{usage.total / 2**30:.1f} GB); Neo4j cannot write there. Free space on it, then run "
        "`neurflow stack up` again"
    )


def _neo4j_broken(cfg: StackConfig) -> bool:
    """Whether the running Neo4j of this state dir finished starting and now fails its check (after
    a full disk or another critical error it refuses every transaction until restarted). One still
    starting is not broken. A full disk is reported instead of restarting into it."""
    if _NEO4J_READY not in _log_since_start(_log_file(cfg, "neo4j")):
        return False
    for attempt in range(3):  # a busy server may miss one check: restart only on a lasting failure
        if attempt:
            time.sleep(2.0)
        try:
            problem = health.neo4j_problem(cfg, timeout=5.0)
        except StackError:
            return False  # wrong credentials: not ours to fix by restarting
        if problem is None:
            return False
    full = disk_full_problem(cfg.state_dir / "neo4j")
    if full:
        raise StackError(f"Neo4j is unhealthy ({problem}) because {full}")
    return True


def _log_says(log: Path, offset: int, text: str) -> bool:
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            return text.encode() in handle.read()
    except OSError:
        return False


def up(
    cfg: StackConfig | None = None,
    *,
    neo4j: bool = True,
    s3: bool = True,
    browser: bool = True,
    timeout: float = 180,
) -> dict:
    """Start the selected services unless they already run, and wait until they answer.

    Idempotent: a service of this state dir that already runs is kept (same pid). Returns, per
    selected service, ``running``, ``pid``, ``address``, ``healthy``, ``started`` (whether this call
    started it) and ``seconds`` (time until it answered its health check).
    """
    cfg = cfg or load_config()
    selected = [s for s, wanted in zip(SERVICES, (neo4j, s3, browser), strict=True) if wanted]
    for service in selected:
        require_local(cfg, service)
    if neo4j:
        _check_password(cfg)
    with _locked(cfg):
        build = ensure_built(cfg)
        pending: dict[str, tuple[int, int]] = {}
        started: set[str] = set()
        for service in selected:
            pid = _pid(cfg, service)
            if pid is not None and service == "neo4j" and _neo4j_broken(cfg):
                _stop_service(cfg, "neo4j", hard=True)  # it cannot shut down cleanly; it recovers on start
                pid = None
            if pid is None:
                _check_port_free(cfg, service)
                log = _log_file(cfg, service)
                offset = log.stat().st_size if log.exists() else 0
                pid = _STARTERS[service](cfg, build)
                started.add(service)
            else:
                offset = -1
            pending[service] = (pid, offset)
        pids = {service: pid for service, (pid, _) in pending.items()}
        seconds = _wait_healthy(cfg, pending, time.monotonic() + timeout)
        if s3:
            health.ensure_bucket(cfg)
    return {
        service: {
            "running": True,
            "pid": pids[service],
            "address": _address(cfg, service),
            "healthy": True,
            "started": service in started,
            "seconds": round(seconds[service], 2),
        }
        for service in selected
    }


def _stop_service(cfg: StackConfig, service: str, *, hard: bool = False) -> None:
    pid = _pid(cfg, service)
    if pid is not None:
        stop(pid, timeout=_STOP_TIMEOUT[service], hard=hard)
    _pid_file(cfg, service).unlink(missing_ok=True)


def down(cfg: StackConfig | None = None) -> None:
    """Stop every service of this state dir: SIGTERM, wait, then SIGKILL."""
    cfg = cfg or load_config()
    with _locked(cfg):
        for service in reversed(SERVICES):
            _stop_service(cfg, service)


def stop_neo4j(cfg: StackConfig | None = None, *, hard: bool = False) -> None:
    """Stop only Neo4j; ``hard`` sends SIGKILL at once, like a crash."""
    cfg = cfg or load_config()
    with _locked(cfg):
        _stop_service(cfg, "neo4j", hard=hard)


def stop_s3(cfg: StackConfig | None = None, *, hard: bool = False) -> None:
    """Stop only the S3 server; ``hard`` sends SIGKILL at once, like a crash."""
    cfg = cfg or load_config()
    with _locked(cfg):
        _stop_service(cfg, "s3", hard=hard)


def is_running(cfg: StackConfig, service: str) -> bool:
    """Whether this state dir's ``service`` (neo4j, s3 or browser) runs; no network check."""
    return _pid(cfg, service) is not None


def restart_neo4j(cfg: StackConfig | None = None, *, hard: bool = False, timeout: float = 180) -> dict:
    """Stop Neo4j (SIGKILL when ``hard``) and start it again; returns ``up``'s entry for it."""
    cfg = cfg or load_config()
    stop_neo4j(cfg, hard=hard)
    return up(cfg, neo4j=True, s3=False, browser=False, timeout=timeout)["neo4j"]


def status(cfg: StackConfig | None = None) -> dict:
    """Per service: ``running``, ``pid``, ``address``, ``healthy``, ``log``, and ``problem`` if any."""
    cfg = cfg or load_config()
    report: dict[str, dict] = {}
    for service in SERVICES:
        pid = _pid(cfg, service)
        entry: dict = {
            "running": pid is not None,
            "pid": pid,
            "address": _address(cfg, service),
            "healthy": False,
            "log": str(_log_file(cfg, service)),
        }
        if pid is None:
            host, port = {
                "neo4j": cfg.neo4j_address,
                "s3": cfg.s3_address,
                "browser": cfg.browser_address,
            }[service]
            entry["problem"] = (
                f"not ours: port {port} is used by {listener_description(port)}"
                if port_open(host, port)
                else "not running"
            )
        else:
            try:
                problem = _CHECKS[service](cfg, timeout=2.0)
            except StackError as exc:
                problem = str(exc)
            entry["healthy"] = problem is None
            if problem is not None:
                entry["problem"] = problem
        report[service] = entry
    return report
