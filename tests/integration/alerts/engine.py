"""Alert records through the real delivery engine (SinkRunner, Ledger, DeadLetterStore), as the agent delivers them,
and the accounting a conservation test needs: what reached the backend and what was dead-lettered, by alert id."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.model import Chunk

FAST = RetryConfig(initial_ms=1, max_ms=50)


def ship(sink: Any, records: list[bytes], dl: DeadLetterStore, *, max_events: int = 500, retry: RetryConfig = FAST, timeout_s: float = 120.0) -> SinkRunner:
    """Every record through a SinkRunner in one chunk; returns once every record is acknowledged (delivered or dead-lettered)."""

    async def run() -> SinkRunner:
        ledger = Ledger([sink.name])
        ledger.open(1, 0)
        runner = SinkRunner(
            sink, batch=BatchConfig(max_events=max_events, max_bytes=64 << 20, max_wait_ms=0), retry=retry, concurrency=4, ledger=ledger, deadletter=dl
        )
        ends, pos = [], 0
        for r in records:
            pos += len(r) + 1
            ends.append(pos)
        task = asyncio.get_running_loop().create_task(runner.run())
        runner.queue.put_nowait(Chunk(1, 0, pos, records, ends, time.monotonic()))
        await runner.stop()
        await asyncio.wait_for(task, timeout_s)
        assert await asyncio.wait_for(runner.finish(None), timeout_s) == 0
        await sink.aclose()
        assert ledger.offset(1) == pos, "every record acknowledged: stored or dead-lettered"
        return runner

    return asyncio.run(run())


def dead_letters(dl: DeadLetterStore) -> dict[str, str]:
    """Dead-lettered alert id (or the raw line, for records that are no alert) → reason."""
    out = {}
    for rec in dl.iter_records():
        event = rec.get("event") or ""
        try:
            key = msgspec.json.decode(event)["id"]
        except (msgspec.DecodeError, KeyError, TypeError):
            key = event
        out[key] = rec["reason"]
    return out
