"""One S3 client (aiobotocore) and the calls that move a staged object into the bucket, with retries.

An object up to part_size_bytes is one PutObject; a larger one is a multipart upload of part_size_bytes
parts read one at a time from the staged file. Every PutObject and UploadPart carries an integrity checksum
of its body (Content-MD5, or x-amz-checksum-crc32/sha256), which the store verifies. An object becomes
visible only when PutObject or CompleteMultipartUpload succeeds, so an upload cut midway leaves no partial
object. Each call is retried on its own (a failed part, not the whole object), forever (staged data was already
acknowledged), as the delivery engine retries a send: errors.py says what an error means (Retry or Blocked),
delivery/backoff.py how long to wait (full jitter; one attempt per retry.max_ms while blocked), and
delivery/sink_state.py keeps the upload state (one error log a minute while blocked). botocore's own retries
are off, so this is the only retry loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from re import Pattern
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from kube_audit_shipper import __version__
from kube_audit_shipper.delivery.backoff import Backoff
from kube_audit_shipper.delivery.contract import Blocked
from kube_audit_shipper.delivery.sink_state import SinkHealth, SinkState
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.s3.errors import classify_error, error_code, upload_gone
from kube_audit_shipper.sinks.s3.staging import StagedObject

log = logging.getLogger(__name__)

T = TypeVar("T")
ABORT_ON_CANCEL_TIMEOUT_S = 2.0
CONTENT_TYPES = {"zstd": "application/zstd", "gzip": "application/gzip"}
Existing = Literal["absent", "stored", "taken", "unknown"]


class _RestartUpload(Exception):
    """The multipart upload is gone (NoSuchUpload): start a new one."""


def read_part(path: Path, offset: int, length: int, algorithm: str) -> tuple[bytes, dict[str, str]]:
    """A slice of a staged file and its checksum parameter (in a worker thread: hashing 8 MiB takes ~15 ms)."""
    with path.open("rb") as fh:
        body = os.pread(fh.fileno(), length, offset)
    if len(body) != length:
        raise OSError(f"{path}: {len(body)} bytes at {offset}, expected {length}: the staged file changed")
    return body, checksum_args(algorithm, body)


def checksum_args(algorithm: str, body: bytes) -> dict[str, str]:
    """The request parameter carrying `body`'s checksum, which the store verifies."""
    if algorithm == "md5":
        return {"ContentMD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()}  # integrity, not security (FIPS-safe)
    if algorithm == "crc32":
        return {"ChecksumCRC32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()}
    return {"ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}


class Uploader:
    def __init__(self, cfg: S3SinkConfig, *, sink_name: str) -> None:
        self.cfg = cfg
        self.sink_name = sink_name
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self.backoff = Backoff(cfg.retry)
        self.object_args = self._object_args(cfg)
        # state and counters, read by metrics and /readyz
        self.health = SinkHealth(
            log,
            blocked="s3 uploads blocked: they cannot succeed until this is fixed; staged data is kept and retried",
            unblocked="s3 uploads unblocked",
            extra={"sink": sink_name},
        )
        self.objects_uploaded = 0
        self.bytes_uploaded = 0
        self.parts_uploaded = 0
        self.retries = 0
        self.multipart_aborted = 0
        self.multipart_restarted = 0
        self.last_upload_s = 0.0

    @staticmethod
    def _object_args(cfg: S3SinkConfig) -> dict[str, str]:
        args = {"ContentType": CONTENT_TYPES[cfg.compression]}
        if cfg.storage_class:
            args["StorageClass"] = cfg.storage_class
        if cfg.sse:
            args["ServerSideEncryption"] = cfg.sse
        if cfg.sse_kms_key_id:
            args["SSEKMSKeyId"] = cfg.sse_kms_key_id
        if cfg.tags:
            args["Tagging"] = urlencode(cfg.tags)
        return args

    # -- client ----------------------------------------------------------------------------------
    async def client(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._stack.enter_async_context(self._create_client())
        return self._client

    def _create_client(self) -> Any:
        cfg = self.cfg
        session = AioSession(profile=cfg.profile)
        config = AioConfig(
            region_name=cfg.region,
            s3={"addressing_style": "path" if cfg.force_path_style else "auto"},
            retries={"total_max_attempts": 1, "mode": "standard"},  # one retry loop: ours
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
            request_checksum_calculation="when_required",  # we send our own checksum; no aws-chunked bodies
            response_checksum_validation="when_required",
            max_pool_connections=2,
            user_agent_extra=f"kube-audit-shipper/{__version__}",
        )
        return session.create_client(
            "s3",
            endpoint_url=cfg.endpoint,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            aws_session_token=cfg.session_token,
            config=config,
        )

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None

    # -- state -----------------------------------------------------------------------------------
    @property
    def state(self) -> SinkState:
        return self.health.state

    @property
    def error(self) -> str | None:
        return self.health.reason

    def note_unexpected(self, exc: BaseException) -> float:
        """An error no table knows (a bug): log it, show it as blocked, and say how long to wait."""
        log.error("unexpected error uploading a staged object; retrying", extra={"sink": self.sink_name}, exc_info=exc)
        self.health.set(SinkState.BLOCKED, f"unexpected error: {type(exc).__name__}: {exc}")
        return self.backoff.blocked_s

    # -- one call, retried -----------------------------------------------------------------------
    async def _retry(self, what: str, fn: Callable[[Any], Awaitable[T]], *, retry_blocked: bool = True) -> T:
        """`fn(client)` until it succeeds; errors it must not retry (an upload gone, an unknown error) are raised."""
        attempt = 0
        while True:
            try:
                result = await fn(await self.client())
                break
            except Exception as exc:
                gone = upload_gone(exc)
                if gone is not None:
                    raise _RestartUpload(gone) from exc
                outcome = classify_error(exc)
                if outcome is None or (isinstance(outcome, Blocked) and not retry_blocked):
                    raise
            attempt += 1
            self.retries += 1
            blocked = isinstance(outcome, Blocked)
            self.health.set(SinkState.BLOCKED if blocked else SinkState.RETRYING, f"{what}: {outcome.reason}")
            delay = self.backoff.delay_s(outcome, attempt)
            if not blocked:
                log.warning(
                    "s3 call failed; retrying",
                    extra={"sink": self.sink_name, "call": what, "attempt": attempt, "retry_in_s": round(delay, 3), "reason": outcome.reason},
                )
            await asyncio.sleep(delay)
        if self.health.state is not SinkState.OK:
            self.health.set(SinkState.OK)
        return result

    # -- uploads ---------------------------------------------------------------------------------
    async def existing(self, obj: StagedObject) -> Existing:
        """For an object staged by an earlier run: is its key already in the bucket (uploaded, then a crash)?"""

        async def head(c: Any) -> Any:
            try:
                return await c.head_object(Bucket=self.cfg.bucket, Key=obj.key)
            except ClientError as exc:
                code, status = error_code(exc)
                if status in (403, 404) or code in ("NoSuchKey", "NotFound", "AccessDenied"):
                    return {"_status": status}  # 403: no s3:GetObject permission; upload as if absent
                raise

        found = await self._retry("HeadObject", head)
        status = found.get("_status")
        if status == 404:
            return "absent"
        if status is not None:
            return "unknown"
        return "stored" if int(found.get("ContentLength", -1)) == obj.size else "taken"

    async def upload(self, obj: StagedObject) -> None:
        started = time.monotonic()
        if obj.size <= self.cfg.part_size_bytes:
            body, check = await asyncio.to_thread(read_part, obj.data, 0, obj.size, self.cfg.checksum)
            args = {"Bucket": self.cfg.bucket, "Key": obj.key, "Body": body, **self.object_args, **check}
            await self._retry("PutObject", lambda c: c.put_object(**args))
        else:
            while True:
                try:
                    await self._multipart(obj)
                    break
                except _RestartUpload as exc:
                    self.multipart_restarted += 1
                    log.warning("multipart upload vanished; starting it again", extra={"sink": self.sink_name, "key": obj.key, "reason": str(exc)})
        self.objects_uploaded += 1
        self.bytes_uploaded += obj.size
        self.last_upload_s = time.monotonic() - started
        log.info("uploaded a staged object", extra={"sink": self.sink_name, "key": obj.key, "bytes": obj.size, "seconds": round(self.last_upload_s, 3)})

    async def _multipart(self, obj: StagedObject) -> None:
        cfg = self.cfg
        create_args: dict[str, Any] = {"Bucket": cfg.bucket, "Key": obj.key, **self.object_args}
        if cfg.checksum != "md5":
            create_args["ChecksumAlgorithm"] = cfg.checksum.upper()
        created = await self._retry("CreateMultipartUpload", lambda c: c.create_multipart_upload(**create_args))
        upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            for number, offset in enumerate(range(0, obj.size, cfg.part_size_bytes), 1):
                body, check = await asyncio.to_thread(read_part, obj.data, offset, min(cfg.part_size_bytes, obj.size - offset), cfg.checksum)
                part_args = {"Bucket": cfg.bucket, "Key": obj.key, "UploadId": upload_id, "PartNumber": number, **check}
                reply = await self._upload_part(number, body, part_args)
                part = {"PartNumber": number, "ETag": reply["ETag"]}
                part.update({k: v for k, v in check.items() if k.startswith("Checksum")})
                parts.append(part)
                self.parts_uploaded += 1
            complete_args = {"Bucket": cfg.bucket, "Key": obj.key, "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}
            try:
                await self._retry("CompleteMultipartUpload", lambda c: c.complete_multipart_upload(**complete_args))
            except _RestartUpload:
                # an earlier Complete may have succeeded without us seeing the answer: then the object is there
                if await self.existing(obj) == "stored":
                    return
                raise
        except asyncio.CancelledError:
            await self._abort_quietly(obj.key, upload_id)
            raise

    async def _upload_part(self, number: int, body: bytes, args: dict[str, Any]) -> Any:
        return await self._retry(f"UploadPart {number}", lambda c: c.upload_part(Body=body, **args))

    async def _list_uploads(self, args: dict[str, Any]) -> Any:
        return await self._retry("ListMultipartUploads", lambda c: c.list_multipart_uploads(**args), retry_blocked=False)

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        await self._retry("AbortMultipartUpload", lambda c: c.abort_multipart_upload(Bucket=self.cfg.bucket, Key=key, UploadId=upload_id), retry_blocked=False)

    async def _abort_quietly(self, key: str, upload_id: str) -> None:
        """Stopping mid-upload: abort it now if that is quick; else the next start's recovery does."""
        try:
            client = await self.client()
            async with asyncio.timeout(ABORT_ON_CANCEL_TIMEOUT_S):
                await client.abort_multipart_upload(Bucket=self.cfg.bucket, Key=key, UploadId=upload_id)
            self.multipart_aborted += 1
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 (best effort only)
            log.info("could not abort an interrupted multipart upload; the next start will", extra={"sink": self.sink_name, "key": key, "reason": repr(exc)})

    # -- crash recovery --------------------------------------------------------------------------
    async def abort_incomplete(self, prefix: str, ours: Pattern[str] | None, staged_keys: set[str]) -> int:
        """Abort the incomplete multipart uploads this node's sink left under `prefix` (a crash mid-upload).

        Ours: the key of a staged object, or any key the template can give this node (when it has {node}).
        Other nodes' uploads under the same prefix are left alone. Without s3:ListBucketMultipartUploads
        this is skipped with a warning (a bucket lifecycle rule AbortIncompleteMultipartUpload covers it)."""
        aborted = 0
        kw: dict[str, Any] = {"Bucket": self.cfg.bucket, "Prefix": prefix}
        try:
            while True:
                page = await self._list_uploads(dict(kw))
                for upload in page.get("Uploads", []) or []:
                    key, upload_id = upload["Key"], upload["UploadId"]
                    if key not in staged_keys and (ours is None or not ours.fullmatch(key)):
                        continue
                    try:
                        await self._abort_upload(key, upload_id)
                    except _RestartUpload:
                        continue  # already gone
                    aborted += 1
                    log.info("aborted an incomplete multipart upload left by an earlier run", extra={"sink": self.sink_name, "key": key})
                if not page.get("IsTruncated"):
                    break
                kw["KeyMarker"], kw["UploadIdMarker"] = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
        except Exception as exc:
            outcome = classify_error(exc)
            if outcome is None:
                raise
            log.warning(
                "cannot list or abort incomplete multipart uploads; a bucket lifecycle rule (AbortIncompleteMultipartUpload) should clean them up",
                extra={"sink": self.sink_name, "reason": outcome.reason},
            )
        self.multipart_aborted += aborted
        return aborted
