"""Per sink: batch records, encode, send, classify, back off, spool, dead-letter, acknowledge.

Every sink has its own queue of chunks (the same Chunk objects for all sinks: records are shared, not
copied), its own batcher and up to `concurrency` batches in flight. A batch's input ranges are
acknowledged to the ledger once every record in it is either stored by the sink, written to the
dead-letter store (rejected for good, or given up on through `retry.max_retry_age_s`), or fsynced into
the sink's spool. Acknowledgements may come out of order; the ledger keeps the checkpoint behind gaps.

Outcomes (delivery/contract.py): Retry waits with exponential backoff and full jitter (tenacity's
wait_random_exponential; at least the backend's Retry-After); Blocked waits `retry.max_ms` between
attempts and logs one error per minute; Split re-encodes the request in parts; Rejected dead-letters
the named records. Nothing is dropped unless `max_retry_age_s` asks for it, and then it is dead-lettered
and counted.

Encode failures: a sink's `encode` may fail on one odd record (the pipeline ships any valid JSON object,
however nested or whatever its values). When a batch cannot be encoded and the sink can still encode a
record it encoded before (the *canary*; `{}` before the first batch), the batch is bisected down to the
records that cannot be encoded alone: those are dead-lettered with the exception (`unencodable`, counted
in `sink_events_deadlettered_total`), the rest is encoded again together and delivered. When not even the
canary encodes, the sink itself is broken: the batch is kept and retried slowly (state blocked), as for
any sink bug. A request the backend finds too large and the sink fails to `split` is cut in halves the
same way; a single such record is dead-lettered.

Spool (optional, per sink): while the spool holds anything or the sink is failing, new batches go to
the spool (fsynced, then acknowledged) so the reader goes on; a drainer sends spooled batches oldest
first, up to `concurrency` at a time, each holding one of the sink's slots (so a sink never sees more
than `concurrency` requests at once). A full spool holds the batch in memory until there is room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from tenacity import RetryCallState, wait_random_exponential

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.contract import Batch, Blocked, Delivered, Rejected, Request, Retry, Sink, Split, split_in_half
from kube_audit_shipper.delivery.health import BLOCKED_LOG_INTERVAL_S, BlockedClock
from kube_audit_shipper.delivery.spool import RecordTooLargeError, Spool, SpoolFullError
from kube_audit_shipper.model import Chunk

log = logging.getLogger(__name__)

Locate = Callable[[int], "tuple[str | None, int, int] | None"]  # record index -> where it was read
#: A dead-letter reason built from an exception keeps this many characters of its message.
MAX_REASON_CHARS = 300


class _Spill(Exception):
    """A batch sent directly failed and the sink has a spool: it goes to the spool instead of waiting."""


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
        self.concurrency = min(concurrency, sink.max_concurrency or concurrency)
        self.ledger = ledger
        self.deadletter = deadletter
        self.metrics = metrics
        self.spool = spool
        self.path_of = path_of or (lambda fid: None)
        self.queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._inflight: dict[asyncio.Task[None], Batch] = {}
        self._wait = wait_random_exponential(multiplier=retry.initial_ms / 1000, max=retry.max_ms / 1000, exp_base=retry.multiplier)
        self._spool_wakeup = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        # state and counters, read by metrics
        self.state = "ok"  # ok | retrying | blocked
        self._blocked = BlockedClock(
            log, blocked="sink blocked: it cannot work until this is fixed; data is kept and retried", unblocked="sink unblocked", extra={"sink": self.name}
        )
        self.shipped_events = 0
        self.shipped_bytes = 0
        self.retries = 0
        self.rejected_events = 0
        self.gave_up_events = 0
        self.spooled_batches = 0
        self.spool_full_waits = 0
        self.last_error: str | None = None
        self._canary = b"{}"  # a record this sink encoded: tells a broken sink from a record it cannot encode

    # -- batching --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume chunks until the None sentinel, flushing batches; returns once the last one is handed off."""
        if self.spool is not None and self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain_spool(), name=f"spool:{self.name}")
            if self.spool.unacked_count:
                self._spool_wakeup.set()
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
                batch.parts.append((chunk, i, j))
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

    async def _flush(self, batch: Batch) -> None:
        while self.spool is not None:
            if self.spool.unacked_count or self.state != "ok":
                await self._to_spool(batch)
                return
            if not self._slots.locked():
                break
            # every slot is busy: take the next free slot, unless the sink starts failing meanwhile
            self._state_changed.clear()
            acquire = asyncio.ensure_future(self._slots.acquire())
            changed = asyncio.ensure_future(self._state_changed.wait())
            await asyncio.wait([acquire, changed], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if not acquire.done():
                acquire.cancel()
                await asyncio.gather(acquire, return_exceptions=True)
            if acquire.done() and not acquire.cancelled():
                self._start(batch)
                return
        await self._slots.acquire()
        self._start(batch)

    def _start(self, batch: Batch) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(batch), name=f"deliver:{self.name}")
        self._inflight[task] = batch
        task.add_done_callback(lambda t: self._inflight.pop(t, None))

    def _ack(self, batch: Batch) -> None:
        for fid, (start, end) in batch.ranges.items():
            self.ledger.ack(self.name, fid, start, end)

    async def _deliver(self, batch: Batch) -> None:
        released = False
        try:
            started = time.monotonic()
            try:
                await self._deliver_records(batch.records, self._locator(batch), spill=self.spool is not None)
            except _Spill:  # the sink failed and has a spool: park the batch there, the reader goes on
                self._slots.release()
                released = True
                await self._to_spool(batch)
                return
            if self.metrics is not None:
                self.metrics.shipped(self.name, len(batch.records), batch.nbytes, time.monotonic() - started, time.monotonic() - batch.oldest_read)
            self._ack(batch)
        finally:
            if not released:
                self._slots.release()

    # -- one batch of records, through every outcome ---------------------------------------------
    async def deliver(self, records: list[bytes]) -> None:
        """Deliver records outside the pipeline (dead-letter replay): same outcomes, no acknowledgements."""
        await self._deliver_records(records)

    async def _deliver_records(self, records: list[bytes], locate: Locate | None = None, *, spill: bool = False) -> None:
        while True:
            try:
                requests, unencodable = await asyncio.to_thread(self._encode_contained, records)
                break
            except Exception as exc:  # the sink cannot encode anything: keep the data, say so, try again slowly
                log.exception("sink failed to encode a batch; it is kept and tried again", extra={"sink": self.name})
                self._set_state("blocked", f"encode failed: {type(exc).__name__}: {exc}")
                if spill:
                    raise _Spill from exc
                await asyncio.sleep(self.retry_cfg.max_ms / 1000)
        if unencodable:
            self._dead(records, list(unencodable), "cannot encode the record", unencodable, kind="unencodable", locate=locate)
        for request in requests:
            await self._until_done(request, records, time.monotonic(), locate, spill=spill)

    def _locator(self, batch: Batch) -> Locate:
        """Record index in the batch → (path, offset, length) of the input line it came from."""
        parts = batch.parts
        path_of = self.path_of

        def locate(k: int) -> tuple[str | None, int, int] | None:
            base = 0
            for chunk, i, j in parts:
                if k < base + j - i:
                    offset, length = chunk.location(i + k - base)
                    return path_of(chunk.fid), offset, length
                base += j - i
            return None

        return locate

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
                self._set_state("ok", None)
                self._dead(records, outcome.indices, outcome.reason, outcome.reasons, kind="rejected", locate=locate)
                rejected = set(outcome.indices)
                rest = [i for i in request.indices if i not in rejected]
                if outcome.retry_rest and rest:
                    subs, unencodable = await asyncio.to_thread(self._encode_contained, records, rest)
                    if unencodable:
                        self._dead(records, list(unencodable), "cannot encode the record", unencodable, kind="unencodable", locate=locate)
                    for sub in subs:
                        await self._until_done(sub, records, first_try, locate)
                elif rest:
                    self._delivered(request, records, only=rest)
                return
            if isinstance(outcome, Split):
                parts: list[Request] | None
                try:
                    parts = await asyncio.to_thread(self.sink.split, request, records)
                except Exception:
                    log.exception("sink failed to split a request; the engine cuts it in halves", extra={"sink": self.name})
                    parts = await self._halves(request, records, locate) if len(request.indices) > 1 else []
                    if parts is not None and len(request.indices) > 1:
                        for part in parts:  # records it could not encode are dead-lettered already
                            await self._until_done(part, records, first_try, locate)
                        return
                if parts is None:
                    await asyncio.sleep(self.retry_cfg.max_ms / 1000)
                    continue
                if not parts:  # a single record the backend will never take
                    self._dead(records, request.indices, f"too large for the backend: {outcome.reason}", None, kind="too_large", locate=locate)
                    return
                for part in parts:
                    await self._until_done(part, records, first_try, locate)
                return
            attempt += 1
            self.retries += 1
            self.last_error = outcome.reason
            if self.metrics is not None:
                self.metrics.sink_retries.labels(self.name).inc()
            age = time.monotonic() - first_try
            max_age = self.retry_cfg.max_retry_age_s
            if max_age and age >= max_age:
                self._dead(
                    records, request.indices, f"gave up after retry.max_retry_age_s={max_age}: {outcome.reason}", None, kind="retry_exhausted", locate=locate
                )
                self.gave_up_events += len(request.indices)
                return
            if spill:
                self._set_state("blocked" if isinstance(outcome, Blocked) else "retrying", outcome.reason)
                raise _Spill
            if isinstance(outcome, Blocked):
                self._set_state("blocked", outcome.reason)
                delay = self.retry_cfg.max_ms / 1000
            else:
                self._set_state("retrying", outcome.reason)
                state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
                state.attempt_number = attempt
                delay = max(self._wait(state), outcome.after_s or 0.0)
                log.warning(
                    "sink send failed; retrying", extra={"sink": self.name, "attempt": attempt, "retry_in_s": round(delay, 3), "reason": outcome.reason}
                )
            if max_age:
                delay = min(delay, max(0.0, max_age - age))
            await asyncio.sleep(delay)

    def _encode_contained(self, records: list[bytes], positions: Sequence[int] | None = None) -> tuple[list[Request], dict[int, str]]:
        """Encode `records` (or only `records[positions]`) in a worker thread, whatever one record holds.

        Returns the requests and, by position, why each record the sink cannot encode cannot be (those are
        left out). Raises what the sink raised when the sink cannot even encode its canary: a broken sink.
        """
        try:
            requests = self.sink.encode(records) if positions is None else self._encode_subset(records, positions)
        except Exception as exc:  # noqa: BLE001  # one record's fault or the sink's: _isolate tells which
            return self._isolate(records, range(len(records)) if positions is None else positions, exc)
        if positions is None:
            if records:
                self._canary = records[-1]
        elif positions:
            self._canary = records[positions[-1]]
        return requests, {}

    def _isolate(self, records: list[bytes], positions: Sequence[int], exc: Exception) -> tuple[list[Request], dict[int, str]]:
        """`records[positions]` failed to encode together: bisect down to the records that fail alone."""
        try:
            self.sink.encode([self._canary])
        except Exception:  # noqa: BLE001  # not even a record it encoded before: the sink is broken
            raise exc from None
        unencodable: dict[int, str] = {}
        parts: list[Request] = []
        self._bisect(records, list(positions), exc, unencodable, parts)
        if unencodable:
            rest = [i for i in positions if i not in unencodable]
            if rest:
                with contextlib.suppress(Exception):  # the others together, as the sink would; else the bisection's parts
                    parts = self._encode_subset(records, rest)
        return parts, unencodable

    def _bisect(self, records: list[bytes], positions: list[int], exc: Exception, unencodable: dict[int, str], parts: list[Request]) -> None:
        if len(positions) == 1:
            unencodable[positions[0]] = f"cannot encode the record: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
            return
        mid = len(positions) // 2
        for half in (positions[:mid], positions[mid:]):
            try:
                parts.extend(self._encode_subset(records, half))
            except Exception as half_exc:  # noqa: BLE001
                self._bisect(records, half, half_exc, unencodable, parts)

    async def _halves(self, request: Request, records: list[bytes], locate: Locate | None) -> list[Request] | None:
        """The records of a request (two or more) the sink failed to split, encoded again in two halves (records
        that cannot be are dead-lettered); None when the sink cannot encode at all."""
        encoded = []
        for half in split_in_half(request) or ():
            try:
                encoded.append(await asyncio.to_thread(self._encode_contained, records, half))
            except Exception:  # noqa: BLE001
                return None
        parts: list[Request] = []
        for requests, unencodable in encoded:
            if unencodable:
                self._dead(records, list(unencodable), "cannot encode the record", unencodable, kind="unencodable", locate=locate)
            parts.extend(requests)
        return parts

    def _encode_subset(self, records: list[bytes], indices: Sequence[int]) -> list[Request]:
        """Encode some records of a batch again, keeping their positions in the batch."""
        subset = [records[i] for i in indices]
        out = []
        for req in self.sink.encode(subset):
            req.indices = [indices[k] for k in req.indices]
            out.append(req)
        return out

    def _delivered(self, request: Request, records: list[bytes], only: Sequence[int] | None = None) -> None:
        idx = request.indices if only is None else only
        self._set_state("ok", None)
        self.shipped_events += len(idx)
        self.shipped_bytes += sum(len(records[i]) + 1 for i in idx)

    def _dead(self, records: list[bytes], indices: Sequence[int], reason: str, reasons: Any, *, kind: str, locate: Locate | None = None) -> None:
        for i in indices:
            why = reasons.get(i, reason) if reasons else reason
            where = locate(i) if locate is not None else None
            path, offset, length = where if where is not None else (None, None, None)
            self.deadletter.add(reason=f"sink {self.name}: {why}", sink=self.name, path=path, offset=offset, length=length, event=records[i])
        self.deadletter.sync()
        self.rejected_events += len(indices) if kind != "retry_exhausted" else 0
        if self.metrics is not None:
            self.metrics.deadlettered.labels(self.name, kind).inc(len(indices))
        log.error("events dead-lettered by a sink", extra={"sink": self.name, "events": len(indices), "kind": kind, "reason": reason})

    @property
    def blocked_since(self) -> float | None:
        return self._blocked.since

    def _set_state(self, state: str, reason: str | None) -> None:
        if state == "blocked":
            self._blocked.blocked(reason, log_every_s=BLOCKED_LOG_INTERVAL_S)
        else:
            self._blocked.clear()
        if state != "ok" and self.metrics is not None:
            self.metrics.errors.labels(f"sink_{state}").inc()
        if state != "ok" and self.state == "ok" and self.spool is not None:
            log.warning("sink is failing: batches go to its spool", extra={"sink": self.name, "reason": reason})
        if state != self.state:
            self._state_changed.set()
        self.state = state

    # -- spool -----------------------------------------------------------------------------------
    async def _to_spool(self, batch: Batch) -> None:
        assert self.spool is not None
        payload = b"\n".join(batch.records)
        meta = self._spool_meta(batch)
        warned = False
        while True:
            try:
                await asyncio.to_thread(self.spool.append, payload, meta)
                break
            except SpoolFullError:
                self.spool_full_waits += 1
                if not warned:
                    warned = True
                    log.warning("spool full: the reader waits until the sink catches up", extra={"sink": self.name, "spool_bytes": self.spool.bytes_used})
                await asyncio.sleep(0.2)
            except RecordTooLargeError:  # a batch bigger than the whole spool: deliver it directly
                await self._slots.acquire()
                await self._deliver(batch)
                return
        self.spooled_batches += 1
        self._ack(batch)
        self._spool_wakeup.set()

    async def _drain_spool(self) -> None:
        """Send spooled batches oldest first, up to `concurrency` at a time, each holding a slot."""
        assert self.spool is not None
        spool = self.spool
        while True:
            self._spool_wakeup.clear()  # before looking: an append from now on sets it again, so none is missed
            records = await asyncio.to_thread(spool.next_unacked, self.concurrency)
            if not records:
                await asyncio.to_thread(spool.flush_acks)  # idle: make every ack so far durable
                await self._spool_wakeup.wait()
                continue
            await asyncio.gather(*(self._drain_one(rec) for rec in records))

    def _spool_meta(self, batch: Batch) -> bytes:
        """Where each record was read ([path, offset, length] or null), kept with the batch in the spool."""
        locate = self._locator(batch)
        return msgspec.json.encode([locate(k) for k in range(len(batch.records))])

    async def _drain_one(self, rec: Any) -> None:
        assert self.spool is not None
        async with self._slots:
            lines = rec.payload.split(b"\n") if rec.payload else []
            try:
                where = msgspec.json.decode(rec.meta) if rec.meta else []
            except msgspec.DecodeError:
                where = []
            await self._deliver_records(lines, lambda k: tuple(where[k]) if k < len(where) and where[k] else None)
        if self.spool.ack(rec.id):
            await asyncio.to_thread(self.spool.flush_acks)

    # -- stop ------------------------------------------------------------------------------------
    async def stop(self) -> None:
        await self.queue.put(None)

    async def finish(self, timeout: float | None, *, drain_spool: bool = False) -> int:
        """Wait for batches in flight; past `timeout`, spool them (if a spool exists) or abandon them
        (they are not acknowledged, so they are read again at the next start). With `drain_spool`
        (run --once) also wait until the spool is empty. Returns batches abandoned."""
        abandoned = 0
        if drain_spool and self.spool is not None:
            if self._inflight:
                await asyncio.wait(list(self._inflight))
            while self.spool.unacked_count:
                self._spool_wakeup.set()
                await asyncio.sleep(0.05)
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight), timeout=timeout)
            for task in pending:
                batch = self._inflight.get(task)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if batch is None:
                    continue
                if self.spool is not None:
                    try:
                        await asyncio.to_thread(self.spool.append, b"\n".join(batch.records), self._spool_meta(batch))
                        self._ack(batch)
                        continue
                    except (SpoolFullError, RecordTooLargeError):
                        pass
                abandoned += 1
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)
        return abandoned
