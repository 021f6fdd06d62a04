"""Reads for `neurflow report`: where patch images are stored, their bytes, and a run's evaluation.

`patch_uris` maps patch ids to ``Patch.uri`` (only exemplar patches have one); `read_patch_images`
fetches the PNGs behind those URIs from the local directory (file://) or S3 (s3://), best effort:
what cannot be read is reported, not raised, so a report can still be drawn without some images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from neo4j import Driver

from graphmodel.connection import GraphStoreError
from graphmodel.patchstore import LocalPatchStore, PatchStore, PatchStoreError, S3PatchStore
from graphmodel.stack.config import StackConfig


def patch_uris(driver: Driver, patch_ids: Iterable[str]) -> dict[str, str]:
    """patch id -> ``Patch.uri`` for the given ids that have one (patches not stored have none)."""
    ids = sorted(set(patch_ids))
    if not ids:
        return {}
    records, _, _ = driver.execute_query(
        "UNWIND $ids AS id MATCH (p:Patch {patch_id: id}) WHERE p.uri IS NOT NULL "
        "RETURN p.patch_id AS patch_id, p.uri AS uri",
        ids=ids,
        routing_="r",
    )
    return {r["patch_id"]: r["uri"] for r in records}


def run_evaluation(driver: Driver, run_id: str) -> dict[str, Any] | None:
    """The run's stored evaluation (Run property ``evaluation_json``), or None when it has none.

    Raises GraphStoreError when the run is not in the graph or the stored JSON is not an object.
    """
    records, _, _ = driver.execute_query(
        "MATCH (r:Run {run_id: $run_id}) RETURN r.evaluation_json AS evaluation",
        run_id=run_id,
        routing_="r",
    )
    if not records:
        raise GraphStoreError(f"run {run_id} is not in the graph")
    text = records[0]["evaluation"]
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise GraphStoreError(f"run {run_id}: evaluation_json is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise GraphStoreError(f"run {run_id}: evaluation_json is not a JSON object")
    return value


@dataclass
class PatchImages:
    images: dict[str, bytes] = field(default_factory=dict)  # patch id -> PNG bytes
    missing: dict[str, str] = field(default_factory=dict)  # patch id -> why it could not be read


def read_patch_images(
    uris: Mapping[str, str],
    cfg: StackConfig | None = None,
    *,
    s3_store: Callable[[], PatchStore] | None = None,
) -> PatchImages:
    """Fetch the PNG of every patch in `uris` (patch id -> file:// or s3:// URI).

    S3 is reached with `cfg`'s endpoint and keys (default: ``load_config()``), or with the store
    `s3_store` returns. After the first failure to reach S3, the remaining s3:// patches are not
    tried (each would wait for the same timeout) and are reported missing with that message.
    """
    out = PatchImages()
    local = LocalPatchStore(".")
    s3: PatchStore | None = None
    s3_down: str | None = None
    for pid, uri in sorted(uris.items()):
        scheme = urlsplit(uri).scheme
        try:
            if scheme == "file":
                out.images[pid] = local.get(uri)
            elif scheme == "s3":
                if s3_down is not None:
                    out.missing[pid] = s3_down
                    continue
                if s3 is None:
                    if s3_store is not None:
                        s3 = s3_store()
                    else:
                        if cfg is None:
                            from graphmodel.stack.config import load_config

                            cfg = load_config()
                        s3 = S3PatchStore.from_config(cfg, connect_timeout=3.0, attempts=1)
                out.images[pid] = s3.get(uri)
            else:
                out.missing[pid] = f"unsupported URI {uri!r}"
        except OSError as exc:
            out.missing[pid] = f"cannot read {uri}: {exc}"
        except PatchStoreError as exc:
            out.missing[pid] = str(exc)
            if scheme == "s3" and ("cannot reach" in str(exc) or "refused the configured" in str(exc)):
                s3_down = str(exc)
    return out
