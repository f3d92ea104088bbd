"""No background task of a sink runner dies silently (issue 14): the sink's own work, the spool drainer and a
batch in flight that fail are logged with their traceback and fail the runner, whose owner reports it; the
agent stops with that error instead of running on with a sink that no longer uploads or drains."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kube_audit_shipper.app import Agent
from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig
from kube_audit_shipper.delivery.runner import BackgroundTaskError
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.sinks.file.sink import FileSink
from tests.support.corpus import numbered_lines
from tests.support.harness import append, make_config
from tests.support.sink_context import context
from tests.unit.delivery.test_engine import NEVER, MemSink, Model, SpyLedger, runner_for, spool_at

BATCH = BatchConfig(max_events=3, max_bytes=1 << 20, max_wait_ms=NEVER)


class DyingWork(MemSink):
    """A sink whose own background work fails once `die` is set (an uploader hitting a bug it cannot contain)."""

    def __init__(self) -> None:
        super().__init__()
        self.die = asyncio.Event()

    async def run_background(self) -> None:
        await self.die.wait()
        raise RuntimeError("uploader bug: staging index out of range")


@pytest.mark.asyncio
async def test_the_sinks_own_work_dying_fails_the_runner(dl: DeadLetterStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="kube_audit_shipper.delivery.runner")
    sink = DyingWork()
    ledger = Ledger([sink.name])
    runner = runner_for(sink, ledger, dl, batch=BATCH)
    task = asyncio.get_running_loop().create_task(runner.run())
    sink.die.set()
    with pytest.raises(BackgroundTaskError, match="sink-work died: RuntimeError: uploader bug") as raised:
        await asyncio.wait_for(task, 5)
    assert isinstance(raised.value.__cause__, RuntimeError)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("a background task of a sink runner died")]
    assert record.exc_info is not None and record.task == "sink-work"  # type: ignore[attr-defined]
    with pytest.raises(BackgroundTaskError):  # and closing says so again
        await runner.aclose(None)
    assert sink.closed


@pytest.mark.asyncio
async def test_the_spool_drainer_dying_fails_the_runner(dl: DeadLetterStore, tmp_path: Path) -> None:
    model = Model(3)
    sink = MemSink(fail=lambda payload, attempt: True)  # down: batches go to the spool
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    spool = spool_at(tmp_path)
    runner = runner_for(sink, ledger, dl, batch=BATCH, spool=spool)

    def unreadable(limit: int = 1) -> list[object]:
        raise OSError(5, "Input/output error")  # the spool's disk fails under the drainer

    spool.next_unacked = unreadable  # type: ignore[assignment,method-assign]
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(model.chunk(1, [80, 80, 80]))
    with pytest.raises(BackgroundTaskError, match="spool-drain died: OSError"):
        await asyncio.wait_for(task, 5)
    with pytest.raises(BackgroundTaskError):
        await asyncio.wait_for(runner.finish(0.1), 5)


@pytest.mark.asyncio
async def test_a_batch_in_flight_dying_fails_the_runner(dl: DeadLetterStore) -> None:
    sink = MemSink()
    model = Model(5)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)

    def broken_ack(sink_name: str, fid: int, start: int, end: int) -> None:
        raise KeyError(fid)  # a ledger bug: the batch was delivered but cannot be acknowledged

    ledger.ack = broken_ack  # type: ignore[method-assign]
    runner = runner_for(sink, ledger, dl, batch=BATCH)
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(model.chunk(1, [80, 80, 80]))
    with pytest.raises(BackgroundTaskError, match="deliver died: KeyError"):
        await asyncio.wait_for(task, 5)
    assert sink.sent  # it was sent; only its acknowledgement failed, and that did not vanish


class UploaderDies(FileSink):
    async def run_background(self) -> None:
        raise RuntimeError("the sink's background work died")


def test_the_agent_stops_with_the_error(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(10))
    cfg = make_config(tmp_path, paths=[str(log)])
    sink = UploaderDies(FileSinkConfig(name="archive", path=str(tmp_path / "out")), context(tmp_path / "state"))
    agent = Agent(cfg, sinks=[sink])

    with pytest.raises(BackgroundTaskError, match="background work died"):
        asyncio.run(asyncio.wait_for(agent.run(), 30))
    assert agent.supervisor.failed == ["sink:archive"] and not agent.readiness()
