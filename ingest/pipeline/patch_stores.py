"""Which patch store a command writes to or reads from: S3 or a local folder, chosen from the
options and the configuration, and a fetcher that reads any patch URI a run stores."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from graphmodel.patchstore import LocalPatchStore, PatchStore, PatchStoreError, S3PatchStore
from graphmodel.stack.config import StackConfig


def open_patch_store(
    cfg: StackConfig, *, s3: bool = False, local_dir: str | Path | None = None
) -> PatchStore:
    """The store for patch images: ``--local-patches`` > ``--s3`` > automatic.

    Automatic means S3 when NEURFLOW_S3_ENDPOINT is set or the local stack's S3 server runs, and
    otherwise the local directory ``<state dir>/patches`` (file:// URIs).
    """
    if local_dir is not None:
        return LocalPatchStore(local_dir)
    if s3 or os.environ.get("NEURFLOW_S3_ENDPOINT") or _stack_s3_running(cfg):
        return S3PatchStore.from_config(cfg)
    return LocalPatchStore(cfg.state_dir / "patches")


def _stack_s3_running(cfg: StackConfig) -> bool:
    from graphmodel.stack.services import is_running

    return is_running(cfg, "s3")


def patch_fetcher(cfg) -> Callable[[str], bytes]:
    """`fetch(uri) -> PNG bytes` for the URIs a run stores: file:// from disk, s3:// from the S3 store
    of the configuration (`open_patch_store` when it picks S3, else one built from the NEURFLOW_S3_*
    settings), so a graph whose patches were stored either way can be labelled."""
    primary = open_patch_store(cfg)
    stores: dict[str, object] = {
        "file": primary if isinstance(primary, LocalPatchStore) else LocalPatchStore(Path(cfg.state_dir))
    }
    if isinstance(primary, S3PatchStore):
        stores["s3"] = primary

    def fetch(uri: str) -> bytes:
        scheme = uri.split(":", 1)[0]
        if scheme == "s3" and "s3" not in stores:
            stores["s3"] = S3PatchStore.from_config(cfg)
        store = stores.get(scheme)
        if store is None:
            raise PatchStoreError(f"patch URI {uri!r} is neither file:// nor s3://")
        try:
            return store.get(uri)
        except OSError as exc:
            raise PatchStoreError(
                f"cannot read the patch image {uri}: {exc}; was the patch directory moved or deleted?"
            ) from exc

    return fetch
