"""A sink runner's spool side: batches parked on disk while the sink cannot take them, and sent from there.

While the spool holds anything or the sink is failing, the runner hands a new batch to `put`: it is appended
to the spool (fsynced) and only then acknowledged to the ledger, so the reader goes on. A drainer sends
spooled batches oldest first, up to `concurrency` at a time, each holding one of the runner's slots (so a sink
never sees more than `concurrency` requests at once), and acknowledges them in the spool. A full spool holds
the batch in memory until there is room (the reader then waits on the memory budget). At stop, batches still
in flight past the timeout are spooled (`keep`) rather than abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import msgspec

from kube_audit_shipper.delivery.batcher import Batch, Locate
from kube_audit_shipper.delivery.spool import RecordTooLargeError, Spool, SpooledRecord, SpoolFullError

log = logging.getLogger(__name__)

SPOOL_FULL_POLL_S = 0.2  # a batch waiting for room in a full spool looks again this often
DRAINED_POLL_S = 0.05  # `run --once` looks this often whether the spool is empty


class SpoolOwner(Protocol):
    """What the spool side uses of its sink runner (delivery/runner.py)."""

    name: str
    concurrency: int
    slots: asyncio.Semaphore
    path_of: Callable[[int], str | None]

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def ack(self, batch: Batch) -> None: ...

    async def deliver_batch(self, batch: Batch, *, spill: bool = True) -> None: ...

    async def deliver_records(self, records: list[bytes], locate: Locate | None = None, *, spill: bool = False) -> None: ...


class SpoolSide:
    def __init__(self, runner: SpoolOwner, spool: Spool) -> None:
        self.runner = runner
        self.spool = spool
        self.spooled_batches = 0
        self.full_waits = 0
        self._wakeup = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the drainer (a background task of the runner): batches left by a previous run go first."""
        if self._drainer is None:
            self._drainer = self.runner.spawn("spool-drain", self._drain())
            if self.spool.unacked_count:
                self._wakeup.set()

    def _entry(self, batch: Batch, only: Sequence[int] | None) -> tuple[bytes, bytes]:
        """The spool record of a batch (or of the records `only` of it): the records, and where each was read
        ([path, offset, length] or null)."""
        indices = range(len(batch.records)) if only is None else only
        locate = batch.locator(self.runner.path_of)
        return b"\n".join(batch.records[k] for k in indices), msgspec.json.encode([locate(k) for k in indices])

    async def put(self, batch: Batch, only: Sequence[int] | None = None) -> None:
        """Spool the batch, or the records `only` of it that are not delivered yet (waiting while the spool is
        full), then acknowledge the whole batch."""
        if only is not None and not only:
            self.runner.ack(batch)
            return
        payload, meta = self._entry(batch, only)
        warned = False
        while True:
            try:
                await asyncio.to_thread(self.spool.append, payload, meta)
                break
            except SpoolFullError:
                self.full_waits += 1
                if not warned:
                    warned = True
                    log.warning(
                        "spool full: the reader waits until the sink catches up", extra={"sink": self.runner.name, "spool_bytes": self.spool.bytes_used}
                    )
                await asyncio.sleep(SPOOL_FULL_POLL_S)
            except RecordTooLargeError:  # a batch bigger than the whole spool: deliver it here, retrying, never spilled again
                await self.runner.slots.acquire()
                await self.runner.deliver_batch(batch, spill=False)
                return
        self.spooled_batches += 1
        self.runner.ack(batch)
        self._wakeup.set()

    async def keep(self, batch: Batch) -> bool:
        """At stop: spool a batch that was still in flight and acknowledge it; False when it does not fit."""
        left = sorted(batch.left) if batch.left is not None else None  # a batch stopped midway: what it has not delivered
        if left is not None and not left:
            self.runner.ack(batch)
            return True
        try:
            await asyncio.to_thread(self.spool.append, *self._entry(batch, left))
        except (SpoolFullError, RecordTooLargeError, OSError):  # OSError: a full state_dir; the batch is read again at the next start
            return False
        self.runner.ack(batch)
        return True

    async def drained(self, failed: asyncio.Event) -> None:
        """Return once the spool is empty (`run --once`), or a background task of the runner died."""
        while self.spool.unacked_count and not failed.is_set():
            self._wakeup.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAINED_POLL_S):
                    await failed.wait()

    async def close(self) -> None:
        """Stop the drainer and close the spool (acknowledgements made durable)."""
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        try:
            await asyncio.to_thread(self.spool.close)  # releases its lock whatever happens
        except OSError as exc:  # a full or read-only state_dir: the acks of this run are not saved
            log.error(
                "the spool's acknowledgements could not be saved; batches it already delivered are sent again at the next start",
                extra={"sink": self.runner.name, "error": str(exc)},
            )

    async def _drain(self) -> None:
        """Send spooled batches oldest first, up to `concurrency` at a time, each holding a slot."""
        spool = self.spool
        while True:
            self._wakeup.clear()  # before looking: an append from now on sets it again, so none is missed
            records = await asyncio.to_thread(spool.next_unacked, self.runner.concurrency)
            if not records:
                await asyncio.to_thread(spool.flush_acks)  # idle: make every ack so far durable
                await self._wakeup.wait()
                continue
            await asyncio.gather(*(self._drain_one(rec) for rec in records))

    async def _drain_one(self, rec: SpooledRecord) -> None:
        async with self.runner.slots:
            lines = rec.payload.split(b"\n") if rec.payload else []
            try:
                where: Any = msgspec.json.decode(rec.meta) if rec.meta else []
            except msgspec.DecodeError:  # the records ship all the same; only a dead letter's source location is unknown
                log.warning("a spooled batch's source locations cannot be read; its dead letters, if any, will not name them", extra={"sink": self.runner.name})
                where = []
            await self.runner.deliver_records(lines, lambda k: tuple(where[k]) if k < len(where) and where[k] else None)
        if self.spool.ack(rec.id):
            await asyncio.to_thread(self.spool.flush_acks)
