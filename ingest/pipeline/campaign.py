"""Campaigns: every (model, class) job of a spec as one resumable job, in this process or on Ray.

1. **Plan.** Each model is loaded once (for its class names), the pool is read
   (ingest/pipeline/image_pool.py) and the selected classes become jobs: one per (model, class),
   each the same ingest as ``neurflow ingest --images <the class's folder> --class <class>``, with
   the same run id.
2. **One shared pass per model.** The model classifies every image of the selected classes once,
   in batches (on the GPU when there is one). Each job builds its patch set from those predictions
   instead of classifying its folder again.
3. **Jobs.** `run_job` is a plain function of its inputs: an idempotent, resumable ingest (a
   COMPLETE run is left as it is, a broken one resumes below its finished layers), so an engine may
   retry it. A job that finds its run held by another live process (an overlapping campaign) waits
   for it and then finds it complete. The engines: ``local`` runs the jobs one after another in this
   process; ``ray`` runs them as Ray tasks (one GPU each when the cluster has GPUs, one CPU
   otherwise), joining ``address`` or starting a local Ray.
4. **Record.** A `Campaign` node (graphmodel/campaigns.py) lists the jobs and links each job's run
   as soon as it exists; a job that failed before it had a run keeps its error there.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ingest.pipeline.campaign_spec import (
    CLASS_PLACEHOLDER,
    CampaignSpec,
    CampaignSpecError,
    ModelSpec,
    bank_for,
)
from ingest.pipeline.image_pool import ClassImages, csv_classes, folder_classes, select_classes

BUSY_WAIT_SECONDS = 1800.0
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # jobs pass only predictions and results: keep Ray light
PASSED_ENV_PREFIX = "NEURFLOW_"


class CampaignError(ValueError):
    """A campaign that cannot run as asked (an engine that is not installed)."""


@dataclass(frozen=True)
class Job:
    key: str  # "<model>/<class name or index>": the job's name in the campaign
    model: ModelSpec
    class_index: int
    class_name: str | None
    images: str  # what `neurflow ingest --images` would be given
    files: tuple[str, ...]  # the class's images under `images`


@dataclass
class Plan:
    spec: CampaignSpec
    jobs: list[Job]
    readings: dict[str, str] = field(default_factory=dict)  # model -> how the pool was read
    empty: dict[str, list[str]] = field(default_factory=dict)  # model -> selected classes without images


@dataclass
class JobResult:
    key: str
    status: str  # COMPLETE, ALREADY_COMPLETE or FAILED
    run_id: str | None = None
    seconds: float = 0.0
    neurons: int = 0
    neuron_groups: int = 0
    labels: int = 0
    audits: int = 0
    error: str | None = None
    lines: list[str] = field(default_factory=list)  # what the job said (its layers), for -v on Ray


@dataclass
class CampaignReport:
    campaign_id: str
    engine: str
    results: list[JobResult]
    counts: dict[str, int]
    shared_pass_seconds: dict[str, float]
    seconds: float


# ------------------------------------------------------------------------------------ models

_LOADED: dict[tuple, Any] = {}


def load_cached(spec: ModelSpec, device: str = "cpu", seed: int = 0):
    """The model of `spec` on `device`, loaded once per process (a Ray worker keeps it between
    tasks)."""
    from ingest.core.models import load_model

    key = (spec.model, spec.weights, spec.sidecar, device, seed)
    if key not in _LOADED:
        _LOADED[key] = load_model(spec.model, spec.weights, device=device, seed=seed, sidecar=spec.sidecar)
    return _LOADED[key]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# -------------------------------------------------------------------------------------- plan


def _pool(spec: CampaignSpec, loaded) -> tuple[dict[int, ClassImages], str]:
    names, num = loaded.class_names, loaded.num_classes
    if spec.pool_labels is not None:
        return csv_classes(spec.pool_folder, spec.pool_labels, names, num), "labels CSV"
    return folder_classes(spec.pool_folder, names, num)


def plan_campaign(spec: CampaignSpec, classes: Any = None) -> Plan:
    """The jobs of `spec` (``classes`` overrides the spec's selection for every model)."""
    plan = Plan(spec, [])
    seed = int(spec.extract.get("seed", 0))
    for model in spec.models:
        loaded = load_cached(model, "cpu", seed)
        available, how = _pool(spec, loaded)
        plan.readings[model.label] = how
        wanted = (
            classes if classes is not None else (model.classes if model.classes is not None else spec.classes)
        )
        for index in select_classes(available, wanted, loaded.class_names):
            entry = available[index]
            name = entry.name or str(index)
            if not entry.files:
                plan.empty.setdefault(model.label, []).append(name)
                continue
            plan.jobs.append(
                Job(
                    key=f"{model.label}/{name}",
                    model=model,
                    class_index=index,
                    class_name=entry.name,
                    images=str(entry.root),
                    files=tuple(str(f) for f in entry.files),
                )
            )
    _check_class_banks(plan)
    return plan


def _check_class_banks(plan: Plan) -> None:
    """With `{class}` in the label step's bank, every planned class needs its bank before anything runs."""
    if plan.spec.label is None or CLASS_PLACEHOLDER not in plan.spec.label.concepts:
        return
    missing = sorted(
        {
            job.class_name or str(job.class_index)
            for job in plan.jobs
            if not Path(bank_for(plan.spec.label.concepts, job.class_name, job.class_index)).is_dir()
        }
    )
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CampaignSpecError(
            f"[after.label] concepts = {plan.spec.label.concepts!r}: no bank folder for {shown}; write one "
            "per class (e.g. `neurflow planted-data bank banks/<class> --class <class>`) or select fewer "
            "classes"
        )


# ------------------------------------------------------------------------------ shared pass


def shared_pass(model: ModelSpec, files: list[str], extract: dict[str, Any]) -> tuple[dict[str, int], float]:
    """One batched classification of every image of the model's jobs: resolved path -> class."""
    from ingest.core.circuit import classifier
    from ingest.core.patches import predict_images

    started = time.perf_counter()
    loaded = load_cached(model, _device(extract.get("device", "auto")), int(extract.get("seed", 0)))
    paths = [Path(f) for f in files]
    predictions = predict_images(paths, classifier(loaded, 64), loaded.input_size, batch_size=64)
    return {
        str(p.resolve()): c for p, c in zip(paths, predictions, strict=True)
    }, time.perf_counter() - started


# --------------------------------------------------------------------------------------- job


def extract_config(model: ModelSpec, loaded, extract: dict[str, Any]):
    """The `ExtractConfig` of a job: the spec's [extract] with the ingest command's defaults."""
    from ingest.core.circuit import ExtractConfig
    from ingest.core.layers import default_layers
    from ingest.core.tau import parse_tau

    layers = list(model.layers) if model.layers else (loaded.default_layers or default_layers(loaded.arch))
    given = {
        k: extract[k] for k in ("k", "steps", "quadrature", "ranking", "memory_mb", "seed") if k in extract
    }
    if "tau" in extract:
        given["tau"] = parse_tau(extract["tau"])
    if "max_images" in extract:
        given["max_images"] = extract["max_images"] or None  # 0: all, as --max-images 0
    return ExtractConfig(layers=layers, **given)


def run_job(
    job: Job,
    extract: dict[str, Any],
    campaign_id: str,
    predictions: dict[str, int] | None = None,
    label_step: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    audit_step: dict[str, Any] | None = None,
    progress=None,
    echo: Callable[[str], None] = lambda _line: None,
    busy_wait: float = BUSY_WAIT_SECONDS,
) -> JobResult:
    """One job: the ingest of one class (resuming or skipping as `neurflow ingest` does), linked to
    the campaign, then the label step. Raises on failure (the engine retries); a run that exists is
    marked FAILED first."""
    from graphmodel import campaigns
    from graphmodel.connection import connect
    from graphmodel.run_lease import RunBusyError
    from graphmodel.stack.config import load_config
    from ingest.pipeline.ingest_run import failure_marker, run_ingest
    from ingest.pipeline.patch_stores import open_patch_store

    if env:  # a Ray worker on another machine gets the driver's NEURFLOW_* settings
        os.environ.update(env)
    lines: list[str] = []
    said = echo

    def echo(line: str) -> None:
        lines.append(line)
        said(line)

    started = time.perf_counter()
    stack = load_config()
    store = open_patch_store(stack, local_dir=extract.get("local_patches") or None)
    loaded = load_cached(job.model, _device(extract.get("device", "auto")), int(extract.get("seed", 0)))
    cfg = extract_config(job.model, loaded, extract)
    with connect(stack) as driver:
        deadline = time.monotonic() + busy_wait
        while True:
            try:
                result = run_ingest(
                    driver,
                    loaded,
                    job.images,
                    job.class_index,
                    cfg,
                    store,
                    files=[Path(f) for f in job.files],
                    predictions=predictions,
                    on_start=lambda run_id: campaigns.link_run(driver, campaign_id, job.key, run_id),
                    on_failure=failure_marker(stack, echo),
                    echo=echo,
                    **({"progress": progress} if progress is not None else {}),
                )
                break
            except RunBusyError as exc:  # an overlapping campaign ingests this run now: wait for it
                if time.monotonic() > deadline:
                    raise
                echo(f"{job.key}: {exc}; waiting")
                time.sleep(5.0)
        campaigns.record_failure(driver, campaign_id, job.key, None)
        labels = audits = 0
        if label_step or audit_step:
            opened = _OpenedRun(driver, loaded, result)
            labels = _label(driver, opened, label_step) if label_step else 0
            audits = _audit(driver, opened, audit_step, job.images) if audit_step else 0
    counts = result.counts or {}
    return JobResult(
        key=job.key,
        status=result.status,
        run_id=result.run_id,
        seconds=time.perf_counter() - started,
        neurons=int(counts.get("neurons") or 0),
        neuron_groups=int(counts.get("neuron_groups") or 0),
        labels=labels,
        audits=audits,
        lines=lines,
    )


class _OpenedRun:
    """A job's run for its after-steps: the circuit (read from the graph only when the job did not
    extract it) and its layer cuts, made on first use and shared by the label and audit steps."""

    def __init__(self, driver, loaded, result):
        self.driver, self.model, self.result = driver, loaded, result

    @cached_property
    def circuit(self):
        from graphmodel.reader import load_circuit

        return self.result.circuit or load_circuit(self.driver, self.result.run_id)

    @cached_property
    def cuts(self):
        from ingest.core.layers import LayerCuts

        return LayerCuts(self.model.module, self.circuit.layer_names(), self.model.input_size)


def _audit(driver, opened: _OpenedRun, step: dict[str, Any], images: str) -> int:
    """The bias audit of a newly completed run, or of a complete one that has none yet."""
    from graphmodel.audits import read_audits
    from ingest.pipeline.audit_step import AuditSettings, audit_stored_run

    if opened.result.status == "ALREADY_COMPLETE" and read_audits(driver, opened.result.run_id):
        return 0
    audit_stored_run(driver, opened.model, opened.cuts, opened.circuit, images, AuditSettings(**step))
    return 1


def _label(driver, opened: _OpenedRun, step: dict[str, Any]) -> int:
    """Concept-bank labels (and spatial ones, from a bank with masks) on a newly completed run, or on a
    complete one that has none yet."""
    from graphmodel.labels import read_labels, write_labels
    from ingest.labelling.bank_labelling import bank_labels
    from ingest.labelling.concept_bank import METHOD, load_concept_bank

    run_id = opened.result.run_id
    if opened.result.status == "ALREADY_COMPLETE":
        existing = read_labels(driver, run_id)
        if any(lab.method == METHOD for labs in existing.values() for lab in labs):
            return 0
    circuit = opened.circuit
    bank = load_concept_bank(
        bank_for(step["concepts"], circuit.class_name, circuit.class_index), opened.model.input_size
    )
    by_method = bank_labels(
        opened.model,
        opened.cuts,
        circuit,
        bank,
        top=step["top"],
        min_score=step["min_score"],
        rank_by=step["rank_by"],
        spatial=step["spatial"],
    )
    return sum(write_labels(driver, run_id, method, labels) for method, labels in by_method.items())


# ----------------------------------------------------------------------------------- engines


def _passed_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIX)}


