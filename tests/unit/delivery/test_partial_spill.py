"""Regression: a batch sent as several requests whose later request fails goes to the spool without the requests
already delivered, so nothing is sent twice (found when every sink got a spool by default: Loki received 27 %
of a real log twice when its 1 MiB pushes met its ingestion rate limit)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from tests.support.wait import until
from tests.unit.delivery.test_engine import NEVER, MemSink, Model, SpyLedger, runner_for, spool_at, track_appends


@pytest.mark.asyncio
async def test_a_batch_failing_midway_spools_only_what_was_not_delivered(dl: DeadLetterStore, tmp_path: Path) -> None:
    model = Model(7)
    c = model.chunk(1, [100] * 8)
    # four requests of two records; the third fails once (a 429): the first two are delivered already
    third = c.records[4:6]
    sink = MemSink(per_request=2, fail=lambda payload, attempt: payload == third and attempt == 1)
    spool = spool_at(tmp_path)
    spooled_records = track_appends(spool)
    ledger = SpyLedger([sink], model, extra_done=lambda: spooled_records)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=8, max_bytes=1 << 20, max_wait_ms=NEVER), spool=spool)
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(c)
    await until(lambda: runner.spooled_batches == 1, what="the rest of the batch spooled")
    assert spooled_records == set(c.records[4:])  # not the four records already delivered
    await until(lambda: sink.delivered == set(c.records), what="the spooled rest sent by the drainer")
    await runner.stop()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(runner.finish(None, drain_spool=True), 5)
    sent = Counter(r for request in sink.sent for r in request)
    assert sent == Counter(c.records)  # each record once
    assert ledger.violations == []
    assert ledger.offset(1) == c.end


@pytest.mark.asyncio
async def test_a_batch_stopped_midway_spools_only_what_was_not_delivered(dl: DeadLetterStore, tmp_path: Path) -> None:
    """At stop, a batch still in flight is spooled: without the requests it already delivered."""
    model = Model(8)
    c = model.chunk(1, [100] * 6)
    hold = asyncio.Event()
    sink = MemSink(per_request=2)
    send = sink.send

    async def held_send(request):  # type: ignore[no-untyped-def]
        if request.indices[0] >= 2:  # the second request hangs: the first is delivered
            await hold.wait()
        return await send(request)

    sink.send = held_send  # type: ignore[method-assign]
    spool = spool_at(tmp_path)
    spooled_records = track_appends(spool)
    ledger = SpyLedger([sink], model, extra_done=lambda: spooled_records)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=6, max_bytes=1 << 20, max_wait_ms=NEVER), spool=spool)
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(c)
    await until(lambda: sink.delivered == set(c.records[:2]), what="the first request delivered")
    await runner.stop()
    await asyncio.wait_for(task, 5)
    assert await asyncio.wait_for(runner.finish(0.05), 5) == 0  # not abandoned: spooled
    assert spooled_records == set(c.records[2:])
    assert ledger.offset(1) == c.end


@pytest.mark.asyncio
async def test_a_batch_the_spool_can_never_take_is_retried_in_place_not_spilled_again(dl: DeadLetterStore, tmp_path: Path) -> None:
    """Regression: a failing batch larger than the whole spool went to the spool, which handed it back to be
    delivered with `spill` on: each failure recursed (spool -> deliver -> spool) with no backoff, until the
    recursion limit killed the runner. Now it is retried where it is, with the engine's backoff."""
    model = Model(9)
    c = model.chunk(1, [100] * 8)
    sink = MemSink(per_request=8, fail=lambda payload, attempt: attempt <= 3000)
    spool = spool_at(tmp_path, max_bytes=64)  # smaller than any batch
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(
        sink, ledger, dl, batch=BatchConfig(max_events=8, max_bytes=1 << 20, max_wait_ms=NEVER), retry=RetryConfig(initial_ms=1, max_ms=1), spool=spool
    )
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(c)
    await until(lambda: sink.delivered == set(c.records) or task.done(), what="the batch delivered after 3000 failures")
    assert not task.done() or task.exception() is None
    await runner.stop()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(runner.finish(None), 5)
    assert runner.spooled_batches == 0 and ledger.offset(1) == c.end and ledger.violations == []
