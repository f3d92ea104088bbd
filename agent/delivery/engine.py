"""Per sink: batch records, encode, send with retries, acknowledge ranges in the ledger.

Every sink has its own queue of chunks (the same Chunk objects for all sinks: records are shared, not
copied), its own batcher and up to `concurrency` batches in flight. A batch's ranges are acknowledged
only after `send` returned, and acknowledgements may come out of order (the ledger keeps the
checkpoint behind any gap). A failed send is retried with exponential backoff and full jitter, for
ever unless `retry.max_retry_age_s` is set; then the batch's events go to the dead-letter store with
the last error, are counted, and acknowledged (that is the drop the operator asked for).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, stop_never, wait_random_exponential

from agent.checkpoint.ledger import Ledger
from agent.deadletter.store import DeadLetterStore
from agent.delivery.config import BatchConfig, RetryConfig
from agent.delivery.contract import Batch, Sink
from agent.model import Chunk

log = logging.getLogger(__name__)


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
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.batch_cfg = batch
        self.retry_cfg = retry
        self.concurrency = min(concurrency, sink.max_concurrency or concurrency)
        self.ledger = ledger
        self.deadletter = deadletter
        self.metrics = metrics
        self.queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.shipped_events = 0
        self.shipped_bytes = 0
        self.retries = 0
        self.gave_up_events = 0
        self.last_error: str | None = None

    # -- batching --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume chunks until the None sentinel, then flush and wait for every batch in flight."""
        cfg = self.batch_cfg
        max_wait = cfg.max_wait_ms / 1000
        batch: Batch | None = None
        while True:
            if batch is None:
                chunk = await self.queue.get()
            else:
                timeout = batch.started + max_wait - time.monotonic()
                try:
                    chunk = await asyncio.wait_for(self.queue.get(), max(0.0, timeout))
                except TimeoutError:
                    await self._flush(batch)
                    batch = None
                    continue
            if chunk is None:
                break
            records, ends, n = chunk.records, chunk.ends, len(chunk.records)
            i = 0
            while i < n:
                if batch is None:
                    batch = Batch(time.monotonic())
                    batch.oldest_read = chunk.read_at
                room = cfg.max_events - len(batch.records)
                j = i
                nbytes = batch.nbytes
                limit = cfg.max_bytes
                while j < n and j - i < room:
                    size = len(records[j]) + 1
                    if nbytes + size > limit and (nbytes or j > i):
                        break
                    nbytes += size
                    j += 1
                if j == i:  # the next record does not fit: this batch is full
                    await self._flush(batch)
                    batch = None
                    continue
                batch.records.extend(records[i:j])
                batch.nbytes = nbytes
                start = chunk.start if i == 0 else ends[i - 1]
                rng = batch.ranges.get(chunk.fid)
                if rng is None:
                    batch.ranges[chunk.fid] = [start, ends[j - 1]]
                else:
                    rng[1] = ends[j - 1]
                i = j
                if len(batch.records) >= cfg.max_events or batch.nbytes >= limit or j < n:
                    await self._flush(batch)
                    batch = None
        if batch is not None:
            await self._flush(batch)
        if self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _flush(self, batch: Batch) -> None:
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._deliver(batch), name=f"deliver:{self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- delivery --------------------------------------------------------------------------------
    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.sink_retries.labels(self.name).inc()
            self.metrics.errors.labels(f"sink:{type(exc).__name__}").inc()
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("sink send failed; retrying", extra={"sink": self.name, "attempt": state.attempt_number, "retry_in_s": round(wait, 3), "error": self.last_error})

    async def _deliver(self, batch: Batch) -> None:
        try:
            started = time.monotonic()
            payload = await asyncio.to_thread(self.sink.encode, batch.records)
            r = self.retry_cfg
            retrying = AsyncRetrying(
                wait=wait_random_exponential(multiplier=r.initial_ms / 1000, max=r.max_ms / 1000, exp_base=r.multiplier),
                stop=stop_after_delay(r.max_retry_age_s) if r.max_retry_age_s else stop_never,
                retry=retry_if_exception_type(Exception),
                before_sleep=self._before_sleep,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self.sink.send(payload)
            except Exception as exc:  # retries exhausted: only reachable with max_retry_age_s set
                self._give_up(batch, exc)
            else:
                self.shipped_events += len(batch.records)
                self.shipped_bytes += batch.nbytes
                if self.metrics is not None:
                    self.metrics.shipped(self.name, len(batch.records), batch.nbytes, time.monotonic() - started, time.monotonic() - batch.oldest_read)
            for fid, (start, end) in batch.ranges.items():
                self.ledger.ack(self.name, fid, start, end)
        finally:
            self._slots.release()

    def _give_up(self, batch: Batch, exc: BaseException) -> None:
        reason = f"sink {self.name}: gave up after retry.max_retry_age_s={self.retry_cfg.max_retry_age_s}: {type(exc).__name__}: {exc}"
        log.error("giving up on a batch; its events go to the dead-letter store", extra={"sink": self.name, "events": len(batch.records), "error": str(exc)})
        for record in batch.records:
            self.deadletter.add(reason=reason, sink=self.name, path=None, offset=None, length=None, event=record)
        self.deadletter.sync()
        self.gave_up_events += len(batch.records)
        if self.metrics is not None:
            self.metrics.deadlettered.labels("retry_exhausted").inc(len(batch.records))

    async def stop(self) -> None:
        await self.queue.put(None)