def _failed(job: Job, exc: BaseException) -> JobResult:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return JobResult(job.key, "FAILED", error=f"{type(exc).__name__}: {text}"[:2000])


def run_local(
    plan: Plan,
    campaign_id: str,
    *,
    on_done: Callable[[JobResult], None],
    progress=None,
    echo: Callable[[str], None] = lambda _line: None,
) -> tuple[list[JobResult], dict[str, float]]:
    """The jobs one after another in this process, each retried up to `spec.retries` times."""
    spec, results, passes = plan.spec, [], {}
    label_step = asdict(spec.label) if spec.label else None
    audit_step = asdict(spec.audit) if spec.audit else None
    for model in spec.models:
        jobs = [j for j in plan.jobs if j.model == model]
        if not jobs:
            continue
        predictions, passes[model.label] = shared_pass(
            model, [f for j in jobs for f in j.files], spec.extract
        )
        for job in jobs:
            for attempt in range(spec.retries + 1):
                try:
                    result = run_job(
                        job,
                        spec.extract,
                        campaign_id,
                        predictions,
                        label_step,
                        audit_step=audit_step,
                        progress=progress,
                        echo=echo,
                    )
                    break
                except Exception as exc:
                    result = _failed(job, exc)
                    echo(f"{job.key}: attempt {attempt + 1} of {spec.retries + 1} failed: {result.error}")
            results.append(result)
            on_done(result)
    return results, passes


