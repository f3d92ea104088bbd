"""Worker processes that shape large reads: check, policy, redaction, enrichment, encode (`processing.workers`).

The per-line work is Python, bound to one core by the GIL. For a backlog the stage hands each large read to a
worker process, which runs a LineProcessor of its own over it (the same code as in-process, without detection)
and returns the events, the dead letters and its counts; meanwhile the agent's process detects on the same
read, in file order (detection keeps windows across events, so it stays in one place). Results are taken in
the order reads were handed in (process/stage.py), so sinks and checkpoints see exactly what they see
without workers.

Workers are started with `spawn` (never `fork` from a process with threads) and build their transform from a
`ShapeSpec`: the parsed policy, the enrichment config and the node name, the same inputs the agent's own
transform was built from. They ignore SIGINT and SIGTERM (the agent stops them), die with the agent (Linux:
PR_SET_PDEATHSIG, so a SIGKILLed agent leaves no workers behind) and log through a handler like the agent's,
on the same stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

import msgspec

from kube_audit_shipper.model import Lines
from kube_audit_shipper.obs import logs
from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.lines import LineProcessor, Processed
from kube_audit_shipper.process.policy.match import compile_policy
from kube_audit_shipper.process.policy.schema import Policy
from kube_audit_shipper.process.transform import ShapeCounts, build_transform

log = logging.getLogger(__name__)


class ShapeSpec(msgspec.Struct, frozen=True):
    """What a worker needs to shape lines exactly as the agent's own transform would."""

    policy: Policy | None
    enrich: EnrichConfig
    node_name: str
    decision_cache_size: int
    log_level: str = "warning"
    log_format: str = "text"


_processor: LineProcessor | None = None  # in a worker process: built once by _start


def _die_with(parent: int) -> None:
    """SIGKILL this worker when the agent dies, however it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the agent died before the line above
        os._exit(0)


def _start(spec: ShapeSpec, parent: int) -> None:
    global _processor
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup(spec.log_level, spec.log_format)
    policy = compile_policy(spec.policy) if spec.policy is not None else None
    transform = build_transform(policy, spec.enrich, node_name=spec.node_name, decision_cache_size=spec.decision_cache_size)
    _processor = LineProcessor(transform)


def _shape(fid: int, lines: Lines, path: str) -> tuple[Processed, ShapeCounts | None]:
    assert _processor is not None, "worker not started"
    processed = _processor.process(fid, lines, path)
    transform = _processor.transform
    return processed, transform.take_counts() if transform is not None else None


def log_settings() -> tuple[str, str]:
    """The agent's log level and format (obs.logs.setup's), for its workers."""
    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers) else "text"
    return logging.getLevelName(root.level).lower(), fmt


class ShapePool:
    """`workers` processes shaping reads; started at the first read handed in."""

    def __init__(self, workers: int, spec: ShapeSpec) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers
        self.spec = spec
        self._executor: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(self.spec, os.getpid())
            )
        return self._executor

    async def shape(self, fid: int, lines: Lines, path: str) -> tuple[Processed, ShapeCounts | None]:
        """The worker's result for one read. Raises BrokenProcessPool if a worker died (the caller processes the
        read in-process; the next call starts new workers)."""
        future = self._pool().submit(_shape, fid, lines, path)
        try:
            return await asyncio.wrap_future(future)
        except Exception:
            if self._executor is not None and getattr(self._executor, "_broken", False):
                log.error("a worker process died; its read is processed in the agent's process and new workers are started")
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                self.restarts += 1
            raise

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
