"""`type: s3`: NDJSON objects (zstd or gzip) in S3 or an S3-compatible store, staged on disk first.

The engine's `send` only stages: it appends the batch's compressed frame to the object being filled under
`<state_dir>/s3/<sink>/` and fsyncs it, so a batch is acknowledged once it is on local disk (staging.py).
Objects are uploaded by the sink's background work (`run_background`, which its runner runs and watches),
oldest first, and their staged files removed only after the upload succeeded (upload.py: each S3 call retried
with the delivery engine's backoff and blocked state). A full staging area makes `send` fail with
`staging_full`, which the engine retries with backoff: the reader then waits on the memory budget, and nothing
is lost.

    engine ─send─▶ staging (fsync, ack) ─seal: size / age / partition / stop─▶ uploader ─▶ PutObject | multipart
                                                                                  └─ then remove the staged files

Start: staged objects left by a crash are sealed (torn tail cut) and uploaded first; incomplete multipart
uploads this node left under the key prefix are aborted (the staged file, still there, is uploaded again).
Stop (`aclose(deadline)`): the object being filled is sealed and every staged object uploaded, by the
deadline; whatever is left stays staged and is uploaded at the next start. The uploader ends only once it
has seen that last seal, so nothing sealed at stop is left behind for want of a look.

Metrics and /readyz: `blocked_for_s`, `metric_families` (upload state, staged bytes and objects, the
uploader's counters).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
import zlib
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from typing import Any

import zstandard

from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Outcome, Reply, Request, Retry, Sink
from kube_audit_shipper.delivery.sink_state import SinkState
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.s3.keys import KeyTemplate, event_time
from kube_audit_shipper.sinks.s3.staging import StagedObject, Staging, StagingFullError
from kube_audit_shipper.sinks.s3.upload import Uploader

log = logging.getLogger(__name__)


class S3Sink(Sink):
    max_concurrency = 1  # appends to one staged object, in batch order

    def __init__(self, cfg: S3SinkConfig, ctx: SinkContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.node = ctx.node
        self.keys = KeyTemplate(cfg.key_template, node=ctx.node, fields=cfg.key_fields)
        self.staging = Staging(
            ctx.state_path("s3", cfg.name),
            codec=cfg.compression,
            keys=self.keys,
            max_bytes=cfg.staging_max_bytes,
            object_max_bytes=cfg.object_max_bytes,
            object_max_age_s=cfg.object_max_age_s,
        )
        self.uploader = Uploader(cfg, sink_name=cfg.name)
        self._wake = asyncio.Event()  # a sealed object to upload, or the last seal at stop
        self._closed = False  # aclose began: no more sends
        self._draining = False  # every object is sealed (set after the last seal): the uploader ends once none is left
        self._worker: asyncio.Task[Any] | None = None  # the task running run_background, while it runs
        self._worker_done = asyncio.Event()
        self.staging_full = 0  # sends refused for want of staging space

    # -- state for metrics and /readyz -----------------------------------------------------------
    @property
    def upload_state(self) -> SinkState:
        return self.uploader.state

    @property
    def upload_error(self) -> str | None:
        return self.uploader.error

    @property
    def staged_bytes(self) -> int:
        return self.staging.used_bytes

    @property
    def staged_objects(self) -> int:
        return self.staging.objects

    def blocked_for_s(self) -> float:
        """How long uploads have been blocked (0 when not): /readyz uses it."""
        return self.uploader.health.blocked_for_s()

    def metric_families(self) -> Iterator[Any]:
        """Prometheus families for the agent's collector: staging and uploads."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = "kube_audit_shipper_s3_"
        state = GaugeMetricFamily(p + "upload_state", "1 for the state of the S3 uploads (ok, retrying, blocked)", labels=["sink", "state"])
        for each in SinkState:
            state.add_metric([self.name, each.value], 1 if self.upload_state is each else 0)
        yield state
        up = self.uploader
        for kind, name, doc, value in (
            (GaugeMetricFamily, "staged_bytes", "Bytes staged on disk, acknowledged, not yet uploaded", self.staged_bytes),
            (GaugeMetricFamily, "staged_objects", "Objects staged on disk, not yet uploaded", self.staged_objects),
            (CounterMetricFamily, "staging_full", "Sends refused for want of staging space (the reader waits)", self.staging_full),
            (CounterMetricFamily, "objects_uploaded", "Objects uploaded (PutObject or CompleteMultipartUpload succeeded)", up.objects_uploaded),
            (CounterMetricFamily, "uploaded_bytes", "Bytes of objects uploaded", up.bytes_uploaded),
            (CounterMetricFamily, "parts_uploaded", "Multipart parts uploaded", up.parts_uploaded),
            (CounterMetricFamily, "upload_retries", "S3 calls retried", up.retries),
            (CounterMetricFamily, "multipart_aborted", "Incomplete multipart uploads aborted", up.multipart_aborted),
        ):
            family = kind(p + name, doc, labels=["sink"])
            family.add_metric([self.name], value)
            yield family

    # -- encode: CPU only, in a worker thread ----------------------------------------------------
    def _compress(self, data: bytes) -> bytes:
        if self.cfg.compression == "zstd":
            return zstandard.ZstdCompressor(level=self.cfg.compression_level, write_checksum=True).compress(data)
        z = zlib.compressobj(self.cfg.compression_level, zlib.DEFLATED, 31)  # one gzip member
        return z.compress(data) + z.flush()

    def runs(self, records: list[bytes]) -> list[tuple[int, int, datetime, str]]:
        """Split a batch where the time partition moves forward: (start, end, first time, partition).

        An event older than the run it follows (kube-apiserver writes nearly, not strictly, in time order)
        stays in that run rather than starting a one-event object in an earlier partition."""
        out: list[tuple[int, int, datetime, str]] = []
        now = datetime.now(UTC)
        start, first, part, prev = 0, now, "", now
        keys, step = self.keys, self.keys.granularity_s
        cached_slot, cached = -1, ""  # strftime only when the time leaves the last partition-sized slot
        for i, record in enumerate(records):
            t = event_time(record) or prev
            prev = t
            slot = int(t.timestamp()) // step
            if slot != cached_slot:
                cached_slot, cached = slot, keys.partition(t)
            p = cached
            if i == 0:
                first, part = t, p
            elif p != part and t > first:
                out.append((start, i, first, part))
                start, first, part = i, t, p
        if records:
            out.append((start, len(records), first, part))
        return out

    def encode(self, records: list[bytes]) -> list[Request]:
        requests = []
        for start, end, first, part in self.runs(records):
            data = b"\n".join(records[start:end]) + b"\n"
            meta = {"first_time": first, "partition": part, "values": self.keys.values_from_event(records[start])}
            requests.append(Request(payload=self._compress(data), indices=range(start, end), raw_bytes=len(data), meta=meta))
        return requests

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        return []  # staging on local disk has no request size limit

    # -- send: one append to the staged object ---------------------------------------------------
    async def send(self, request: Request) -> Reply:
        if self._closed:
            raise RuntimeError(f"s3 sink {self.name} is closed")
        meta = request.meta
        try:
            await asyncio.to_thread(self.staging.append, request.payload, first_time=meta["first_time"], partition=meta["partition"], values=meta["values"])
        except StagingFullError:
            self.staging_full += 1
            raise
        finally:
            if self.staging.sealed_count:
                self._wake.set()
        return Reply(200, {}, b"")

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        if isinstance(result, Reply):
            return Delivered()
        if isinstance(result, StagingFullError):
            uploads = f"{self.uploader.state}" + (f" ({self.uploader.error})" if self.uploader.error else "")
            return Retry(f"staging_full: {result}; uploads {uploads}")
        if isinstance(result, OSError):
            where = f"{self.staging.dir}: {result.strerror or result}"
            code = errno.errorcode.get(result.errno or 0, "?")
            if result.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR):
                return Retry(f"staging write failed ({code}): {where}")
            return Blocked(f"cannot write to the staging directory ({code}): {where}")
        return Retry(f"{type(result).__name__}: {result}")

    # -- the uploader: the sink's background work ------------------------------------------------
    async def run_background(self) -> None:
        """Upload sealed objects oldest first (those a crash left first), sealing the one being filled when it
        is old enough, until `aclose` has sealed the last one and none is left."""
        self._worker = asyncio.current_task()
        try:
            await self._abort_left_uploads()
            staging = self.staging
            while True:
                obj = staging.next_sealed()
                if obj is not None:
                    await self._upload(obj)
                    continue
                if self._draining:
                    return
                self._wake.clear()
                if staging.next_sealed() is not None or self._draining:
                    continue
                try:
                    async with asyncio.timeout(staging.seconds_to_seal()):
                        await self._wake.wait()
                except TimeoutError:
                    await self._contained(asyncio.to_thread(staging.seal_if_old))
        finally:
            self._worker = None
            self._worker_done.set()

    async def _abort_left_uploads(self) -> None:
        ours, staged = self.keys.ours(), self.staging.staged_keys()
        if ours is not None or staged:
            await self._contained(self.uploader.abort_incomplete(self.keys.list_prefix(), ours, staged), wait=False)

    async def _contained(self, step: Awaitable[object], *, wait: bool = True) -> None:
        """Run one step of the uploader; an error no table knows (a bug) is logged, shown as blocked and (`wait`)
        waited out for retry.max_ms, instead of ending the uploads."""
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (a bug must not stop uploads; it is logged and retried)
            delay = self.uploader.note_unexpected(exc)
            if wait:
                await asyncio.sleep(delay)

    async def _upload(self, obj: StagedObject) -> None:
        await self._contained(self._upload_once(obj))

    async def _upload_once(self, obj: StagedObject) -> None:
        if obj.recovered:
            found = await self.uploader.existing(obj)
            if found == "taken":  # another object holds the key: never overwrite it
                old = obj.key
                await asyncio.to_thread(self.staging.rekey, obj)
                log.warning(
                    "a staged object's key is taken in the bucket; uploading under a new key", extra={"sink": self.name, "key": old, "new_key": obj.key}
                )
            obj.recovered = False
            if found == "stored":  # uploaded just before a crash, not yet removed
                log.info("staged object already in the bucket", extra={"sink": self.name, "key": obj.key})
                await asyncio.to_thread(self.staging.remove, obj)
                return
        await self.uploader.upload(obj)
        await asyncio.to_thread(self.staging.remove, obj)

    # -- stop ------------------------------------------------------------------------------------
    async def aclose(self, deadline: float | None = None) -> None:
        """Seal the object being filled and upload every staged object by `deadline` (time.monotonic(); None:
        no bound). What is not uploaded by then stays staged for the next start."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.to_thread(self.staging.seal)
            self._draining = True  # only after the seal: the uploader cannot end before it has seen that object
            self._wake.set()
            if self._worker is not None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(left):
                        await self._worker_done.wait()
                except TimeoutError:
                    await self._stop_worker()
            if self.staging.objects:
                log.error(
                    "stopping: staged objects not uploaded yet stay on disk and are uploaded at the next start",
                    extra={
                        "sink": self.name,
                        "objects": self.staging.objects,
                        "bytes": self.staging.used_bytes,
                        "uploads": str(self.uploader.state),
                        "reason": self.uploader.error,
                    },
                )
        finally:
            await self._stop_worker()
            await self.uploader.aclose()
            self.staging.close()

    async def _stop_worker(self) -> None:
        worker = self._worker
        if worker is not None and not worker.done():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