def run_ray(
    plan: Plan,
    campaign_id: str,
    *,
    address: str | None,
    workers: int | None,
    on_done: Callable[[JobResult], None],
    echo: Callable[[str], None] = lambda _line: None,
) -> tuple[list[JobResult], dict[str, float]]:
    """The jobs as Ray tasks: one shared-pass task per model, then one task per job, each with one
    GPU when the cluster has GPUs (else one CPU), retried up to `spec.retries` times, also when its
    worker dies."""
    if address:
        _check_reachable(address)
    try:
        import ray
    except ImportError:
        raise CampaignError(
            "the ray engine needs Ray: pip install 'neurflow-graph[ray]' (or use --engine local)"
        ) from None
    # CPU-only tasks keep the GPUs hidden as before; this only silences Ray's notice about it.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

    spec = plan.spec
    env = _passed_env()
    if not ray.is_initialized():
        local = {
            "num_cpus": workers or os.cpu_count(),
            "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
            "_system_config": {"enable_metrics_collection": False},
        }
        try:
            ray.init(
                address=address or "local",  # "local": always a fresh Ray of our own, never a stray one
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                runtime_env={"env_vars": env},
                **({} if address else local),
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"join the Ray cluster at {address}" if address else "start a local Ray"
            raise CampaignError(f"cannot {where}: {exc}") from None
    gpus = ray.cluster_resources().get("GPU", 0)
    task = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    cpus = ray.cluster_resources().get("CPU", 0)
    echo(f"ray: {cpus:.0f} CPUs, {gpus:.0f} GPUs; one {'GPU' if gpus else 'CPU'} per job")
    pass_task = ray.remote(shared_pass).options(**task, max_retries=spec.retries)
    job_task = ray.remote(_run_job_after_pass).options(
        **task, max_retries=spec.retries, retry_exceptions=True
    )
    label_step = asdict(spec.label) if spec.label else None
    audit_step = asdict(spec.audit) if spec.audit else None
    passes, pending, refs_of_pass = {}, {}, {}
    for model in spec.models:
        jobs = [j for j in plan.jobs if j.model == model]
        if not jobs:
            continue
        pass_ref = pass_task.remote(model, [f for j in jobs for f in j.files], spec.extract)
        refs_of_pass[model.label] = pass_ref
        for job in jobs:
            ref = job_task.remote(job, spec.extract, campaign_id, pass_ref, label_step, env, audit_step)
            pending[ref] = job
    results = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except Exception as exc:  # retries exhausted: the task's error or its worker's death
            result = _failed(job, exc)
        results.append(result)
        on_done(result)
    for label, ref in refs_of_pass.items():
        passes[label] = ray.get(ref)[1]
    return results, passes


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens on (Ray itself retries it for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: Ray decides
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise CampaignError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it "
            "(`ray start --head`), or leave out --address to start a local Ray"
        ) from None


def _run_job_after_pass(job, extract, campaign_id, shared, label_step, env, audit_step) -> JobResult:
    """`run_job` with the predictions of the model's shared pass (Ray hands the task the pass's
    result: predictions and seconds). Its lines come back in `JobResult.lines`."""
    return run_job(job, extract, campaign_id, shared[0], label_step, env, audit_step)


# ------------------------------------------------------------------------------------ driver


def run_campaign(
    spec: CampaignSpec,
    plan: Plan,
    driver,
    *,
    engine: str,
    address: str | None = None,
    workers: int | None = None,
    on_done: Callable[[JobResult], None] = lambda _r: None,
    progress=None,
    echo: Callable[[str], None] = lambda _line: None,
) -> CampaignReport:
    """Record the campaign, run its jobs on `engine`, then count what it reached. Running it again
    skips COMPLETE runs and resumes the rest."""
    from graphmodel import campaigns

    started = time.perf_counter()
    campaign_id = spec.campaign_id
    campaigns.start_campaign(
        driver, campaign_id, spec.name, spec.identity(), [j.key for j in plan.jobs], engine
    )
    if engine == "ray":
        results, passes = run_ray(
            plan, campaign_id, address=address, workers=workers, on_done=on_done, echo=echo
        )
    else:
        results, passes = run_local(plan, campaign_id, on_done=on_done, progress=progress, echo=echo)
    order = {job.key: i for i, job in enumerate(plan.jobs)}
    results.sort(key=lambda r: order[r.key])
    for result in results:
        if result.status == "FAILED":
            _settle_failure(driver, campaign_id, result)
    counts = campaigns.finish_campaign(driver, campaign_id)
    return CampaignReport(campaign_id, engine, results, counts, passes, time.perf_counter() - started)


def _settle_failure(driver, campaign_id: str, result: JobResult) -> None:
    """A failed job keeps its error: on its run when it has one (a run whose worker died is still
    RUNNING: mark it FAILED), else on the campaign."""
    from graphmodel import campaigns, writer

    state = next((s for s in campaigns.job_states(driver, campaign_id) or [] if s.job == result.key), None)
    if state is None or state.run_id is None:
        campaigns.record_failure(driver, campaign_id, result.key, result.error)
        return
    result.run_id = state.run_id
    if state.status == "RUNNING" and not state.alive:
        writer.fail_run(driver, state.run_id, result.error or "the job failed")
