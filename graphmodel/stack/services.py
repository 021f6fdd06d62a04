"""Start, stop and inspect the local services: Neo4j (which serves Neo4j Browser), S3Proxy and the
NeurFlow guide.

Neo4j runs as its own server: ``org.neo4j.server.CommunityEntryPoint`` with a ``neo4j.conf`` this
module writes, the initial password set beforehand with Neo4j's admin tool (``neo4j-admin dbms
set-initial-password``), and Neo4j Browser on its classpath, so the server serves ``/browser/`` with
its own discovery and Browser fills in the Bolt address by itself.

Layout of the state dir::

    credentials.json        generated secrets (0600)
    run/<service>.pid       pid and kernel start time of each running service
    logs/                   neo4j.log (Neo4j's console log), s3proxy.log, guide.log, maven-build.log
    neo4j/conf/neo4j.conf   the server's settings, rewritten from the NEURFLOW_* settings at each start
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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from graphmodel.stack import health
from graphmodel.stack.build import JavaBuild, ensure_built
from graphmodel.stack.config import CREDENTIALS_FILE, StackConfig, StackError, load_config, require_local
from graphmodel.stack.processes import (
    listener_description,
    port_open,
    running_pid,
    spawn,
    stop,
    tail,
)

SERVICES = ("neo4j", "s3", "guide")
_MARKERS = {
    "neo4j": "org.neo4j.server.CommunityEntryPoint",
    "s3": "org.gaul.s3proxy.Main",
    "guide": "guide_server.py",
}
_LOGS = {"neo4j": "neo4j.log", "s3": "s3proxy.log", "guide": "guide.log"}
_STOP_TIMEOUT = {"neo4j": 60.0, "s3": 15.0, "guide": 5.0}
_NEO4J_READY = "INFO  Started."
_NEO4J_ADMIN = "org.neo4j.cli.AdminTool"
# What Neo4j loads of APOC: the virtual nodes and relationships of `queries/circuit_graph.cypher`
# (Browser draws FEEDS as wide as their weight only per relationship type) and its version.
APOC_ALLOWLIST = "apoc.create.vNode,apoc.create.vRelationship,apoc.version"
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "JAVA_HOME", "TMPDIR")


def _pid_file(cfg: StackConfig, service: str) -> Path:
    return cfg.state_dir / "run" / f"{service}.pid"


def _log_file(cfg: StackConfig, service: str) -> Path:
    return cfg.state_dir / "logs" / _LOGS[service]


def _address(cfg: StackConfig, service: str) -> str:
    return {"neo4j": cfg.neo4j_uri, "s3": cfg.s3_endpoint, "guide": cfg.guide_url}[service]


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


def neo4j_conf(cfg: StackConfig) -> str:
    """The server's ``neo4j.conf``: loopback only, auth on, Browser on the HTTP port, bounded logs."""
    host, port = require_local(cfg, "neo4j")
    http_host, http_port = require_local(cfg, "browser")
    guide_host, guide_port = cfg.guide_address
    settings = {
        "server.default_listen_address": host,
        "server.bolt.listen_address": f"{host}:{port}",
        "server.bolt.advertised_address": f"{host}:{port}",
        "server.http.enabled": "true",
        "server.http.listen_address": f"{http_host}:{http_port}",
        "server.http.advertised_address": f"{http_host}:{http_port}",
        "server.https.enabled": "false",
        "dbms.security.auth_enabled": "true",
        "server.memory.pagecache.size": cfg.neo4j_pagecache,
        "server.directories.logs": str(cfg.state_dir / "neo4j" / "logs"),
        # APOC (copied here by `_install_plugins`) is scanned for procedures in this folder; only
        # the functions the canned queries use are loaded (virtual nodes and relationships).
        "server.directories.plugins": str(cfg.state_dir / "neo4j" / "plugins"),
        "dbms.security.procedures.allowlist": APOC_ALLOWLIST,
        "db.tx_log.preallocate": "false",
        # Bounded transaction logs: Neo4j keeps two days of them by default, gigabytes after a
        # campaign. Only whole files beyond the retention are pruned, and only at a checkpoint (every
        # 15 min by default; the volume-based policy is Enterprise): 64 MB files and a checkpoint
        # every 30 s keep the overshoot to what 30 s of writing logs.
        "db.tx_log.rotation.retention_policy": cfg.neo4j_tx_logs,
        "db.tx_log.rotation.size": "64M",
        "db.checkpoint.interval.time": "30s",
        # Browser fetches guides and styles only from these hosts; Neo4j's default names only
        # localhost, not 127.0.0.1 where the stack serves the guide. After connecting, it plays it.
        "browser.remote_content_hostname_whitelist": "guides.neo4j.com,localhost,127.0.0.1",
        "browser.post_connect_cmd": f"play http://{guide_host}:{guide_port}/guide/neurflow.html",
        # Bolt waits 5 s + 5 s for idle connections and its threads on shutdown; a local
        # single-user server does not need that, and `stack down` should be quick.
        "internal.server.bolt.connection_shutdown_wait_time": "1s",
        "internal.server.bolt.thread_pool_shutdown_wait_time": "1s",
        # Nothing outside this machine is reached.
        "client.allow_telemetry": "false",
        "dbms.usage_report.enabled": "false",
    }
    lines = ["# Written by the NeurFlow stack at each start; change NEURFLOW_* settings instead."]
    return "\n".join(lines + [f"{key}={value}" for key, value in settings.items()]) + "\n"


