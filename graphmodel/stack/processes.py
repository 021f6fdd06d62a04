"""Detached service processes: start in their own session, track by pid file, stop cleanly.

A pid file records the pid and the start time of the process, so a recycled pid is never mistaken
for ours, and the command line must still name the service's marker. Processes are read through
psutil, so `status` and `down` work the same on Linux and macOS (the start time alone comes from
/proc on Linux: see `_started`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

# Processes this interpreter started: kept so that they are reaped (poll) instead of lingering as
# zombies, and so that Python does not warn that they still run when the Popen object is dropped.
_children: dict[int, subprocess.Popen] = {}


def _started(pid: int) -> float | None:
    """When the process started, on a clock that changes of the system time do not move.

    On Linux, psutil's creation time is the boot time read now (``btime`` of /proc/stat, which moves
    when the wall clock is stepped, as after a suspended machine resumes) plus the process's start in
    ticks since boot: a pid file compared on it once said that a Neo4j still starting had "exited".
    So Linux uses the ticks since boot alone; elsewhere the kernel stores a fixed creation time.
    None if there is no such process.
    """
    if sys.platform.startswith("linux"):
        try:
            # the name in (...) may hold spaces, so the fields are counted after its last ")"
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return round(int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)  # field 22: starttime
        except (OSError, IndexError, ValueError):
            return None
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except psutil.Error:
        return None


def is_alive(pid: int) -> bool:
    """True until the whole process has exited.

    A process's state is that of its main thread: a JVM's main thread can be a zombie while its
    other threads still run and hold the ports, so a zombie counts as alive while it has threads.
    """
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE:
            return True
        return len(process.threads()) > 1
    except psutil.Error:
        return False


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in ``pid_file`` if that very process still runs; stale files are removed."""
    try:
        record = json.loads(pid_file.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    started = record.get("started")
    same = started is None or _started(pid) == started  # older versions wrote no comparable time
    if is_alive(pid) and same:
        command = _cmdline(pid)
        if not command or marker in command:  # empty while the main thread is a zombie
            return pid
    pid_file.unlink(missing_ok=True)
    return None


def spawn(
    command: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> int:
    """Start ``command`` detached (new session, no stdin), output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log.write(f"\n--- started {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _children[process.pid] = process
    record = {"pid": process.pid, "started": _started(process.pid), "command": command[0]}
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(pid_file)
    return process.pid


def stop(pid: int, *, timeout: float, hard: bool = False) -> bool:
    """SIGTERM the process group (SIGKILL when ``hard``), wait, then SIGKILL. True if it had to kill."""
    first = signal.SIGKILL if hard else signal.SIGTERM
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return hard
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    while is_alive(pid):
        time.sleep(0.1)
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def listener_description(port: int) -> str:
    """Best-effort 'pid/name' of whatever listens on ``port``, for error messages."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:  # macOS lists other processes' sockets only to root
        return "another process"
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                return f"another process (pid {conn.pid}, {psutil.Process(conn.pid).name()})"
            except psutil.Error:
                return f"another process (pid {conn.pid})"
    return "another process"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
