"""`processing:` section: where the per-line work runs."""

from __future__ import annotations

import os
from typing import Annotated

import msgspec

#: `workers: null` on a machine with this many cores or more uses workers (one per core beyond the first, at most 4)
MAX_AUTO_WORKERS = 4


class ProcessingConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    workers: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=64)] | None,
        msgspec.Meta(
            description="worker processes for the policy, redaction, enrichment and encoding of large reads (a backlog), so a "
            "backlog uses more than one core; detection stays in the agent's process, in file order. 0 (the default): "
            "everything in the agent's process, at most about one core, which costs the least CPU per event; null: one per "
            f"core beyond the first (at most {MAX_AUTO_WORKERS}). Workers trade CPU (the hand-over) for a faster catch-up, "
            "which pays when detection is on and events are small (tests/bench/RESULTS.md)",
        ),
    ] = 0
    worker_min_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=1 << 30,
            description="a read of fewer bytes is processed in the agent's process: handing it to a worker costs more than it saves; "
            "a file followed at its end gives small reads, a backlog reads of input.read_chunk_bytes",
        ),
    ] = 512 * 1024

    def worker_count(self, cpus: int | None = None) -> int:
        """The workers to start: `workers` (default 0), or for null one per core beyond the first, at most MAX_AUTO_WORKERS."""
        if self.workers is not None:
            return self.workers
        cpus = cpus if cpus is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, min(MAX_AUTO_WORKERS, cpus - 1))