def _argument_file_entry(text: str) -> str:
    """``text`` as one quoted argument of a picocli argument file (``@file``)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _set_initial_password(cfg: StackConfig, build: JavaBuild, home: Path, conf_dir: Path) -> None:
    """``neo4j-admin dbms set-initial-password`` on a database that never started, so the default
    password is never reachable. The password goes through an argument file (0600, removed at
    once): only its path is on the command line, which any user can read in ``ps``."""
    run_dir = cfg.state_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    arguments = run_dir / "neo4j-admin.args"
    arguments.unlink(missing_ok=True)
    fd = os.open(arguments, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        # "--" ends the options: a generated password may start with "-" (token_urlsafe)
        handle.write("-- " + _argument_file_entry(cfg.neo4j_password) + "\n")
    env = _base_env(CLASSPATH=build.neo4j_classpath, NEO4J_HOME=str(home), NEO4J_CONF=str(conf_dir))
    command = [_java(), "-Xmx256m", _NEO4J_ADMIN, "dbms", "set-initial-password", f"@{arguments}"]
    try:
        result = subprocess.run(
            command, env=env, cwd=home, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
        )
    finally:
        arguments.unlink(missing_ok=True)
    if result.returncode != 0:
        raise StackError(
            f"neo4j-admin could not set the initial password (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-800:]}"
        )


def _install_plugins(build: JavaBuild, plugins: Path) -> None:
    """Copy the APOC jars of the classpath into ``plugins``: Neo4j registers procedures and
    functions only from jars in its plugins folder (its own launcher also puts them on the classpath,
    which the stack's classpath already does). Stale jars of another version are removed."""
    plugins.mkdir(parents=True, exist_ok=True)
    jars = [
        Path(entry) for entry in build.neo4j_classpath.split(":") if "/org/neo4j/procedure/apoc-" in entry
    ]
    wanted = {jar.name for jar in jars}
    for old in plugins.glob("apoc-*.jar"):
        if old.name not in wanted:
            old.unlink()
    for jar in jars:
        target = plugins / jar.name
        if not target.is_file() or target.stat().st_size != jar.stat().st_size:
            shutil.copyfile(jar, target)


def _start_neo4j(cfg: StackConfig, build: JavaBuild) -> int:
    _check_password(cfg)
    home = cfg.state_dir / "neo4j"
    conf_dir = home / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    _install_plugins(build, home / "plugins")
    (conf_dir / "neo4j.conf").write_text(neo4j_conf(cfg))
    if not (home / "data" / "databases" / "system").is_dir():
        _set_initial_password(cfg, build, home, conf_dir)
    command = [
        _java(),
        f"-Xmx{cfg.neo4j_heap}",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-OmitStackTraceInFastThrow",
        "-Dfile.encoding=UTF-8",
        _MARKERS["neo4j"],
        f"--home-dir={home}",
        f"--config-dir={conf_dir}",
        "--console-mode",
    ]
    env = _base_env(CLASSPATH=build.neo4j_classpath, NEO4J_HOME=str(home), NEO4J_CONF=str(conf_dir))
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


def _start_guide(cfg: StackConfig, build: JavaBuild | None) -> int:
    host, port = require_local(cfg, "guide")
    script = Path(__file__).resolve().parent / _MARKERS["guide"]
    command = [sys.executable, str(script), "--host", host, "--port", str(port)]
    # The guide fills its examples from the newest COMPLETE run: it reads the same Neo4j (the
    # password goes through the environment, which only this user can read).
    env = _base_env(
        NEURFLOW_STATE_DIR=str(cfg.state_dir),
        NEURFLOW_NEO4J_URI=cfg.neo4j_uri,
        NEURFLOW_NEO4J_USER=cfg.neo4j_user,
        NEURFLOW_NEO4J_PASSWORD=cfg.neo4j_password,
    )
    return spawn(
        command,
        pid_file=_pid_file(cfg, "guide"),
        log_file=_log_file(cfg, "guide"),
        env=env,
        cwd=cfg.state_dir,
    )


_STARTERS: dict[str, Callable[[StackConfig, JavaBuild | None], int]] = {
    "neo4j": _start_neo4j,
    "s3": _start_s3,
    "guide": _start_guide,
}
_CHECKS: dict[str, Callable[..., str | None]] = {
    "neo4j": health.neo4j_problem,
    "s3": health.s3_problem,
    "guide": health.guide_problem,
}


_PORT_VARIABLES = {
    "neo4j": "NEURFLOW_NEO4J_URI",
    "browser": "NEURFLOW_BROWSER_PORT",
    "s3": "NEURFLOW_S3_ENDPOINT",
    "guide": "NEURFLOW_GUIDE_PORT",
}


def _check_port_free(cfg: StackConfig, service: str) -> None:
    """Refuse to start over a port someone else listens on (Neo4j also needs its HTTP port)."""
    for what in ("neo4j", "browser") if service == "neo4j" else (service,):
        _check_one_port_free(cfg, service, what)


def _check_one_port_free(cfg: StackConfig, service: str, what: str) -> None:
    host, port = require_local(cfg, what)
    if port_open(host, port):
        variable = _PORT_VARIABLES[what]
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
            if problem is None and service == "neo4j":
                problem = health.browser_problem(cfg, timeout=2.0)
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
    guide: bool = True,
    timeout: float = 180,
) -> dict:
    """Start the selected services unless they already run, and wait until they answer.

    Idempotent: a service of this state dir that already runs is kept (same pid). Returns, per
    selected service, ``running``, ``pid``, ``address``, ``healthy``, ``started`` (whether this call
    started it) and ``seconds`` (time until it answered its health check).
    """
    cfg = cfg or load_config()
    selected = [s for s, wanted in zip(SERVICES, (neo4j, s3, guide), strict=True) if wanted]
    for service in selected:
        require_local(cfg, service)
    if neo4j:
        _check_password(cfg)
    with _locked(cfg):
        build = ensure_built(cfg) if neo4j or s3 else None  # the guide needs no Java
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
            **({"browser": cfg.browser_url} if service == "neo4j" else {}),
        }
        for service in selected
    }


