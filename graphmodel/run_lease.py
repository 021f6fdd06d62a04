"""Who may write a run: a lease on the `Run` node, renewed by a heartbeat.

Two processes ingesting the same run id at once would purge each other's finished layers. The
process that starts (or resumes) a run takes its lease (``Run.lease_owner``, ``lease_host``,
``lease_pid``) in the same transaction that sets it RUNNING, and a background heartbeat refreshes
``Run.heartbeat_at``. Another process finds the lease held while the holder is alive: on the same
machine, while its pid runs; elsewhere, while its heartbeat is younger than `LEASE_SECONDS`. A
holder killed with ``kill -9`` leaves a lease that the next process on that machine takes over at
once; one on another machine after `LEASE_SECONDS`. The heartbeat also lets `neurflow runs` tell a
live RUNNING run from a dead one.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver

from graphmodel.connection import GraphStoreError

HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 60.0


class RunBusyError(GraphStoreError):
    """Another live process holds the run's lease."""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def here(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())

    def params(self) -> dict[str, Any]:
        return {"owner": self.token, "host": self.host, "pid": self.pid}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(lease: dict[str, Any], me: Owner | None = None) -> bool:
    """Whether the lease described by `lease` (status, lease_owner, lease_host, lease_pid,
    heartbeat_age in seconds) belongs to a live process other than `me`."""
    if lease.get("status") != "RUNNING" or not lease.get("lease_owner"):
        return False
    if me is not None and lease["lease_owner"] == me.token:
        return False
    age = lease.get("heartbeat_age")
    fresh = age is not None and age < LEASE_SECONDS
    if lease.get("lease_host") == socket.gethostname() and lease.get("lease_pid") is not None:
        return fresh and _pid_alive(int(lease["lease_pid"]))
    return fresh


def busy_message(run_id: str, lease: dict[str, Any]) -> str:
    age = lease.get("heartbeat_age")
    return (
        f"run {run_id} is being ingested by another process (pid {lease.get('lease_pid')} on "
        f"{lease.get('lease_host')}, last heartbeat {age:.0f} s ago); wait until it ends and run the same "
        "command again (a finished run is left as it is), or stop that process first"
    )


# Locks the Run (the SET of a marker the same transaction removes again in TAKE, or by rolling back)
# before reading it, so two starting processes see each other's lease. A new Run gets the same
# initial properties as the writer's start gives it.
LOCK_AND_READ = """
MERGE (r:Run {run_id: $run_id})
ON CREATE SET r.started_at = datetime(), r.layers_done = [], r.attempts = 0
SET r.lease_lock = true
RETURN r.status AS status, r.lease_owner AS lease_owner, r.lease_host AS lease_host,
       r.lease_pid AS lease_pid,
       CASE WHEN r.heartbeat_at IS NULL THEN null
            ELSE duration.inSeconds(r.heartbeat_at, datetime()).seconds END AS heartbeat_age
"""
TAKE = """
MATCH (r:Run {run_id: $run_id})
SET r.lease_owner = $owner, r.lease_host = $host, r.lease_pid = $pid, r.heartbeat_at = datetime()
REMOVE r.lease_lock
"""
UNLOCK = "MATCH (r:Run {run_id: $run_id}) REMOVE r.lease_lock"
LEASE_PROPERTIES = "r.lease_owner, r.lease_host, r.lease_pid"
# A finished run keeps no lease and no heartbeat: a COMPLETE run's properties do not depend on how
# often it was interrupted.
FINISHED_PROPERTIES = f"{LEASE_PROPERTIES}, r.heartbeat_at"
_RENEW = """
MATCH (r:Run {run_id: $run_id}) WHERE r.lease_owner = $owner
SET r.heartbeat_at = datetime()
RETURN count(r) AS n
"""


def release(driver: Driver, run_id: str, owner: Owner) -> None:
    """Give the lease up (an ingest that stops on an error it raises to its caller)."""
    driver.execute_query(
        f"MATCH (r:Run {{run_id: $run_id}}) WHERE r.lease_owner = $owner REMOVE {LEASE_PROPERTIES}",
        run_id=run_id,
        owner=owner.token,
    )


def renew(driver: Driver, run_id: str, owner: Owner) -> bool:
    """Refresh the heartbeat; False when the lease is no longer ours (taken over, or released)."""
    records, _, _ = driver.execute_query(_RENEW, run_id=run_id, owner=owner.token)
    return bool(records and records[0]["n"])


class Heartbeat:
    """Renews the lease every `every` seconds in a daemon thread while the block runs. `lost` turns
    true when the lease was taken over (the writer should stop); a failed renewal (Neo4j
    restarting) is tried again at the next beat."""

    def __init__(self, driver: Driver, run_id: str, owner: Owner, every: float = HEARTBEAT_SECONDS):
        self.driver, self.run_id, self.owner, self.every = driver, run_id, owner, every
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not renew(self.driver, self.run_id, self.owner):
                    self.lost = True
                    return
            except Exception:  # Neo4j away for a moment: the next beat tries again
                continue

    def check(self) -> None:
        if self.lost:
            raise RunBusyError(
                f"run {self.run_id}: another process took over its lease (this one was presumed dead); "
                "stopping without writing more"
            )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
