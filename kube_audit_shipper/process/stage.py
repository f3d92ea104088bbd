"""The processing stage: the lines the tailer reads in, events and alerts handed on to delivery.

Per read (`take`): the CPU work (check, detect, transform: process/lines.py) in the stage's thread, or for a
large read shaped by a worker process (process/workers.py) while the stage's thread detects on it; the dead
letters written (dead-letter store); the memory budget charged for the events handed on; the input range
acknowledged at once for every sink that gets nothing from it (no events: every event sink; no alerts:
every alert target), so checkpoints never wait for a range nobody will acknowledge; events to the event
sinks' runners and alerts to the alert targets' runners (`handoff`). When every sink has acknowledged a
range (`acked`, from the ledger), the memory it held is released.

Reads are a pipeline: `take` hands a read in and returns while it is processed, so the tailer reads the next
one meanwhile (and with workers, several reads are shaped at once); results are handed on strictly in the
order reads came in. At most `inflight` reads are between `take` and their hand-on (1 without workers,
twice the workers with them). A read in the pipeline holds its lines' size of the memory budget until its
events are charged instead, so the reader waits on the same limit as without a pipeline.

`room` is set while the stage takes more lines: it is cleared while the memory budget is used up, and while
the dead-letter store holds records the state directory refused (a full disk), which a background retry
writes with backoff. The tailer waits on it, discovering files meanwhile.

Detection across restarts: `detection_snapshot` gives, at one moment between two chunks, the detection
engine's state, where detection is in each file and the alerts not yet acknowledged; the checkpoint writer
saves them with the files' offsets. After a restart the lines before a file's detection position are
shipped again (if not acknowledged) but not detected on again (the restored state has them), and the saved
alerts ride with the first chunk read from their file: no alert lost, no window counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.model import Chunk, Lines
from kube_audit_shipper.process.budget import ByteBudget
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.lines import DeadLine, LineProcessor, Processed
from kube_audit_shipper.process.transform import Transform
from kube_audit_shipper.process.workers import ShapePool

log = logging.getLogger(__name__)

DEADLETTER_RETRY_MAX_S = 30.0  # backoff cap while the state directory refuses dead-letter writes

Handoff = Callable[[Chunk, Chunk], Awaitable[None]]  # (events, alerts) to the runners


class Stage:
    def __init__(
        self,
        processor: LineProcessor,
        *,
        deadletter: DeadLetterStore,
        budget: ByteBudget,
        ledger: Ledger,
        handoff: Handoff,
        event_sinks: Callable[[], Sequence[str]],
        alert_targets: Callable[[], Sequence[str]],
        detection_resume: Callable[[int], tuple[int, list[bytes]]] = lambda fid: (0, []),
        pool: ShapePool | None = None,
        pool_min_bytes: int = 512 * 1024,
    ) -> None:
        self.processor = processor
        self.deadletter = deadletter
        self.budget = budget
        self.ledger = ledger
        self.handoff = handoff
        self._event_sinks = event_sinks  # names, asked per chunk: a reload changes them
        self._alert_targets = alert_targets
        self.room = asyncio.Event()
        self.room.set()
        self._inflight: dict[int, deque[tuple[int, int]]] = {}  # fid -> (chunk end, bytes charged)
        self._emitted: dict[int, int] = {}  # fid -> end of everything handed on or acknowledged without records
        self._retrying: asyncio.Task[None] | None = None
        self._detection_resume = detection_resume
        self._resume: dict[int, tuple[int, list[bytes]]] = {}  # fid -> (detect from, alerts to deliver again)
        self._alerts_inflight: dict[int, deque[tuple[int, list[bytes]]]] = {}  # fid -> (chunk end, alerts) not yet acknowledged
        self.pool = pool
        self.pool_min_bytes = pool_min_bytes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="stage")  # in read order: detection's state has one writer
        self._inflight_reads = 2 * pool.workers if pool is not None else 1
        self._slots = asyncio.Semaphore(self._inflight_reads)
        self._gate = asyncio.Lock()  # held to hand a read in; snapshot and swap hold it with the pipeline empty
        self._tail: asyncio.Task[None] | None = None  # the hand-on of the last read taken: each awaits the one before
        self._hand_ons: set[asyncio.Task[None]] = set()  # every hand-on not done yet
        self._failed: BaseException | None = None
        self._retired: set[int] = set()  # fids truncated while reads of them were in the pipeline
        self.pooled_reads = 0  # reads shaped by worker processes
        self._changes = 0  # chunks processed and transforms swapped: detection's state can only change with these
        self._last_state: tuple[int, DetectionEngine | None, bytes | None] | None = None  # the last snapshot, reused while nothing changed
        budget.on_change = self._update_room

    # -- lines in --------------------------------------------------------------------------------------------
    async def take(self, fid: int, path: str, lines: Lines) -> None:
        """Hand one read in; returns once it is in the pipeline (waiting while `inflight` reads are)."""
        if self._failed is not None:
            raise RuntimeError("the processing stage failed") from self._failed
        await self._slots.acquire()
        async with self._gate:
            if fid not in self._resume:
                self._resume[fid] = self._detection_resume(fid)
            detect_from, pending = self._resume[fid]
            self._resume[fid] = (detect_from, [])
            self._changes += 1
            reserved = sum(map(len, lines.lines)) + len(lines.lines)  # held until its events are charged instead
            self.budget.charge(reserved)
            work = asyncio.ensure_future(self._work(fid, path, lines, detect_from, pending))
            self._tail = asyncio.get_running_loop().create_task(self._hand_on_in_turn(self._tail, fid, path, work, reserved), name="stage-hand-on")
            self._hand_ons.add(self._tail)
            self._tail.add_done_callback(self._hand_ons.discard)
        self._update_room()

    async def _work(self, fid: int, path: str, lines: Lines, detect_from: int, pending: list[bytes]) -> Processed:
        loop = asyncio.get_running_loop()
        pool = self.pool
        if pool is None or lines.end - lines.start < self.pool_min_bytes:
            return await loop.run_in_executor(self._thread, self._process, fid, path, lines, detect_from, pending)
        self.pooled_reads += 1
        shaping = asyncio.ensure_future(pool.shape(fid, lines, path))
        alerts = await loop.run_in_executor(self._thread, functools.partial(self.processor.detect, fid, lines, detect_from=detect_from, pending_alerts=pending))
        try:
            shaped, counts = await shaping
        except Exception as exc:  # noqa: BLE001  # a worker died (or could not start): this read is shaped here
            log.error("a worker process failed; the read is processed in the agent's process", extra={"path": path, "error": repr(exc)})
            done = await loop.run_in_executor(self._thread, self._process, fid, path, lines, lines.end, [])  # detected above
            return Processed(done.events, alerts, done.dead, done.counts)
        return self.processor.absorb(shaped, counts, alerts)

    async def _hand_on_in_turn(self, before: asyncio.Task[None] | None, fid: int, path: str, work: asyncio.Future[Processed], reserved: int) -> None:
        try:
            if before is not None:
                await asyncio.wait({before})  # its failure is recorded there, not raised here
            done = await work
            if done.dead:  # in file order, before the read is handed on (held in memory if the disk refuses)
                await asyncio.to_thread(self._write_dead, path, done.dead)
            self.budget.release(reserved)
            reserved = 0
            if self._failed is None:
                await self._hand_on(fid, done)
        except asyncio.CancelledError:
            work.cancel()
            raise
        except Exception as exc:  # a bug: the tailer's next take raises it, and the pipeline stops
            log.exception("the processing stage failed")
            self._failed = exc
        finally:
            if reserved:
                self.budget.release(reserved)
            self._slots.release()

    async def _hand_on(self, fid: int, done: Processed) -> None:
        if fid in self._retired:  # truncated while in the pipeline: its content is read again under a new fid
            return
        events, alerts = done.events, done.alerts
        if alerts.records:
            self._alerts_inflight.setdefault(fid, deque()).append((alerts.end, alerts.records))
        self._emitted[fid] = max(self._emitted.get(fid, 0), events.end)
        if events.records:
            self.budget.charge(events.nbytes)
            self._inflight.setdefault(fid, deque()).append((events.end, events.nbytes))
        else:
            for sink in self._event_sinks():
                self.ledger.ack(sink, fid, events.start, events.end)
        if not alerts.records:
            for target in self._alert_targets():
                self.ledger.ack(target, fid, alerts.start, alerts.end)
        if events.records or alerts.records:
            await self.handoff(events, alerts)
        self._update_room()

    async def drain(self) -> None:
        """Until every read taken so far is handed on."""
        while self._tail is not None and not self._tail.done():
            await asyncio.wait({self._tail})

    async def abandon(self) -> None:
        """A stop that cannot wait: reads not handed on yet are dropped (nothing acknowledged them: they are read
        again at the next start)."""
        pending = list(self._hand_ons)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _process(self, fid: int, path: str, lines: Lines, detect_from: int, pending: list[bytes]) -> Processed:
        """The stage's thread: the CPU work."""
        return self.processor.process(fid, lines, path, detect_from=detect_from, pending_alerts=pending)

    def _write_dead(self, path: str, dead: list[DeadLine]) -> None:
        for d in dead:
            self._dead(path, d)

    def _dead(self, path: str, d: DeadLine) -> None:
        self.deadletter.add(reason=d.reason, sink=None, path=path, offset=d.offset, length=d.length, event=d.line)

    def incomplete_tail(self, fid: int, path: str, offset: int, length: int) -> None:
        self._dead_range(fid, path, DeadLine("incomplete last line of a rotated file", offset, length, None, "incomplete"), offset + length)

    def unreadable_rest(self, fid: int, path: str, offset: int, reason: str) -> None:
        self._dead_range(fid, path, DeadLine(f"unreadable input: {reason}", offset, None, None, "unreadable"), None)

    def _dead_range(self, fid: int, path: str, dead: DeadLine, end: int | None) -> None:
        """A part of a file that is no line: one dead letter, and (if it has an end) its range acknowledged by all."""
        self._dead(path, dead)
        self.processor.count_one(f"deadletter:{dead.kind}")
        if end is not None:
            self._emitted[fid] = max(self._emitted.get(fid, 0), end)
            self.ledger.ack_all(fid, dead.offset, end)
        self._update_room()

    # -- acknowledgements ------------------------------------------------------------------------------------
    def acked(self, fid: int, offset: int) -> None:
        """Every sink holds `fid` up to `offset`: the memory of the chunks below it is free again."""
        inflight = self._inflight.get(fid)
        released = 0
        while inflight and inflight[0][0] <= offset:
            released += inflight.popleft()[1]
        alerts = self._alerts_inflight.get(fid)
        while alerts and alerts[0][0] <= offset:
            alerts.popleft()
        if released:
            self.budget.release(released)

    def retired(self, fid: int) -> None:
        """`fid` is gone (truncated): what it holds in flight is released; its late acknowledgements move nothing,
        and its reads still in the pipeline are not handed on."""
        self._retired.add(fid)
        inflight = self._inflight.pop(fid, None)
        self._emitted.pop(fid, None)
        self._alerts_inflight.pop(fid, None)
        self._resume.pop(fid, None)
        if inflight:
            self.budget.release(sum(n for _, n in inflight))

    def emitted_offsets(self, offsets: dict[int, int]) -> dict[int, int]:
        """Per file: where a sink added now starts (what was handed on already is not its to acknowledge)."""
        return {fid: max(self._emitted.get(fid, 0), offset) for fid, offset in offsets.items()}

    async def detection_snapshot(self, detector: DetectionEngine | None) -> tuple[bytes | None, dict[int, tuple[int, list[bytes]]]]:
        """Between two chunks: the detection state, and per file where detection is and its alerts not yet
        acknowledged (those saved from before a restart and not yet re-delivered included)."""
        async with self._gate:
            await self.drain()
            last = self._last_state
            if last is not None and last[0] == self._changes and last[1] is detector:
                state = last[2]  # an idle agent does not serialize its windows every flush interval
            else:
                state = detector.snapshot() if detector is not None else None
                self._last_state = (self._changes, detector, state)
            positions: dict[int, tuple[int, list[bytes]]] = {}
            for fid in set(self._emitted) | set(self._resume):
                detect_from, pending = self._resume.get(fid, (0, []))
                unacked = [a for _, chunk in self._alerts_inflight.get(fid, ()) for a in chunk]
                positions[fid] = (max(self._emitted.get(fid, 0), detect_from), pending + unacked)
            return state, positions

    async def swap_transform(self, transform: Transform | None, old_detector: DetectionEngine | None, pool: ShapePool | None = None) -> DetectionEngine | None:
        """A reload's transform (and the workers shaping with it), taken between two chunks; detection's windows and
        dedup carry over to the new rules (state of rules that changed or went is dropped, with a log line).
        Returns the new detector."""
        async with self._gate:
            await self.drain()
            old_pool, self.pool = self.pool, pool
            if old_pool is not None and old_pool is not pool:
                await asyncio.to_thread(old_pool.close)
            self._changes += 1
            new_detector = transform.detector if transform is not None else None
            if new_detector is not None and old_detector is not None and new_detector is not old_detector:
                try:
                    for note in new_detector.restore(old_detector.snapshot()):
                        log.warning("detection state after reload: %s", note)
                except ValueError as exc:
                    log.warning("detection state could not be carried over a reload; windows start empty", extra={"error": str(exc)})
            self.processor.transform = transform
            return new_detector

    # -- room --------------------------------------------------------------------------------------------------
    def _update_room(self) -> None:
        if not self.deadletter.writable:
            self.room.clear()
            if self._retrying is None:
                self._retrying = asyncio.get_running_loop().create_task(self._write_held_deadletters(), name="deadletter-retry")
        elif self.budget.has_room():
            self.room.set()
        elif self.room.is_set():  # memory used up: the reader waits (backpressure, counted)
            self.budget.waits += 1
            self.room.clear()

    async def _write_held_deadletters(self) -> None:
        """Retry the dead-letter writes the state directory refused, with backoff, until they are written."""
        delay = 0.25
        try:
            while not await asyncio.to_thread(self.deadletter.flush):
                await asyncio.sleep(delay)
                delay = min(DEADLETTER_RETRY_MAX_S, delay * 2)
        finally:
            self._retrying = None
        self._update_room()

    async def aclose(self) -> None:
        await self.abandon()
        if self.pool is not None:
            await asyncio.to_thread(self.pool.close)
        self._thread.shutdown(wait=False)
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
