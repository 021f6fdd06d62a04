"""Detached service processes: start in their own session, track by pid file, stop cleanly.

A pid file records the pid and the kernel's start time of the process, so a recycled pid is never
mistaken for ours, and the command line must still name the service's marker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Processes this interpreter started: kept so that they are reaped (poll) instead of lingering as
# zombies, and so that Python does not warn that they still run when the Popen object is dropped.
_children: dict[int, subprocess.Popen] = {}


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are split on the last ")".
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def is_alive(pid: int) -> bool:
    """True until the whole process has exited.

    The state in /proc/PID/stat is that of the main thread only: a JVM's main thread can be a
    zombie while its other threads still run and hold the ports, so count the live tasks.
    """
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if fields[0] != "Z":
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in ``pid_file`` if that very process still runs; stale files are removed."""
    try:
        record = json.loads(pid_file.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if is_alive(pid) and _start_time(pid) == record.get("start_time"):
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
    record = {"pid": process.pid, "start_time": _start_time(process.pid), "command": command[0]}
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
    ss = shutil.which("ss")
    if ss is None:
        return "another process"
    try:
        out = subprocess.run(
            [ss, "-H", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "another process"
    users = out.split("users:", 1)[1].strip() if "users:" in out else ""
    if users.startswith("((") and users.endswith("))"):
        users = users[1:-1]
    return f"another process {users}" if users else "another process"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
