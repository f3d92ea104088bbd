"""Regression: a batch spooled while the drainer goes idle (between its empty look and its wait) is never sent."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig
from tests.support.wait import until
from tests.unit.delivery.test_engine import NEVER, MemSink, Model, SpyLedger, runner_for, spool_at, track_appends


@pytest.mark.asyncio
async def test_a_batch_spooled_while_the_drainer_goes_idle_is_still_sent(dl: DeadLetterStore, tmp_path: Path) -> None:
    model = Model(40)
    c = model.chunk(1, [120] * 3)
    down = [False]
    sink = MemSink(fail=lambda payload, attempt: down[0])
    spool = spool_at(tmp_path)
    spooled = track_appends(spool)
    in_flush, release = threading.Event(), threading.Event()
    flush = spool.flush_acks

    def held_flush() -> None:  # the drainer's idle flush, held open: the window between its empty look and its wait
        if not release.is_set():
            in_flush.set()
            release.wait(10)
        flush()

    spool.flush_acks = held_flush  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model, extra_done=lambda: spooled)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=3, max_bytes=1 << 20, max_wait_ms=NEVER), spool=spool)
    task = asyncio.get_running_loop().create_task(runner.run())
    await until(in_flush.is_set, what="the drainer idle, in its flush")
    down[0] = True  # the batch fails directly and goes to the spool, while the drainer is in its flush
    runner.queue.put_nowait(c)
    await until(lambda: runner.spooled_batches == 1, what="the batch spooled")
    down[0] = False
    release.set()
    await until(lambda: sink.sent == [c.records], timeout_s=5, what="the spooled batch sent by the drainer")
    await runner.stop()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(runner.finish(None, drain_spool=True), 5)
