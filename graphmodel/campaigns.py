"""The `Campaign` node: one job per (model, class) of a campaign spec, each linked to its run.

    (:Campaign {campaign_id, name, status, jobs, n_jobs, n_complete, n_failed, spec_json, ...})
        -[:INCLUDES {job}]->(:Run)

The campaign id is a hash of what the campaign computes (models, pool, classes, parameters), not of
how (engine, retries): running the same spec again, on another engine, continues the same
campaign. Two campaigns that share classes link the same runs. Jobs that failed before their run
existed (no image predicted as the class, say) keep their error in ``failures_json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from neo4j import Driver

from graphmodel.connection import read_rows
from graphmodel.reader import HEARTBEAT_AGE, run_state
from graphmodel.schema import ensure_schema

_START = """
MERGE (c:Campaign {campaign_id: $campaign_id})
ON CREATE SET c.created_at = datetime(), c.failures_json = '{}'
SET c.name = $name, c.spec_json = $spec_json, c.jobs = $jobs, c.n_jobs = size($jobs),
    c.status = 'RUNNING', c.last_started_at = datetime(), c.engine = $engine
"""
_LINK = """
MATCH (c:Campaign {campaign_id: $campaign_id}), (r:Run {run_id: $run_id})
MERGE (c)-[i:INCLUDES {job: $job}]->(r)
"""
_JOBS = f"""
MATCH (c:Campaign {{campaign_id: $campaign_id}})
OPTIONAL MATCH (c)-[i:INCLUDES]->(r:Run)
RETURN c.jobs AS jobs, c.failures_json AS failures, i.job AS job, r {{.*}} AS run, {HEARTBEAT_AGE}
"""


@dataclass
class JobState:
    job: str
    status: str  # COMPLETE, FAILED, RUNNING (live or dead: see `alive`), or PENDING (no run yet)
    run_id: str | None = None
    error: str | None = None
    alive: bool | None = None
    heartbeat_age: float | None = None


def start_campaign(
    driver: Driver, campaign_id: str, name: str, spec: dict[str, Any], jobs: list[str], engine: str
) -> None:
    ensure_schema(driver)
    driver.execute_query(
        _START,
        campaign_id=campaign_id,
        name=name,
        spec_json=json.dumps(spec, sort_keys=True),
        jobs=jobs,
        engine=engine,
    )


def link_run(driver: Driver, campaign_id: str, job: str, run_id: str) -> None:
    driver.execute_query(_LINK, campaign_id=campaign_id, job=job, run_id=run_id)


def record_failure(driver: Driver, campaign_id: str, job: str, error: str | None) -> None:
    """Keep (or, with None, clear) the error of a job that has no run to carry it."""

    def work(tx) -> None:
        record = tx.run(
            "MATCH (c:Campaign {campaign_id: $id}) SET c.touched = true RETURN c.failures_json AS f",
            id=campaign_id,
        ).single()
        failures = json.loads((record and record["f"]) or "{}")
        if error is None:
            failures.pop(job, None)
        else:
            failures[job] = error[:2000]
        tx.run(
            "MATCH (c:Campaign {campaign_id: $id}) SET c.failures_json = $f REMOVE c.touched",
            id=campaign_id,
            f=json.dumps(failures, sort_keys=True),
        ).consume()

    with driver.session() as session:
        session.execute_write(work)


def job_states(driver: Driver, campaign_id: str) -> list[JobState] | None:
    """Every job of the campaign with its run's state, in plan order; None when there is no such
    campaign."""
    rows = read_rows(driver, _JOBS, campaign_id=campaign_id)
    if not rows:
        return None
    failures = json.loads(rows[0]["failures"] or "{}")
    linked = {}
    for row in rows:
        if row["job"] is not None:
            linked[row["job"]] = run_state(row["run"], row["heartbeat_age"])
    out = []
    for job in rows[0]["jobs"] or []:
        state = linked.get(job)
        if state is None:
            status = "FAILED" if job in failures else "PENDING"
            out.append(JobState(job, status, error=failures.get(job)))
        else:
            out.append(
                JobState(job, state.status, state.run_id, state.error, state.alive, state.heartbeat_age)
            )
    return out


def finish_campaign(driver: Driver, campaign_id: str) -> dict[str, int]:
    """Count the jobs by status and set the campaign COMPLETE (every job complete) or INCOMPLETE."""
    states = job_states(driver, campaign_id) or []
    counts = {
        s: sum(1 for j in states if j.status == s) for s in ("COMPLETE", "FAILED", "RUNNING", "PENDING")
    }
    status = "COMPLETE" if states and counts["COMPLETE"] == len(states) else "INCOMPLETE"
    driver.execute_query(
        "MATCH (c:Campaign {campaign_id: $id}) SET c.status = $status, c.n_complete = $complete, "
        "c.n_failed = $failed, c.finished_at = datetime()",
        id=campaign_id,
        status=status,
        complete=counts["COMPLETE"],
        failed=counts["FAILED"],
    )
    return counts


def mean_run_seconds(driver: Driver, model_ids: list[str]) -> dict[str, tuple[float, int]]:
    """Per model: the mean wall time of its COMPLETE runs and how many there are (for estimates)."""
    rows = read_rows(
        driver,
        "MATCH (r:Run {status: 'COMPLETE'}) WHERE r.model_id IN $ids AND r.seconds IS NOT NULL "
        "RETURN r.model_id AS model_id, avg(r.seconds) AS seconds, count(r) AS runs",
        ids=model_ids,
    )
    return {row["model_id"]: (float(row["seconds"]), int(row["runs"])) for row in rows}
