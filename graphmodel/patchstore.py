"""Where the images of concept patches live: a local directory (file:// URIs) or an S3 bucket.

Keys are content addresses (``patches/<patch_id>.png``, the patch id being a hash of the pixels), so a
key is written once and never overwritten: storing the same content again is a no-op, and storing
different content under an existing key raises `PatchConflictError`. Uploads to S3 send Content-MD5,
which the server checks, and ``If-None-Match: *``, so two writers cannot overwrite each other.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from graphmodel.stack.config import StackConfig

_PATCH_ID = re.compile(r"^[0-9a-f]{8,64}$")
S3_HINT = "start it with `neurflow stack up` or set NEURFLOW_S3_ENDPOINT"


class PatchStoreError(RuntimeError):
    """The patch store cannot be used; the message names it and says what to do."""


class PatchConflictError(PatchStoreError):
    """A key already holds different content: content-addressed patches are never overwritten."""


def patch_key(patch_id: str) -> str:
    if not _PATCH_ID.match(patch_id):
        raise ValueError(f"patch id {patch_id!r} is not a lowercase hex content hash")
    return f"patches/{patch_id}.png"


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 HxWx3 pixels -> PNG bytes, deterministic for a given Pillow (no metadata, fixed level)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _same_content(stored: bytes, new: bytes) -> bool:
    """Equal bytes, or two PNG encodings of the same pixels (another Pillow may compress differently)."""
    if stored == new:
        return True
    try:
        with Image.open(io.BytesIO(stored)) as a, Image.open(io.BytesIO(new)) as b:
            return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    except OSError:
        return False


def _conflict(where: str, stored: bytes, new: bytes) -> PatchConflictError:
    return PatchConflictError(
        f"refusing to overwrite {where}: it holds other content (sha256 "
        f"{hashlib.sha256(stored).hexdigest()[:16]}..., new {hashlib.sha256(new).hexdigest()[:16]}...); "
        "patch keys are content addresses, so a different image under the same key means a corrupt "
        "store or a patch-id collision; inspect or remove that object by hand"
    )


class PatchStore(Protocol):
    def put(self, patch_id: str, data: bytes) -> str: ...
    def uri(self, patch_id: str) -> str: ...
    def get(self, uri: str) -> bytes: ...
    def check(self) -> None: ...
    def describe(self) -> str: ...


class LocalPatchStore:
    """Patches as files under ``root/patches/``; URIs are ``file://`` URLs."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def describe(self) -> str:
        return f"local directory {self.root}"

    def check(self) -> None:
        try:
            (self.root / "patches").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PatchStoreError(
                f"cannot create the patch directory {self.root / 'patches'}: {exc}"
            ) from exc

    def path(self, patch_id: str) -> Path:
        return self.root / patch_key(patch_id)

    def uri(self, patch_id: str) -> str:
        return self.path(patch_id).as_uri()

    def put(self, patch_id: str, data: bytes) -> str:
        target = self.path(patch_id)
        if target.exists():
            self._compare(target, data)
            return target.as_uri()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if hashlib.sha256(Path(tmp).read_bytes()).digest() != hashlib.sha256(data).digest():
                raise PatchStoreError(f"checksum mismatch writing {target}; check the disk")
            try:
                os.link(tmp, target)  # fails if the key exists: never replaces a file
            except FileExistsError:
                self._compare(target, data)
        except OSError as exc:
            raise self._write_error(exc) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return target.as_uri()

    def _write_error(self, exc: OSError) -> PatchStoreError:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else (exc.strerror or str(exc))
        return PatchStoreError(
            f"cannot store patch images under {self.root}: {why}; "
            + ("free space there" if full else "fix the folder")
            + " (or choose another with --local-patches), then re-run the same command to resume"
        )

    def _compare(self, target: Path, data: bytes) -> None:
        stored = target.read_bytes()
        if not _same_content(stored, data):
            raise _conflict(str(target), stored, data)

    def get(self, uri: str) -> bytes:
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise PatchStoreError(f"{uri!r} is not a file:// URI of the local patch store")
        return Path(unquote(parts.path)).read_bytes()


