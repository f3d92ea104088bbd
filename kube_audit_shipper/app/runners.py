"""The delivery runners of one kind: the event sinks, or the alert targets.

A group builds a SinkRunner per configured sink (with its spool), starts it under the pipeline's supervisor,
hands it every chunk of its kind, and takes part in reloads: a removed sink finishes what it has and leaves
the ledger; a changed one is replaced without two runners ever writing the sink (the old runner delivers
what it has and closes its sink and spool first; chunks read meanwhile wait, in order, for the new one); an
added one starts with the chunks read from then on. A replaced runner that cannot deliver within
shutdown_timeout_s (its sink is failing, often why the config changed) makes the pipeline restart from its
checkpoint instead, which reads exactly what was not acknowledged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig
from kube_audit_shipper.delivery.contract import Sink
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.delivery.spool import Spool
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.obs.metrics import Metrics

log = logging.getLogger(__name__)

Build = Callable[[Any], Sink]  # sink config -> sink (through its registry, with the pipeline's SinkContext)


class RunnerGroup:
    def __init__(
        self,
        kind: str,
        build: Build,
        *,
        batch_of: Callable[[Any], BatchConfig],
        state_dir: str,
        ledger: Ledger,
        deadletter: DeadLetterStore,
        metrics: Metrics,
        path_of: Callable[[int], str | None],
        start: Callable[[str, Any], asyncio.Task[Any]],
    ) -> None:
        self.kind = kind  # "sink" or "alert target", for logs
        self._build = build
        self._batch_of = batch_of
        self._state_dir = state_dir
        self._ledger = ledger
        self._deadletter = deadletter
        self._metrics = metrics
        self._path_of = path_of
        self._start = start  # (task name, coroutine) -> task, supervised by the pipeline
        self.runners: list[SinkRunner] = []
        self.tasks: dict[SinkRunner, asyncio.Task[Any]] = {}
        self.held: dict[str, asyncio.Queue[Chunk]] = {}  # sink name -> chunks waiting for its replacement

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runners] + list(self.held)

    def add(self, cfg: Any, sink: Sink | None = None) -> SinkRunner:
        """A runner for `cfg` (or for `sink`, already built: tests pass their own), with its spool; not started."""
        runner = SinkRunner(
            sink if sink is not None else self._build(cfg),
            batch=self._batch_of(cfg),
            retry=cfg.retry,
            concurrency=cfg.concurrency,
            ledger=self._ledger,
            deadletter=self._deadletter,
            metrics=self._metrics,
            path_of=self._path_of,
        )
        if cfg.spool is not None:
            runner.spool = Spool(Path(self._state_dir) / "spool" / runner.name, max_bytes=cfg.spool.max_bytes, segment_bytes=cfg.spool.segment_bytes)
            if runner.spool.unacked_count:
                log.info("spool holds batches from a previous run; sending them first", extra={"sink": runner.name, "batches": runner.spool.unacked_count})
        self.runners.append(runner)
        return runner

    def start(self, runner: SinkRunner) -> None:
        self.tasks[runner] = self._start(f"{self.kind}:{runner.name}", runner.run())

    def put(self, chunk: Chunk) -> None:
        for runner in self.runners:
            runner.queue.put_nowait(chunk)
        for held in self.held.values():
            held.put_nowait(chunk)

    # -- reloads ---------------------------------------------------------------------------------------------
    async def retire(self, runner: SinkRunner, timeout_s: float) -> bool:
        """Stop a runner a reload replaced or removed: it batches what it has queued, delivers its batches in
        flight (its acknowledgements still count), closes its spool and its sink. False when it could not
        deliver everything in time."""
        self.runners.remove(runner)
        deadline = time.monotonic() + timeout_s
        await runner.stop()
        task = self.tasks.pop(runner, None)
        pending: set[asyncio.Task[Any]] = set()
        if task is not None:
            _, pending = await asyncio.wait([task], timeout=max(0.0, deadline - time.monotonic()))
            for t in pending:  # its batcher waits for a slot a failing request holds
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        try:
            abandoned = await runner.finish(max(0.0, deadline - time.monotonic()))
        finally:
            await runner.aclose(deadline)
        return not (abandoned or pending)

    def hold(self, name: str) -> None:
        """Chunks for `name` wait from now on, in order, for the runner that replaces it."""
        self.held[name] = asyncio.Queue()

    def replace(self, cfg: Any) -> None:
        """The old runner of cfg.name closed its sink and spool: build the new sink, hand it the chunks read
        meanwhile (no await in between, so none is handed past them) and start it."""
        fresh = self.add(cfg)
        held = self.held.pop(cfg.name)
        while not held.empty():
            fresh.queue.put_nowait(held.get_nowait())
        self.start(fresh)

    # -- stop ------------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        for runner in self.runners:
            await runner.stop()

    async def aclose(self, left: float | None) -> None:
        """Close every sink; one that has work of its own (the S3 uploads of what it staged) finishes it within
        `left` seconds (None: no bound)."""
        deadline = None if left is None else time.monotonic() + left
        for runner in self.runners:
            try:
                await runner.aclose(deadline)
            except Exception:
                log.exception("closing a sink failed", extra={"sink": runner.name})
