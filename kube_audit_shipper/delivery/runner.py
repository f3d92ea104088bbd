"""Per sink: batch records, encode, send, classify, back off, spool, dead-letter, acknowledge.

Every sink has its own queue of chunks (the same Chunk objects for all sinks: records are shared, not
copied), its own batcher (delivery/batcher.py) and up to `concurrency` batches in flight. A batch's input
ranges are acknowledged to the ledger once every record in it is either stored by the sink, written to the
dead-letter store (rejected for good, or given up on through `retry.max_retry_age_s`), or fsynced into the
sink's spool. Acknowledgements may come out of order; the ledger keeps the checkpoint behind gaps.

Outcomes (delivery/contract.py): Retry and Blocked wait as delivery/backoff.py says (full jitter and
Retry-After; one attempt per `retry.max_ms` while blocked, one error log a minute, delivery/sink_state.py);
Split re-encodes the request in parts; Rejected dead-letters the named records. Nothing is dropped unless
`max_retry_age_s` asks for it, and then it is dead-lettered and counted. A record the sink cannot encode is
dead-lettered alone (delivery/containment.py); a request the backend finds too large and the sink fails to
`split` is cut in halves the same way, and a single such record is dead-lettered.

Spool (optional, per sink; delivery/spooling.py): while the spool holds anything or the sink is failing, new
batches go to the spool (fsynced, then acknowledged) so the reader goes on.

Background tasks (the batches in flight, the spool drainer, the sink's own `run_background`) are watched: one
that dies is logged with its traceback and fails `run` (whose owner, the pipeline's supervisor, reports it),
or `finish`/`aclose` after it; none vanishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from kube_audit_shipper.cancelling import cancel_and_wait
from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.backoff import Backoff
from kube_audit_shipper.delivery.batcher import Batch, Locate, cut_batches
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.containment import ContainedEncoder
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Rejected, Request, Retry, Sink, Split
from kube_audit_shipper.delivery.sink_state import SinkHealth, SinkState
from kube_audit_shipper.delivery.spool import Spool
from kube_audit_shipper.delivery.spooling import SpoolSide
from kube_audit_shipper.model import Chunk

log = logging.getLogger(__name__)


class BackgroundTaskError(RuntimeError):
    """A background task of a sink runner died: the runner stops; the task's exception is the cause."""


class _Spill(Exception):
    """A batch sent directly failed and the sink has a spool: what is left of it goes to the spool instead of
    waiting (the requests already delivered are not spooled, so they are not sent twice)."""