class S3PatchStore:
    """Patches as objects ``patches/<patch_id>.png`` of one bucket; URIs are ``s3://bucket/key``."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        attempts: int = 2,
    ):
        import boto3
        from botocore.config import Config

        self.endpoint, self.bucket = endpoint, bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
                max_pool_connections=16,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._checked = False

    @classmethod
    def from_config(cls, cfg: StackConfig, **options) -> S3PatchStore:
        return cls(cfg.s3_endpoint, cfg.s3_bucket, cfg.s3_access_key, cfg.s3_secret_key, **options)

    def describe(self) -> str:
        return f"S3 bucket {self.bucket} at {self.endpoint}"

    def uri(self, patch_id: str) -> str:
        return f"s3://{self.bucket}/{patch_key(patch_id)}"

    def _error(self, exc: Exception, doing: str) -> PatchStoreError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"}:
                return PatchStoreError(
                    f"S3 at {self.endpoint} refused the configured credentials while {doing} ({code}); "
                    "set NEURFLOW_S3_ACCESS_KEY and NEURFLOW_S3_SECRET_KEY"
                )
            return PatchStoreError(f"S3 at {self.endpoint} answered {code or exc} while {doing}")
        detail = " ".join(str(exc).split())
        return PatchStoreError(f"cannot reach S3 at {self.endpoint} while {doing}: {detail}; {S3_HINT}")

    def _call(self, doing: str, fn: Callable, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, doing) from exc

    def check(self) -> None:
        """Reach the server and create the bucket if it is missing."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in {"404", "NoSuchBucket", "NotFound"}:
                raise self._error(exc, f"checking bucket {self.bucket}") from exc
            self._call(f"creating bucket {self.bucket}", self.client.create_bucket, Bucket=self.bucket)
        except BotoCoreError as exc:
            raise self._error(exc, f"checking bucket {self.bucket}") from exc
        self._checked = True

    def _stored(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._error(exc, f"reading {key}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"reading {key}") from exc

    def put(self, patch_id: str, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self._checked:
            self.check()
        key, uri = patch_key(patch_id), self.uri(patch_id)
        stored = self._stored(key)
        if stored is not None:
            if not _same_content(stored, data):
                raise _conflict(uri, stored, data)
            return uri
        request = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": "image/png",
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "Metadata": {"sha256": hashlib.sha256(data).hexdigest()},
            "IfNoneMatch": "*",
        }
        try:
            self.client.put_object(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                stored = self._stored(key)  # written by another process meanwhile
                if stored is None or not _same_content(stored, data):
                    raise _conflict(uri, stored or b"", data) from exc
                return uri
            if code == "BadDigest":
                raise PatchStoreError(f"S3 at {self.endpoint} received corrupted bytes for {key}") from exc
            if code in {"NotImplemented", "501"}:  # a server without conditional writes
                request.pop("IfNoneMatch")
                self._call(f"uploading {key}", self.client.put_object, **request)
                return uri
            raise self._error(exc, f"uploading {key}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"uploading {key}") from exc
        return uri

    def get(self, uri: str) -> bytes:
        bucket, key = _split_s3(uri)
        response = self._call(f"reading {uri}", self.client.get_object, Bucket=bucket, Key=key)
        return response["Body"].read()

    def presigned_url(self, uri: str, expires: int = 3600) -> str:
        bucket, key = _split_s3(uri)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires)
        )


def _split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise PatchStoreError(f"{uri!r} is not an s3://bucket/key URI")
    return parts.netloc, parts.path.lstrip("/")


def presigned_url(uri: str, expires: int = 3600, cfg: StackConfig | None = None) -> str:
    """A URL a viewer can GET without credentials: presigned for s3:// URIs (valid ``expires``
    seconds, endpoint and keys from ``cfg``), unchanged for file:// URIs."""
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        return uri
    if scheme != "s3":
        raise PatchStoreError(f"{uri!r} is neither an s3:// nor a file:// patch URI")
    if cfg is None:
        from graphmodel.stack.config import load_config

        cfg = load_config()
    return S3PatchStore.from_config(cfg).presigned_url(uri, expires)


def upload_patches(
    store: PatchStore,
    items: Iterable[tuple[str, bytes]],
    *,
    workers: int = 8,
    on_done: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Store many patches concurrently; returns patch id -> URI. The first failure is raised."""
    items = list(items)
    uris: dict[str, str] = {}
    if not items:
        return uris
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))))
    try:
        futures = {pool.submit(store.put, pid, data): pid for pid, data in items}
        for future, pid in futures.items():
            uris[pid] = future.result()
            if on_done is not None:
                on_done(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure, do not start the rest
    return uris