def browser_lines(cfg: StackConfig, report: dict | None = None) -> list[str]:
    """Where to open Neo4j Browser and the guide; only for the services in ``report`` (all if None)."""
    lines = []
    if report is None or "neo4j" in report:
        lines.append(
            f"Neo4j Browser: {cfg.browser_url}  (address and user are filled in; the password is "
            f"NEURFLOW_NEO4J_PASSWORD or 'neo4j_password' in {cfg.state_dir / CREDENTIALS_FILE})"
        )
    if report is None or "guide" in report:
        lines.append(f"NeurFlow guide: plays after you connect; or type  :play {cfg.guide_url}")
    return lines


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
    """Whether this state dir's ``service`` (neo4j, s3 or guide) runs; no network check."""
    return _pid(cfg, service) is not None


def restart_neo4j(cfg: StackConfig | None = None, *, hard: bool = False, timeout: float = 180) -> dict:
    """Stop Neo4j (SIGKILL when ``hard``) and start it again; returns ``up``'s entry for it."""
    cfg = cfg or load_config()
    stop_neo4j(cfg, hard=hard)
    return up(cfg, neo4j=True, s3=False, guide=False, timeout=timeout)["neo4j"]


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
            **({"browser": cfg.browser_url} if service == "neo4j" else {}),
        }
        if pid is None:
            host, port = {
                "neo4j": cfg.neo4j_address,
                "s3": cfg.s3_address,
                "guide": cfg.guide_address,
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