class SinkRunner:
    def __init__(
        self,
        sink: Sink,
        *,
        batch: BatchConfig,
        retry: RetryConfig,
        concurrency: int,
        ledger: Ledger,
        deadletter: DeadLetterStore,
        metrics: Any = None,
        spool: Spool | None = None,
        path_of: Callable[[int], str | None] | None = None,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.batch_cfg = batch
        self.retry_cfg = retry
        self.backoff = Backoff(retry)
        self.concurrency = min(concurrency, sink.max_concurrency or concurrency)
        self.ledger = ledger
        self.deadletter = deadletter
        self.metrics = metrics
        self.path_of = path_of or (lambda fid: None)
        self.queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.slots = asyncio.Semaphore(self.concurrency)
        self._inflight: dict[asyncio.Task[None], Batch] = {}
        self.state_changed = asyncio.Event()
        self.spooling: SpoolSide | None = None
        self.spool = spool  # (the setter builds the spool side)
        self._encoder = ContainedEncoder(sink)
        self.health = SinkHealth(
            log, blocked="sink blocked: it cannot work until this is fixed; data is kept and retried", unblocked="sink unblocked", extra={"sink": self.name}
        )
        self._background: asyncio.Task[None] | None = None  # the sink's own work
        self._failed = asyncio.Event()
        self.failure: tuple[str, BaseException] | None = None  # the first background task that died, and why
        # counters, read by metrics
        self.shipped_events = 0
        self.shipped_bytes = 0
        self.retries = 0
        self.rejected_events = 0
        self.gave_up_events = 0
        self.last_error: str | None = None

    @property
    def spool(self) -> Spool | None:
        return self.spooling.spool if self.spooling is not None else None

    @spool.setter
    def spool(self, spool: Spool | None) -> None:
        self.spooling = SpoolSide(self, spool) if spool is not None else None

    @property
    def state(self) -> SinkState:
        return self.health.state

    @property
    def blocked_since(self) -> float | None:
        return self.health.blocked_since

    @property
    def spooled_batches(self) -> int:
        return self.spooling.spooled_batches if self.spooling is not None else 0

    @property
    def spool_full_waits(self) -> int:
        return self.spooling.full_waits if self.spooling is not None else 0

    # -- background tasks, watched ---------------------------------------------------------------
    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a background task of this runner: if it dies, the runner fails."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{what}:{self.name}")
        task.add_done_callback(lambda t: self._task_done(t, what))
        return task

    def _task_done(self, task: asyncio.Task[None], what: str) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        log.error("a background task of a sink runner died; the runner stops", extra={"sink": self.name, "task": what}, exc_info=exc)
        if self.failure is None:
            self.failure = (what, exc)
        self._failed.set()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            what, exc = self.failure
            raise BackgroundTaskError(f"sink {self.name}: {what} died: {type(exc).__name__}: {exc}") from exc

    def _start_background(self) -> None:
        if self._background is None:
            self._background = self.spawn("sink-work", self.sink.run_background())
            if self.spooling is not None:
                self.spooling.start()

    # -- batching --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume chunks until the None sentinel, flushing batches; returns once the last one is handed off.
        Raises BackgroundTaskError when a background task of the runner dies."""
        self._start_background()
        loop = asyncio.get_running_loop()
        batching = loop.create_task(cut_batches(self.queue, self.batch_cfg, self._flush), name=f"batcher:{self.name}")
        failed = loop.create_task(self._failed.wait())
        try:
            await asyncio.wait({batching, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            if not batching.done():
                batching.cancel()
                await asyncio.gather(batching, return_exceptions=True)
        self._raise_failure()
        batching.result()

    async def _flush(self, batch: Batch) -> None:
        side = self.spooling
        while side is not None:
            if side.spool.unacked_count or self.state is not SinkState.OK:
                await side.put(batch)
                return
            if not self.slots.locked():
                break
            # every slot is busy: take the next free slot, unless the sink starts failing meanwhile
            self.state_changed.clear()
            acquire = asyncio.ensure_future(self.slots.acquire())
            changed = asyncio.ensure_future(self.state_changed.wait())
            await asyncio.wait([acquire, changed], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if not acquire.done():
                acquire.cancel()
                await asyncio.gather(acquire, return_exceptions=True)
            if acquire.done() and not acquire.cancelled():
                self._start(batch)
                return
        await self.slots.acquire()
        self._start(batch)

    def _start(self, batch: Batch) -> None:
        task = self.spawn("deliver", self.deliver_batch(batch))
        self._inflight[task] = batch
        task.add_done_callback(lambda t: self._inflight.pop(t, None))

    def ack(self, batch: Batch) -> None:
        for fid, (start, end) in batch.ranges.items():
            self.ledger.ack(self.name, fid, start, end)

    async def deliver_batch(self, batch: Batch, *, spill: bool = True) -> None:
        """Deliver a batch holding one of the slots (released here), then acknowledge it. With a spool, a failing
        batch is parked there (`spill`); without `spill` (a batch the spool cannot take) it is retried here."""
        released = False
        try:
            started = time.monotonic()
            records, locate, todo = self._undelivered(batch)
            left = set(range(len(records)))
            try:
                await self.deliver_records(records, locate, spill=spill and self.spooling is not None, left=left)
            except _Spill:  # the sink failed and has a spool: park what is left of the batch there, the reader goes on
                batch.left = {todo[k] for k in left}
                self.slots.release()
                released = True
                assert self.spooling is not None
                await self.spooling.put(batch, sorted(batch.left))
                return
            finally:
                batch.left = {todo[k] for k in left}  # what a stop (cancelled here) leaves to spool or read again
            if self.metrics is not None:
                self.metrics.shipped(self.name, len(batch.records), batch.nbytes, time.monotonic() - started, time.monotonic() - batch.oldest_read)
            self.ack(batch)
        finally:
            if not released:
                self.slots.release()

    def _undelivered(self, batch: Batch) -> tuple[list[bytes], Locate, list[int]]:
        """The records of a batch still to deliver (all of them, unless an earlier attempt delivered some), how to
        locate them, and their indices in the batch."""
        locate = batch.locator(self.path_of)
        if batch.left is None or len(batch.left) == len(batch.records):
            return batch.records, locate, list(range(len(batch.records)))
        todo = sorted(batch.left)
        return [batch.records[i] for i in todo], lambda k: locate(todo[k]), todo

    # -- one batch of records, through every outcome ---------------------------------------------
    async def deliver(self, records: list[bytes]) -> None:
        """Deliver records outside the pipeline (dead-letter replay): same outcomes, no acknowledgements."""
        self._start_background()
        await self.deliver_records(records)
        self._raise_failure()

    async def deliver_records(self, records: list[bytes], locate: Locate | None = None, *, spill: bool = False, left: set[int] | None = None) -> None:
        """Every record delivered or dead-lettered. `left` (if given) loses the indices of each request once it is
        settled: what a spill or a stop leaves of the batch."""
        while True:
            try:
                requests, unencodable = await asyncio.to_thread(self._encoder.encode, records)
                break
            except Exception as exc:  # the sink cannot encode anything: keep the data, say so, try again slowly
                log.exception("sink failed to encode a batch; it is kept and tried again", extra={"sink": self.name})
                self._set_state(SinkState.BLOCKED, f"encode failed: {type(exc).__name__}: {exc}")
                if spill:
                    raise _Spill from exc
                await asyncio.sleep(self.backoff.blocked_s)
        if unencodable:
            await self._dead(records, list(unencodable), "cannot encode the record", unencodable, kind="unencodable", locate=locate)
            if left is not None:
                left.difference_update(unencodable)
        for request in requests:
            await self._until_done(request, records, time.monotonic(), locate, spill=spill)
            if left is not None:
                left.difference_update(request.indices)

    async def _until_done(self, request: Request, records: list[bytes], first_try: float, locate: Locate | None = None, *, spill: bool = False) -> None:
        attempt = 0
        while True:
            try:
                result: Any = await self.sink.send(request)
            except Exception as exc:  # noqa: BLE001  # transport errors: the sink's classify decides what they mean
                result = exc
            try:
                outcome = self.sink.classify(request, result)
            except Exception as exc:  # a sink bug: treat the attempt as failed, keep the data
                log.exception("sink failed to classify an answer; treated as a failed attempt", extra={"sink": self.name})
                outcome = Retry(f"classify failed: {type(exc).__name__}: {exc}")
            if isinstance(outcome, Delivered):
                self._delivered(request, records)
                return
            if isinstance(outcome, Rejected):
                await self._rejected(request, records, outcome, first_try, locate)
                return
            if isinstance(outcome, Split):
                if await self._split(request, records, outcome, first_try, locate):
                    return
                await asyncio.sleep(self.backoff.blocked_s)  # the sink can encode nothing now: try again slowly
                continue
            attempt += 1
            self.retries += 1
            self.last_error = outcome.reason
            if self.metrics is not None:
                self.metrics.sink_retries.labels(self.name).inc()
            age = time.monotonic() - first_try
            if self.backoff.expired(age):
                why = f"gave up after retry.max_retry_age_s={self.retry_cfg.max_retry_age_s}: {outcome.reason}"
                await self._dead(records, request.indices, why, None, kind="retry_exhausted", locate=locate)
                self.gave_up_events += len(request.indices)
                return
            self._set_state(SinkState.BLOCKED if isinstance(outcome, Blocked) else SinkState.RETRYING, outcome.reason)
            if spill:
                raise _Spill
            delay = self.backoff.delay_s(outcome, attempt, age_s=age)
            if not isinstance(outcome, Blocked):
                log.warning(
                    "sink send failed; retrying", extra={"sink": self.name, "attempt": attempt, "retry_in_s": round(delay, 3), "reason": outcome.reason}
                )
            await asyncio.sleep(delay)

    async def _rejected(self, request: Request, records: list[bytes], outcome: Rejected, first_try: float, locate: Locate | None) -> None:
        self._set_state(SinkState.OK, None)
        await self._dead(records, outcome.indices, outcome.reason, outcome.reasons, kind="rejected", locate=locate)
        rejected = set(outcome.indices)
        rest = [i for i in request.indices if i not in rejected]
        if outcome.retry_rest and rest:
            subs, unencodable = await asyncio.to_thread(self._encoder.encode, records, rest)
            if unencodable:
                await self._dead(records, list(unencodable), "cannot encode the record", unencodable, kind="unencodable", locate=locate)
            for sub in subs:
                await self._until_done(sub, records, first_try, locate)
        elif rest:
            self._delivered(request, records, only=rest)

    async def _split(self, request: Request, records: list[bytes], outcome: Split, first_try: float, locate: Locate | None) -> bool:
        """Send a request the backend finds too large in parts; False when the sink can encode nothing now."""
        try:
            parts = await asyncio.to_thread(self.sink.split, request, records)
        except Exception:
            log.exception("sink failed to split a request; the engine cuts it in halves", extra={"sink": self.name})
            if len(request.indices) < 2:
                parts = []
            else:
                try:
                    halves = await asyncio.to_thread(self._encoder.halves, request, records)
                except Exception:  # noqa: BLE001  # the sink cannot encode at all
                    return False
                parts = []
                for requests, unencodable in halves:
                    if unencodable:
                        await self._dead(records, list(unencodable), "cannot encode the record", unencodable, kind="unencodable", locate=locate)
                    parts.extend(requests)
                if not parts:
                    return True  # every record was dead-lettered
        if not parts:  # a single record the backend will never take
            await self._dead(records, request.indices, f"too large for the backend: {outcome.reason}", None, kind="too_large", locate=locate)
            return True
        for part in parts:
            await self._until_done(part, records, first_try, locate)
        return True

    def _delivered(self, request: Request, records: list[bytes], only: Sequence[int] | None = None) -> None:
        idx = request.indices if only is None else only
        self._set_state(SinkState.OK, None)
        self.shipped_events += len(idx)
        self.shipped_bytes += sum(len(records[i]) + 1 for i in idx)

    async def _dead(self, records: list[bytes], indices: Sequence[int], reason: str, reasons: Any, *, kind: str, locate: Locate | None = None) -> None:
        """Dead-letter records and wait until they are durable (retrying while the state directory refuses)."""
        for i in indices:
            why = reasons.get(i, reason) if reasons else reason
            where = locate(i) if locate is not None else None
            path, offset, length = where if where is not None else (None, None, None)
            self.deadletter.add(reason=f"sink {self.name}: {why}", sink=self.name, path=path, offset=offset, length=length, event=records[i])
        while True:
            try:
                await asyncio.to_thread(self.deadletter.sync)
                break
            except OSError:  # counted and logged by the store; the batch stays unacknowledged meanwhile
                await asyncio.sleep(self.backoff.blocked_s)
        self.rejected_events += len(indices) if kind != "retry_exhausted" else 0
        if self.metrics is not None:
            self.metrics.deadlettered.labels(self.name, kind).inc(len(indices))
        log.error("events dead-lettered by a sink", extra={"sink": self.name, "events": len(indices), "kind": kind, "reason": reason})

    def _set_state(self, state: SinkState, reason: str | None) -> None:
        previous = self.health.state
        changed = self.health.set(state, reason)
        if state is not SinkState.OK:
            if self.metrics is not None:
                self.metrics.errors.labels(f"sink_{state.value}").inc()
            if previous is SinkState.OK and self.spooling is not None:
                log.warning("sink is failing: batches go to its spool", extra={"sink": self.name, "reason": reason})
        if changed:
            self.state_changed.set()

    # -- stop ------------------------------------------------------------------------------------
    async def stop(self) -> None:
        await self.queue.put(None)

    async def finish(self, timeout: float | None, *, drain_spool: bool = False) -> int:
        """Wait for batches in flight; past `timeout`, spool them (if a spool exists) or abandon them
        (they are not acknowledged, so they are read again at the next start). With `drain_spool`
        (run --once) also wait until the spool is empty. Closes the spool. Returns batches abandoned."""
        abandoned = 0
        cancelled = False
        try:
            if drain_spool and self.spooling is not None:
                if self._inflight:
                    await asyncio.wait(list(self._inflight))
                await self.spooling.drained(self._failed)
                self._raise_failure()
            if self._inflight:
                _, pending = await asyncio.wait(list(self._inflight), timeout=timeout)
                for task in pending:
                    batch = self._inflight.get(task)
                    await cancel_and_wait(task)
                    if batch is not None and not (self.spooling is not None and await self.spooling.keep(batch)):
                        abandoned += 1
        except asyncio.CancelledError:  # the caller calls finish again (time is up): the spool is still needed
            cancelled = True
            raise
        finally:  # otherwise, whatever happened, the spool's lock is released: a pipeline restarted in this process opens it again
            if self.spooling is not None and not cancelled:
                await self.spooling.close()
        self._raise_failure()
        return abandoned

    async def aclose(self, deadline: float | None = None) -> None:
        """Close the sink (it finishes its own work by `deadline`, a time.monotonic() value; None: no bound),
        then end its background work. Raises BackgroundTaskError when a background task died."""
        try:
            await self.sink.aclose(deadline)
        finally:
            background = self._background
            if background is not None and not background.done():
                await cancel_and_wait(background)
        self._raise_failure()
