"""One pipeline, built from a Config, run, and stopped in data order.

    Tailer ──Lines──▶ Stage (check, detect, transform; dead letters) ──events──▶ sink runners ──┐
      ▲  ▲                 │                                         ──alerts──▶ alert targets ─┤ acks
      │  └── room ◀────────┘ memory budget, dead letters held                                   ▼
      └──── where to resume ◀── FileRecords (checkpoint/files) ◀── advanced ◀──────────── Ledger
    checkpoint writer: every flush interval, dead letters made durable, then the records (and the
    detection state taken at the same moment) written atomically

Stop (SIGTERM/SIGINT, or the end of `--once`): stop reading → every runner flushes and waits for its
batches (bounded by shutdown_timeout_s from the stop request; `--once` waits for everything until one
comes; a second request ends every wait) → sinks close → dead letters made durable → final checkpoint.
Whatever was not acknowledged is not checkpointed, so it is read again at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kube_audit_shipper.app.build import build_detection, build_pool, cluster_of, load_transform, lock_state_dir
from kube_audit_shipper.app.runners import RunnerGroup
from kube_audit_shipper.app.tasks import Supervisor
from kube_audit_shipper.checkpoint.files import FileRecord, FileRecords
from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.checkpoint.store import CheckpointStore
from kube_audit_shipper.config import Config
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK
from kube_audit_shipper.model import Chunk, alert_decoder
from kube_audit_shipper.obs.metrics import Metrics, Snapshot
from kube_audit_shipper.obs.server import ObsServer
from kube_audit_shipper.obs.state_writes import StateWrites
from kube_audit_shipper.process.budget import ByteBudget
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.lines import LineProcessor
from kube_audit_shipper.process.stage import Stage
from kube_audit_shipper.sinks.alert_registry import build_alert_target
from kube_audit_shipper.sinks.registry import build_sink, sink_context
from kube_audit_shipper.source.tailer import Tailer
from kube_audit_shipper.stopping import StopClock

log = logging.getLogger(__name__)

#: without an alert target, this many alerts of each rule a minute are logged one by one; the rest are counted
ALERT_LOGS_PER_RULE = 10

CHECKPOINT_RETRY_MAX_S = 30.0  # backoff cap between checkpoint writes the state directory refuses
BLOCKED_NOT_READY_S = 300.0  # a sink blocked this long makes the agent not ready


class Agent:
    def __init__(
        self,
        cfg: Config,
        *,
        metrics: Metrics | None = None,
        sinks: list[Any] | None = None,
        notifier: Any = None,
        scrub: Callable[[str], str] | None = None,
        resume: tuple[list[FileRecord], bytes | None] | None = None,
    ) -> None:
        self.cfg = cfg
        # the last state of the pipeline this one replaces in the same process (a reload that restarts it): used
        # instead of checkpoints.json, which may be older when the state directory refused the final write
        self._resume = resume
        self.last_state: tuple[list[FileRecord], bytes | None] | None = None  # the newest checkpoint taken with its dead letters durable
        self._last_state_generation = 0
        self._alert_log: dict[str, tuple[float, int, int]] = {}  # rule -> (minute started, logged, not logged)
        self._last_state_lock = threading.Lock()
        self.scrub = scrub  # masks config secrets (and secret-looking text) in what the agent stores, e.g. dead-letter reasons
        self.state_writes = StateWrites()
        self.metrics = metrics or Metrics()
        self.notifier = notifier  # kube_audit_shipper.systemd.Notifier (READY, WATCHDOG, STATUS), or None
        self._sinks_override = sinks  # tests: sink objects to use instead of building them from the config
        self.stop_event = asyncio.Event()
        self.force_stop = asyncio.Event()  # a second stop request: stop waiting for anything
        self.ready = False
        self.restart_with: Config | None = None  # set when a reload needs a new pipeline after this one stops
        self.store = CheckpointStore(cfg.state_dir)
        self.budget = ByteBudget(cfg.memory_limit_bytes)
        self.tailer: Tailer | None = None
        self.stage: Stage | None = None
        self.records: FileRecords | None = None
        self.ledger: Ledger | None = None
        self.processor: LineProcessor | None = None
        self.detector: DetectionEngine | None = None
        self.deadletter: DeadLetterStore | None = None
        self.server: ObsServer | None = None
        self._supervisor: Supervisor | None = None
        self.sinks: RunnerGroup
        self.alert_targets: RunnerGroup
        self._last_loop_tick = time.monotonic()
        self._snapshots = 0
        self._closed = False  # the sinks were closed by a clean stop

    @property
    def supervisor(self) -> Supervisor:
        assert self._supervisor is not None
        return self._supervisor

    @property
    def runners(self) -> list[SinkRunner]:
        """Every runner: event sinks, then alert targets."""
        return self.sinks.runners + self.alert_targets.runners

    # -- wiring ----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        saved = self.store.load() if self._resume is None else self._resume[0]
        saved_detection = self.store.detection if self._resume is None else self._resume[1]
        self.deadletter = DeadLetterStore(
            cfg.state_dir, max_bytes=cfg.deadletter.max_bytes, max_event_bytes=cfg.deadletter.max_event_bytes, state_writes=self.state_writes, scrub=self.scrub
        )
        self.detector = build_detection(cfg)
        if self.detector is not None and saved_detection is not None:
            try:
                for note in self.detector.restore(saved_detection):
                    log.warning("detection state: %s", note)
            except ValueError as exc:
                log.warning("the saved detection state cannot be restored; detection starts with empty windows", extra={"error": str(exc)})
        transform = load_transform(cfg, self.detector)
        self.processor = LineProcessor(transform, node=cfg.node, cluster=cluster_of(cfg))
        sink_objects = self._sinks_override or [None] * len(cfg.sinks)
        self.ledger = Ledger([s.name for s in cfg.sinks] + [t.name for t in cfg.alerts], on_advance=self._on_advance)
        self.records = FileRecords(
            saved, ledger=self.ledger, forget_after_s=cfg.checkpoint.forget_after_s, lost_grace_s=2 * cfg.input.rescan_interval_ms / 1000
        )
        self.sinks = self._group(
            "sink", lambda s: build_sink(s, sink_context(node=self.cfg.node, state_dir=self.cfg.state_dir, input_paths=self.cfg.input.paths))
        )
        self.alert_targets = self._group(
            "alert target", lambda t: build_alert_target(t, sink_context(node=self.cfg.node, state_dir=self.cfg.state_dir, input_paths=self.cfg.input.paths))
        )
        for scfg, sink in zip(cfg.sinks, sink_objects, strict=True):
            self.sinks.add(scfg, sink)
        for tcfg in cfg.alerts:
            self.alert_targets.add(tcfg)
        self.stage = Stage(
            self.processor,
            deadletter=self.deadletter,
            budget=self.budget,
            ledger=self.ledger,
            handoff=self._handoff,
            event_sinks=lambda: self.sinks.names,
            alert_targets=lambda: self.alert_targets.names,
            detection_resume=self.records.detection_resume,
            pool=build_pool(cfg, transform),
            pool_min_bytes=cfg.processing.worker_min_bytes,
        )
        self.tailer = Tailer(cfg.input, index=self.records, output=self.stage)
        self.metrics.bind(self.metrics_state)

    def _group(self, kind: str, build: Callable[[Any], Any]) -> RunnerGroup:
        assert self.ledger is not None and self.deadletter is not None
        return RunnerGroup(
            kind,
            build,
            batch_of=self.cfg.batch_for,
            state_dir=self.cfg.state_dir,
            ledger=self.ledger,
            deadletter=self.deadletter,
            metrics=self.metrics,
            path_of=self._path_of,
            start=lambda name, coro: self.supervisor.start(name, coro, ends=True),  # a runner ends when stopped or retired
        )

    def _path_of(self, fid: int) -> str | None:
        tf = self.tailer.files.get(fid) if self.tailer is not None else None
        return tf.path if tf is not None else None

    def _on_advance(self, fid: int, offset: int) -> None:
        assert self.records is not None and self.stage is not None
        self.records.advanced(fid, offset)
        self.stage.acked(fid, offset)

    async def _handoff(self, events: Chunk, alerts: Chunk) -> None:
        if events.records:
            self.sinks.put(events)
        if alerts.records:
            if self.alert_targets.names:
                self.alert_targets.put(alerts)
            else:
                self._log_alerts(alerts)

    def _log_alerts(self, alerts: Chunk) -> None:
        """No alert target configured: the operator still hears of alerts, in the log: the first ALERT_LOGS_PER_RULE
        of each rule a minute, then how many more (they are all counted in kube_audit_shipper_alerts_raised_total).
        Logging each one of a backlog that raises thousands would cost more than detecting them."""
        now = time.monotonic()
        for record in alerts.records:
            alert = alert_decoder.decode(record)
            start, logged, more = self._alert_log.get(alert.rule, (now, 0, 0))
            if now - start >= 60.0:
                _summarise_alerts(alert.rule, more)
                start, logged, more = now, 0, 0
            if logged < ALERT_LOGS_PER_RULE:
                logged += 1
                log.warning("alert: %s", alert.summary, extra={"rule": alert.rule, "severity": alert.severity, "audit_ids": alert.audit_ids})
            else:
                more += 1
            self._alert_log[alert.rule] = (start, logged, more)

    def _flush_alert_log(self) -> None:
        """At stop: how many alerts of each rule were not logged one by one since its last summary."""
        for rule, (_, _, more) in self._alert_log.items():
            _summarise_alerts(rule, more)
        self._alert_log.clear()

    def emitted_offsets(self) -> dict[int, int]:
        """Per open file, the end of what has been handed on (where a sink added by a reload starts)."""
        assert self.records is not None and self.stage is not None
        return self.stage.emitted_offsets(self.records.offsets())

    # -- state for metrics and status ------------------------------------------------------------------------
    def metrics_state(self) -> Snapshot:
        assert self.processor is not None and self.tailer is not None and self.deadletter is not None and self.records is not None
        counts = self.processor.counts()
        transform = self.processor.transform
        drops = dict(transform.drops) if transform is not None else {}
        stage_drops = dict(transform.stage_drops) if transform is not None else {}
        dropped = {("policy_level_none", rule): n - stage_drops.get(rule, 0) for rule, n in drops.items()}
        dropped.update({("policy_omitted_stage", rule): n for rule, n in stage_drops.items()})
        runners = self.runners
        detector = self.detector
        return Snapshot(
            events_read=counts.get("read", 0),
            bytes_read=self.tailer.bytes_read,
            dropped=dropped,
            deadlettered={k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("deadletter:")},
            shipped={r.name: (r.shipped_events, r.shipped_bytes) for r in runners},
            bytes_behind=self.records.bytes_behind(),
            checkpoint_writes=self.store.writes,
            truncations=self.tailer.truncations,
            read_errors=dict(self.tailer.read_errors),
            lost_files=self.records.lost_files,
            lost_bytes=self.records.lost_bytes,
            backpressure_waits=self.budget.waits,
            deadletter_evicted=self.deadletter.evicted_records,
            inflight_bytes=self.budget.in_use,
            memory_limit=self.budget.limit,
            files_tracked=len(self.tailer.files),
            files_at_risk=len(self.tailer.at_risk()),
            sink_state={r.name: r.state for r in runners},
            sink_blocked_s={r.name: r.health.blocked_for_s() for r in runners},
            sink_rejected={r.name: r.rejected_events for r in runners},
            spool_bytes={r.name: r.spool.bytes_used for r in runners if r.spool is not None},
            spooled_batches={r.name: r.spooled_batches for r in runners if r.spool is not None},
            spool_full_waits={r.name: r.spool_full_waits for r in runners if r.spool is not None},
            sink_families=[r.sink.metric_families for r in runners],
            checkpoint_age_s=time.time() - self.store.last_write if self.store.last_write else 0.0,
            state_write_errors=dict(self.state_writes.errors),
            bodies_withheld=getattr(transform, "withheld_bodies", 0),
            alerts_raised=dict(detector.stats.alerts) if detector is not None else {},
            alert_targets=tuple(r.name for r in self.alert_targets.runners),
            detection_seconds=detector.stats.eval_seconds if detector is not None else 0.0,
            detection_errors=dict(detector.stats.errors) if detector is not None else {},
        )

    def healthy(self) -> bool:
        return time.monotonic() - self._last_loop_tick < 30

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what is read, shipped, behind, and any sink trouble."""
        s = self.metrics_state()
        shipped = ", ".join(f"{k} {v[0]}" for k, v in s.shipped.items())
        trouble = [f"{k} {v}" for k, v in s.sink_state.items() if v != "ok"]
        return f"read {s.events_read}, shipped {shipped}, {sum(s.bytes_behind.values())} bytes behind" + (f"; sinks: {', '.join(trouble)}" if trouble else "")

    def readiness(self) -> bool:
        """Ready: the pipeline runs, no background task died, the state directory takes writes, every input is
        readable, and no sink has been blocked longer than 5 minutes."""
        if not self.ready or self.state_writes.failing() or (self.tailer is not None and self.tailer.unreadable):
            return False
        if self._supervisor is not None and self._supervisor.failed:
            return False
        return all(r.health.blocked_for_s() < BLOCKED_NOT_READY_S and r.sink.blocked_for_s() < BLOCKED_NOT_READY_S for r in self.runners)

    # -- checkpoints -----------------------------------------------------------------------------------------
    async def write_checkpoint(self) -> None:
        """The records and the detection state, taken at one moment between two chunks, written atomically after
        the dead letters they move past are durable. Raises OSError (counted, logged) when the disk refuses."""
        assert self.records is not None and self.deadletter is not None and self.stage is not None
        detection, positions = await self.stage.detection_snapshot(self.detector)
        snapshot = self.records.snapshot(positions)
        self._snapshots += 1
        generation = self._snapshots
        deadletter = self.deadletter

        def _write() -> None:
            deadletter.sync()  # records for lines the checkpoint moves past are durable first; raises if not
            with self._last_state_lock:  # what a pipeline restarted in this process starts from (the newest)
                if generation > self._last_state_generation:
                    self._last_state_generation, self.last_state = generation, (snapshot, detection)
            try:
                self.store.save(snapshot, generation, detection)
            except OSError as exc:
                self.state_writes.failed("checkpoint", self.store.path, exc)
                raise
            self.state_writes.ok("checkpoint")

        await asyncio.to_thread(_write)

    async def _first_checkpoint(self) -> bool:
        """Write the checkpoint of the first scan before anything is read, retrying with backoff while the
        state directory refuses it. False if a stop came first (nothing was read)."""
        delay = self.cfg.checkpoint.flush_interval_ms / 1000
        while True:
            try:
                await self.write_checkpoint()
                return True
            except OSError:  # counted and logged by state_writes
                pass
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop_event.wait()
                return False
            delay = min(CHECKPOINT_RETRY_MAX_S, delay * 2)

    async def _checkpoint_loop(self) -> None:
        """Write checkpoints every flush interval. A write the state directory refuses is retried with
        backoff (up to 30 s apart); the last durable checkpoint stays as it was meanwhile."""
        interval = self.cfg.checkpoint.flush_interval_ms / 1000
        delay = interval
        last_status = 0.0
        while True:
            await asyncio.sleep(delay)
            self._last_loop_tick = time.monotonic()
            try:
                await self.write_checkpoint()
                delay = interval
            except OSError:  # counted and logged by state_writes
                delay = min(CHECKPOINT_RETRY_MAX_S, max(interval, delay * 2))
            if self.notifier is not None:
                self.notifier.watchdog()  # only from here: a stuck loop stops the pings and systemd restarts us
                if self._last_loop_tick - last_status >= 5:
                    last_status = self._last_loop_tick
                    self.notifier.status(self.status_line())

    async def _sink_ticks(self) -> None:
        """Time-based work of sinks (a file sink finishing a file that is old enough), every 5 seconds."""
        while True:
            await asyncio.sleep(5)
            for r in self.runners:
                await r.sink.tick(time.monotonic())

    # -- lifecycle -------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """SIGTERM/SIGINT: stop reading and finish in-flight batches within shutdown_timeout_s (also in
        `run --once`, which otherwise waits for everything). A second request stops waiting at once; what
        was not delivered stays unacknowledged (read again at the next start) or goes to the spool."""
        if self.stop_event.is_set():
            if not self.force_stop.is_set():
                log.warning("second stop signal: not waiting any longer; batches not delivered are read again at the next start")
                self.force_stop.set()
            return
        log.info("stopping: no more reads; finishing in-flight batches", extra={"timeout_s": self.cfg.shutdown_timeout_s})
        self.stop_event.set()

    async def run(self, *, once: bool = False, on_ready: Callable[[Agent], None] | None = None) -> int:
        lock_fd = lock_state_dir(Path(self.cfg.state_dir))
        self._supervisor = Supervisor()
        started_sinks = built = False
        try:
            self._build()
            built = True
            assert self.tailer is not None and self.stage is not None
            addr = self.cfg.metrics.address()
            if addr is not None:
                self.server = ObsServer(addr[0], addr[1], metrics=self.metrics.render, healthy=self.healthy, ready=self.readiness)
                await self.server.start()
            # the first scan decides first-start offsets (start_at, backfill_rotated): make them durable
            # before anything is read, so a crash now cannot make the next start a "first start" again
            self.tailer.scan()
            if not await self._first_checkpoint():  # stopped while the state directory refused it: nothing was read
                return self._once_result(once, complete=False)
            for group in (self.sinks, self.alert_targets):
                for r in list(group.runners):
                    group.start(r)
            started_sinks = True
            self.supervisor.start("checkpoints", self._checkpoint_loop())
            self.supervisor.start("sink-ticks", self._sink_ticks())
            tail_task = self.supervisor.start("tailer", self.tailer.run(self.stop_event, once=once), ends=True)
            self.ready = True
            if self.notifier is not None:
                self.notifier.ready()
                self.notifier.status(self.status_line())
            if on_ready is not None:
                on_ready(self)
            first: list[asyncio.Future[Any]] = [tail_task, self.supervisor.failure]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if self.supervisor.failure.done():
                raise self.supervisor.failure.result()
            return await self._stop(once)
        finally:
            await self.supervisor.cancel()
            if self.server is not None:
                await self.server.aclose()
            if started_sinks and not self._closed:  # run failed: still close clients and background tasks of the sinks
                await self.sinks.aclose(0.0)
                await self.alert_targets.aclose(0.0)
            elif built and not started_sinks:  # stopped during the first checkpoint: release what the runners hold
                for runner in self.runners:  # (their spools' locks: a pipeline restarted in this process opens them)
                    await runner.finish(0.0)
                await self.sinks.aclose(0.0)
                await self.alert_targets.aclose(0.0)
            if self.stage is not None:
                await self.stage.aclose()
            if self.tailer is not None:
                self.tailer.close()
            if self.deadletter is not None:
                self.deadletter.close()
            os.close(lock_fd)

    async def _stop(self, once: bool) -> int:
        """In data order: no more reads, runners flushed and their batches delivered (bounded), sinks closed,
        the final checkpoint."""
        assert self.stage is not None
        # every read taken is handed on to the runners (bounded as the rest of the stop; what is not is read again)
        if await StopClock(self.stop_event, self.force_stop, self.cfg.shutdown_timeout_s, drain=once and not self.stop_event.is_set()).wait(
            {self.stage.drain()}
        ):
            await self.stage.abandon()
        self._flush_alert_log()
        with contextlib.suppress(OSError):  # counted and logged; the final write below tries again
            await self.write_checkpoint()  # whatever is acknowledged so far
        await self.sinks.stop()
        await self.alert_targets.stop()
        # --once waits for every sink, spools included, until a stop is requested; then (and for `run`)
        # the stop is bounded by shutdown_timeout_s, and a second request ends every wait
        clock = StopClock(self.stop_event, self.force_stop, self.cfg.shutdown_timeout_s, drain=once and not self.stop_event.is_set())
        retiring = self.supervisor.running("retire:")
        if retiring:
            await clock.wait(retiring)
        tasks = {**self.sinks.tasks, **self.alert_targets.tasks}
        pending = await clock.wait(set(tasks.values()))
        for t in pending:  # a batcher stuck handing off (spool full, no free slot)
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        abandoned = 0
        for r in self.runners:
            abandoned += await self._finish(r, clock)
        if abandoned or pending:
            log.warning(
                "stopping: batches not delivered in time are left unacknowledged; they are read again at the next start",
                extra={"batches": abandoned, "sinks": [r.name for r, t in tasks.items() if t in pending]},
            )
        await self.sinks.aclose(clock.left())
        await self.alert_targets.aclose(clock.left())
        self._closed = True
        try:
            await self.write_checkpoint()
        except OSError:
            log.error("the final checkpoint could not be written: what was acknowledged since the last one is read and sent again at the next start")
            return EXIT_FAILED
        return self._once_result(once, complete=not (abandoned or pending or self.stop_event.is_set()))

    async def _finish(self, runner: SinkRunner, clock: StopClock) -> int:
        """A runner's batches in flight (and with --once its spool) delivered, within what the clock allows: a
        stop request bounds a drain, a second one ends the wait; past it they are spooled or abandoned (read
        again at the next start). Returns the batches abandoned."""
        while True:
            draining = clock.draining
            task = asyncio.get_running_loop().create_task(runner.finish(None, drain_spool=draining))
            if not await clock.wait({task}):
                return task.result()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not (draining and clock.left() != 0.0):
                return await runner.finish(0.0)  # time is up
            # a stop was requested while draining: what is left gets the bounded stop

    def _once_result(self, once: bool, *, complete: bool) -> int:
        """`run --once` exits EXIT_INCOMPLETE when it did not ship everything the inputs held: stopped by a
        signal, batches left undelivered, or an input that could not be read."""
        if not once:
            return EXIT_OK
        assert self.tailer is not None
        if self.tailer.ever_unreadable:
            log.error("run --once: some inputs could not be read; their events were not shipped", extra={"paths": sorted(self.tailer.unreadable)})
            return EXIT_INCOMPLETE
        if not complete:
            log.error("run --once: stopped before everything read was shipped; the rest is read again at the next start")
            return EXIT_INCOMPLETE
        return EXIT_OK


def _summarise_alerts(rule: str, more: int) -> None:
    if more:
        log.warning("alerts not logged one by one (configure an alert target to receive them all)", extra={"rule": rule, "alerts": more})
