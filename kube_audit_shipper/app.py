"""Build the pipeline from a Config, run it, stop it in data order.

    tailer ──chunks──▶ SinkRunner (one per sink: batch → encode → send/retry) ──acks──▶ Ledger
       ▲                                                                          │
       └──────────── budget release, entry offsets ◀──────── on_advance ◀─────────┘
    checkpoint writer: every flush interval, dead letters fsynced, then checkpoints written atomically

Stop (SIGTERM/SIGINT, or the end of `--once`): stop reading → every runner flushes and waits for its
batches (bounded by shutdown_timeout_s, unbounded with --once) → sinks close (the file sink finishes
its file) → dead letters fsynced → final checkpoint. Whatever was not acknowledged is not
checkpointed, so it is read again at the next start. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.checkpoint.store import CheckpointStore
from kube_audit_shipper.config import Config
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.budget import ByteBudget
from kube_audit_shipper.delivery.config import RetryConfig
from kube_audit_shipper.delivery.engine import SinkRunner
from kube_audit_shipper.delivery.spool import Spool
from kube_audit_shipper.durable import ensure_dir, lock_exclusive
from kube_audit_shipper.errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, StateError
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.obs.metrics import Metrics
from kube_audit_shipper.obs.server import ObsServer
from kube_audit_shipper.obs.state_writes import StateWrites, describe
from kube_audit_shipper.process.decode import LineProcessor, Transform
from kube_audit_shipper.process.detect.build import build_engine
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.sinks.registry import build_sink
from kube_audit_shipper.source.tailer import Tailer
from kube_audit_shipper.stopping import StopClock

log = logging.getLogger(__name__)

CHECKPOINT_RETRY_MAX_S = 30.0  # backoff cap between checkpoint writes the state directory refuses


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def lock_state_dir(state_dir: Path) -> int:
    """Hold an exclusive lock on state_dir for the life of the process: one agent per state. A state_dir
    that cannot be created or written is a StateError (one clear line, exit code 2), not a traceback."""
    try:
        ensure_dir(state_dir, 0o700)
        return lock_exclusive(state_dir / "lock")
    except BlockingIOError:
        raise StateError(f"{state_dir} is in use by another kube-audit-shipper process (lock held on {state_dir / 'lock'})") from None
    except OSError as exc:
        where = exc.filename or state_dir
        raise StateError(f"state_dir {state_dir} cannot be used: {where}: {describe(exc)}; the agent needs a writable state directory") from None


def build_transform(cfg: Config) -> Transform | None:
    """Policy trimming, redaction and enrichment; None when none is configured (lines ship unchanged).

    Raises PolicyError listing every problem of an invalid policy file; its warnings are logged.
    """
    from kube_audit_shipper.process.policy.load import load_policy
    from kube_audit_shipper.process.transform import build_transform as _build

    policy = None
    if cfg.policy.file:
        policy, warnings = load_policy(cfg.policy.file)
        for w in warnings:
            log.warning("audit policy: %s", w, extra={"policy": cfg.policy.file})
        log.info("audit policy loaded", extra={"policy": cfg.policy.file, "rules": len(policy.policy.rules)})
    return _build(policy, cfg.enrich, node_name=cfg.node, decision_cache_size=cfg.policy.decision_cache_size)


def build_detection(cfg: Config) -> DetectionEngine | None:
    """The detection engine of the config's `detect:` section, or None when detection is off.

    Raises RulesError (a ConfigError) listing every problem of the rule files with its file and key path."""
    if not cfg.detect.enabled:
        return None
    derived = cfg.enrich.derived
    engine, _ = build_engine(cfg.detect, shared_admin_users=derived.shared_admin_users, system_user_prefixes=derived.system_user_prefixes)
    return engine


class Agent:
    def __init__(
        self, cfg: Config, *, metrics: Metrics | None = None, sinks: list[Any] | None = None, notifier: Any = None, scrub: Callable[[str], str] | None = None
    ) -> None:
        self.cfg = cfg
        self.scrub = scrub  # masks config secrets (and secret-looking text) in what the agent stores, e.g. dead-letter reasons
        self.state_writes = StateWrites()
        self.metrics = metrics or Metrics()
        self.notifier = notifier  # kube_audit_shipper.systemd.Notifier (READY, WATCHDOG, STATUS), or None
        self._sinks_override = sinks
        self.stop_event = asyncio.Event()
        self.force_stop = asyncio.Event()  # a second stop request: stop waiting for anything
        self.ready = False
        self.started = time.monotonic()
        self.tailer: Tailer | None = None
        self.runners: list[SinkRunner] = []
        self.ledger: Ledger | None = None
        self._runner_tasks: dict[SinkRunner, asyncio.Task[None]] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # runners replaced or removed by a reload, finishing
        self._held: dict[str, asyncio.Queue[Chunk]] = {}  # sink name -> chunks waiting for its replacement runner
        self._failure: asyncio.Future[BaseException] | None = None
        self.restart_with: Config | None = None  # set when a reload needs a new pipeline after this one stops
        self.processor: LineProcessor | None = None
        self.deadletter: DeadLetterStore | None = None
        self.store = CheckpointStore(cfg.state_dir)
        self.budget = ByteBudget(cfg.memory_limit_bytes)
        self._last_loop_tick = time.monotonic()
        self._snapshots = 0
        self.server: ObsServer | None = None
        self._sinks_closed = False

    # -- wiring ----------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        entries = self.store.load()
        self.deadletter = DeadLetterStore(
            cfg.state_dir,
            max_bytes=cfg.deadletter.max_bytes,
            max_event_bytes=cfg.deadletter.max_event_bytes,
            state_writes=self.state_writes,
            scrub=self.scrub,
        )
        self.processor = LineProcessor(build_transform(cfg), self.deadletter)
        sinks = (
            self._sinks_override
            if self._sinks_override is not None
            else [build_sink(s, node=cfg.node, state_dir=cfg.state_dir, input_paths=cfg.input.paths) for s in cfg.sinks]
        )
        by_name = {s.name: s for s in cfg.sinks}
        ledger = Ledger([s.name for s in sinks], on_advance=self._on_advance)
        self.ledger = ledger
        for sink in sinks:
            self.runners.append(self._make_runner(sink, by_name.get(sink.name), cfg, open_spool=True))
        self.tailer = Tailer(
            cfg.input,
            entries=entries,
            processor=self.processor,
            ledger=ledger,
            budget=self.budget,
            emit=self._emit,
            forget_after_s=cfg.checkpoint.forget_after_s,
        )
        self.metrics.bind(self.metrics_state)

    def _start_runner(self, runner: SinkRunner) -> None:
        task = asyncio.get_running_loop().create_task(runner.run(), name=f"sink:{runner.name}")
        self._runner_tasks[runner] = task

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None and self._failure is not None and not self._failure.done():
                self._failure.set_result(t.exception())  # type: ignore[arg-type]

        task.add_done_callback(done)

    async def _retire(self, runner: SinkRunner, *, then: Callable[[], Any] | None = None, replaced: bool = False) -> None:
        """Stop a runner a reload replaced or removed: it batches what it has queued, delivers its
        batches in flight (its acknowledgements still count), closes its spool and its sink. A replaced
        runner that cannot deliver everything within shutdown_timeout_s (its sink is failing, which is
        often why the config changed) would leave ranges nobody acknowledges: then the whole pipeline
        restarts from its checkpoint with the new config instead, which re-reads exactly those."""
        try:
            deadline = time.monotonic() + self.cfg.shutdown_timeout_s
            await runner.stop()
            task = self._runner_tasks.pop(runner, None)
            _, pending = await asyncio.wait([task], timeout=_left(deadline)) if task is not None else (set(), set())
            for t in pending:  # its batcher waits for a slot a failing request holds
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
            abandoned = await runner.finish(_left(deadline))
            await runner.sink.aclose()
            if replaced and (abandoned or pending):
                log.warning(
                    "a sink changed by a reload could not deliver its batches in time; the pipeline restarts from its checkpoint",
                    extra={"sink": runner.name, "batches": abandoned},
                )
                self.restart_with = self.cfg
                self.stop_event.set()
                return
        except Exception:
            log.exception("stopping a sink replaced by a reload failed", extra={"sink": runner.name})
        if then is not None:
            then()

    def _spawn_retire(self, runner: SinkRunner, then: Callable[[], Any] | None = None, *, replaced: bool = False) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._retire(runner, then=then, replaced=replaced), name=f"retire:{runner.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    async def apply(self, new: Config, transform: Transform | None) -> bool:
        """Take a reloaded config while running. Unchanged sinks and the reader keep running.
        False when the change needs a new pipeline (state_dir, metrics, checkpoint, dead-letter,
        node name): the caller restarts it from its checkpoint.

        A changed sink is replaced without two runners ever writing it: the old runner delivers what it
        has and closes its sink, chunks read meanwhile wait in order, and only then is the new sink built
        (a file sink's recovery, a spool's lock) and given them. Returns once every changed or removed
        sink is retired, so reloads are serialized (the caller coalesces the signals that come meanwhile)."""
        old = self.cfg
        keep = ("state_dir", "node_name", "metrics", "checkpoint", "deadletter")
        if any(getattr(old, k) != getattr(new, k) for k in keep) or self.tailer is None or self.processor is None or self.ledger is None:
            return False
        self.processor.transform = transform  # the next chunk the reader processes uses it
        if new.input != old.input:
            self.tailer.reconfigure(new.input)
        if new.memory_limit_bytes != old.memory_limit_bytes:
            self.budget.limit = new.memory_limit_bytes  # wakes the reader if the limit went up
        old_by = {s.name: s for s in old.sinks}
        new_by = {s.name: s for s in new.sinks}
        changes = []
        retiring = []
        for runner in list(self.runners):
            scfg = new_by.get(runner.name)
            if scfg is None:  # removed: checkpoints stop waiting for it once its batches in flight are done
                self.runners.remove(runner)
                retiring.append(self._spawn_retire(runner, then=functools.partial(self.ledger.remove_sink, runner.name)))
                changes.append(f"-{runner.name}")
            elif scfg != old_by.get(runner.name) or new.batch_for(scfg) != old.batch_for(old_by.get(runner.name)):
                # changed: chunks read from now on wait for the new runner, built once the old one is done
                self.runners.remove(runner)
                self._held[runner.name] = asyncio.Queue()
                retiring.append(self._spawn_retire(runner, then=functools.partial(self._replace, runner.name, scfg, new), replaced=True))
                changes.append(f"~{runner.name}")
        for name, scfg in new_by.items():
            if name not in old_by:  # added: it gets the events read from now on
                fresh = self._make_runner(build_sink(scfg, node=new.node, state_dir=new.state_dir, input_paths=new.input.paths), scfg, new, open_spool=True)
                self.ledger.add_sink(name, self.tailer.emitted_offsets())
                self.runners.append(fresh)
                self._start_runner(fresh)
                changes.append(f"+{name}")
        self.cfg = new
        if retiring:
            await asyncio.gather(*retiring)
        log.info("config applied while running", extra={"sinks": " ".join(changes) or "unchanged", "input_changed": new.input != old.input})
        return True

    def _replace(self, name: str, scfg: Any, cfg: Config) -> None:
        """The replaced runner closed its sink and its spool: build the new sink, hand it the chunks read
        meanwhile (in order, with no await in between, so none is emitted past them) and start it."""
        fresh = self._make_runner(build_sink(scfg, node=cfg.node, state_dir=cfg.state_dir, input_paths=cfg.input.paths), scfg, cfg, open_spool=True)
        held = self._held.pop(name)
        while not held.empty():
            fresh.queue.put_nowait(held.get_nowait())
        self.runners.append(fresh)
        self._start_runner(fresh)

    def _make_runner(self, sink: Any, scfg: Any, cfg: Config, *, open_spool: bool) -> SinkRunner:
        assert self.ledger is not None and self.deadletter is not None
        runner = SinkRunner(
            sink,
            batch=cfg.batch_for(scfg) if scfg is not None else cfg.batch,
            retry=scfg.retry if scfg is not None else RetryConfig(),
            concurrency=scfg.concurrency if scfg is not None else 1,
            ledger=self.ledger,
            deadletter=self.deadletter,
            metrics=self.metrics,
            path_of=self._path_of,
        )
        if open_spool:
            self._open_spool(runner, scfg, cfg)
        return runner

    def _open_spool(self, runner: SinkRunner, scfg: Any, cfg: Config) -> None:
        if scfg is None or scfg.spool is None:
            return
        spool = Spool(Path(cfg.state_dir) / "spool" / runner.name, max_bytes=scfg.spool.max_bytes, segment_bytes=scfg.spool.segment_bytes)
        if spool.unacked_count:
            log.info("spool holds batches from a previous run; sending them first", extra={"sink": runner.name, "batches": spool.unacked_count})
        runner.spool = spool

    def _path_of(self, fid: int) -> str | None:
        tf = self.tailer.files.get(fid) if self.tailer is not None else None
        return tf.entry.path if tf is not None else None

    def _on_advance(self, fid: int, offset: int) -> None:
        assert self.tailer is not None
        self.tailer.on_advance(fid, offset)

    async def _emit(self, chunk: Chunk) -> None:
        for runner in self.runners:
            runner.queue.put_nowait(chunk)
        for held in self._held.values():  # a sink being replaced: its new runner takes these
            held.put_nowait(chunk)

    # -- state for metrics and status ------------------------------------------------------------
    def metrics_state(self) -> dict[str, Any]:
        assert self.processor is not None and self.tailer is not None and self.deadletter is not None
        counts = self.processor.counts()
        transform = self.processor.transform
        drops = dict(getattr(transform, "drops", {}))
        stage = dict(getattr(transform, "stage_drops", {}))
        dropped = {("policy_level_none", rule): n - stage.get(rule, 0) for rule, n in drops.items()}
        dropped.update({("policy_omitted_stage", rule): n for rule, n in stage.items()})
        dead = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("deadletter:")}
        return {
            "events_read": counts.get("read", 0),
            "bytes_read": self.tailer.bytes_read,
            "dropped": dropped,
            "deadlettered": dead,
            "shipped": {r.name: (r.shipped_events, r.shipped_bytes) for r in self.runners},
            "bytes_behind": self.tailer.bytes_behind(),
            "checkpoint_writes": self.store.writes,
            "truncations": self.tailer.truncations,
            "read_errors": dict(self.tailer.read_errors),
            "lost_files": self.tailer.lost_files,
            "lost_bytes": self.tailer.lost_bytes,
            "backpressure_waits": self.budget.waits,
            "deadletter_evicted": self.deadletter.evicted_records,
            "inflight_bytes": self.budget.in_use,
            "memory_limit": self.budget.limit,
            "files_tracked": len(self.tailer.files),
            "files_at_risk": len(self.tailer.at_risk()),
            "sink_state": {r.name: r.state for r in self.runners},
            "sink_blocked_s": {r.name: (time.monotonic() - r.blocked_since) if r.blocked_since is not None else 0.0 for r in self.runners},
            "sink_rejected": {r.name: r.rejected_events for r in self.runners},
            "spool_bytes": {r.name: r.spool.bytes_used for r in self.runners if r.spool is not None},
            "spooled_batches": {r.name: r.spooled_batches for r in self.runners if r.spool is not None},
            "spool_full_waits": {r.name: r.spool_full_waits for r in self.runners if r.spool is not None},
            "sink_families": [r.sink.metric_families for r in self.runners if hasattr(r.sink, "metric_families")],
            "checkpoint_age_s": time.time() - self.store.last_write if self.store.last_write else 0.0,
            "state_write_errors": dict(self.state_writes.errors),
        }

    def healthy(self) -> bool:
        return time.monotonic() - self._last_loop_tick < 30

    # -- checkpoints -----------------------------------------------------------------------------
    async def write_checkpoint(self) -> None:
        assert self.tailer is not None and self.deadletter is not None
        snapshot = [msgspec.structs.replace(e) for e in self.tailer.entries]
        self._snapshots += 1
        generation = self._snapshots
        deadletter = self.deadletter

        def _write() -> None:
            deadletter.sync()  # records for lines the checkpoint moves past are durable first; raises if not
            try:
                self.store.save(snapshot, generation)
            except OSError as exc:
                self.state_writes.failed("checkpoint", self.store.path, exc)
                raise
            self.state_writes.ok("checkpoint")

        await asyncio.to_thread(_write)

    async def _finish(self, runner: SinkRunner, clock: StopClock) -> int:
        """A runner's batches in flight (and with --once its spool) delivered, within what the clock allows;
        past it they are spooled or abandoned. Returns the batches abandoned."""
        if clock.draining:
            task = asyncio.get_running_loop().create_task(runner.finish(None, drain_spool=True))
            if not await clock.wait({task}):
                return task.result()
            task.cancel()  # a stop was requested while draining: what is left gets the bounded stop below
            await asyncio.gather(task, return_exceptions=True)
        return await runner.finish(clock.left())

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
            with contextlib.suppress(asyncio.TimeoutError):  # (not the builtin TimeoutError before Python 3.11)
                await asyncio.wait_for(self.stop_event.wait(), delay)
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

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what is read, shipped, behind, and any sink trouble."""
        s = self.metrics_state()
        shipped = ", ".join(f"{k} {v[0]}" for k, v in s["shipped"].items())
        trouble = [f"{k} {v}" for k, v in s["sink_state"].items() if v != "ok"]
        behind = sum(s["bytes_behind"].values())
        return f"read {s['events_read']}, shipped {shipped}, {behind} bytes behind" + (f"; sinks: {', '.join(trouble)}" if trouble else "")

    def readiness(self) -> bool:
        """Ready: the pipeline runs, the state directory takes writes, and no sink has been blocked longer
        than 5 minutes."""
        if not self.ready or self.state_writes.failing() or (self.tailer is not None and self.tailer.unreadable):
            return False
        now = time.monotonic()
        return all((r.blocked_since is None or now - r.blocked_since < 300) and getattr(r.sink, "blocked_for_s", lambda: 0.0)() < 300 for r in self.runners)

    async def _file_sink_timer(self) -> None:
        while True:
            await asyncio.sleep(5)
            for r in self.runners:
                finish = getattr(r.sink, "finish_if_old", None)
                if finish is not None:
                    await asyncio.to_thread(finish)

    # -- lifecycle -------------------------------------------------------------------------------
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

    async def run(self, *, once: bool = False, install_signals: bool = True, on_ready: Callable[[Agent], None] | None = None) -> int:
        lock_fd = lock_state_dir(Path(self.cfg.state_dir))
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        background: list[asyncio.Task[Any]] = []
        try:
            self._build()
            assert self.tailer is not None
            addr = self.cfg.metrics.address()
            if addr is not None:
                self.server = ObsServer(addr[0], addr[1], metrics=self.metrics.render, healthy=self.healthy, ready=self.readiness)
                await self.server.start()
            # the first scan decides first-start offsets (start_at, backfill_rotated): make them durable
            # before anything is read, so a crash now cannot make the next start a "first start" again
            self.tailer.scan()
            if not await self._first_checkpoint():  # stopped while the state directory refused it: nothing was read
                return self._once_result(once, complete=False)
            self._failure = loop.create_future()
            for r in self.runners:
                self._start_runner(r)
            background = [loop.create_task(self._checkpoint_loop(), name="checkpoints"), loop.create_task(self._file_sink_timer(), name="file-sink-timer")]
            tail_task = loop.create_task(self.tailer.run(self.stop_event, once=once), name="tailer")
            self.ready = True
            if self.notifier is not None:
                self.notifier.ready()
                self.notifier.status(self.status_line())
            if on_ready is not None:
                on_ready(self)
            first: list[asyncio.Future[Any]] = [tail_task, self._failure]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if self._failure.done():
                raise self._failure.result()
            tail_task.result()
            with contextlib.suppress(OSError):  # counted and logged; the final write below tries again
                await self.write_checkpoint()  # whatever is acknowledged so far
            for r in self.runners:
                await r.stop()
            # --once waits for every sink, spools included, until a stop is requested; then (and for `run`)
            # the stop is bounded by shutdown_timeout_s, and a second request ends every wait
            clock = StopClock(self.stop_event, self.force_stop, self.cfg.shutdown_timeout_s, drain=once and not self.stop_event.is_set())
            if self._retiring:
                await clock.wait(self._retiring)
            pending = await clock.wait(set(self._runner_tasks.values()))
            for t in pending:  # a batcher stuck handing off (spool full, no free slot)
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            abandoned = 0
            for r in self.runners:
                abandoned += await self._finish(r, clock)
            if abandoned or pending:
                log.warning(
                    "stopping: batches not delivered in time are left unacknowledged; they are read again at the next start",
                    extra={"batches": abandoned, "sinks": [r.name for r, t in self._runner_tasks.items() if t in pending]},
                )
            for r in self.runners:
                if hasattr(r.sink, "shutdown_timeout_s"):  # the S3 sink uploads what it staged, within the time left
                    r.sink.shutdown_timeout_s = clock.left()
                await r.sink.aclose()
            self._sinks_closed = True
            try:
                await self.write_checkpoint()
            except OSError:
                log.error("the final checkpoint could not be written: what was acknowledged since the last one is read and sent again at the next start")
                return EXIT_FAILED
            return self._once_result(once, complete=not (abandoned or pending or self.stop_event.is_set()))
        finally:
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.server is not None:
                await self.server.aclose()
            if not self._sinks_closed:  # run failed: still close clients and background tasks of the sinks
                for r in self.runners:
                    try:
                        await r.sink.aclose()
                    except Exception:
                        log.exception("closing a sink failed", extra={"sink": r.name})
            if self.tailer is not None:
                self.tailer.close()
            if self.deadletter is not None:
                self.deadletter.close()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            os.close(lock_fd)
