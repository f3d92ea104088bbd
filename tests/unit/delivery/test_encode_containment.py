"""A record a sink cannot encode is a per-record failure (issue 13, item 1): the engine bisects the batch down to
it, dead-letters it with the reason, and delivers the rest; a sink that cannot encode anything keeps its data.

The sink here is honest about its failures: it re-encodes each record through a full decode, as a naive encoder
would (and as the real ones did before they learnt not to), so a record nested deeper than msgspec goes or holding
a number out of range really fails to encode, alone, whatever batch it is in.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.containment import MAX_REASON_CHARS
from kube_audit_shipper.delivery.contract import Delivered, Outcome, Reply, Request, Retry, Sink, Split
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.delivery.spool import Spool
from kube_audit_shipper.model import Chunk
from tests.support.wait import until

MiB = 1 << 20
FAST = RetryConfig(initial_ms=1, max_ms=20)
DEEP = b'{"r":"deep","body":' + b"[" * 5000 + b"]" * 5000 + b"}"
HUGE = b'{"r":"huge","code":1e400}'


class NaiveSink(Sink):
    """NDJSON requests; each record decoded and encoded again (so it fails on what msgspec cannot decode).

    `max_records`: a request carrying more is answered Split (a backend size limit); `split` is missing in this
    sink (it raises), so the engine must cut such requests itself. `broken`: encode fails for every record.
    """

    name = "naive"
    max_concurrency = 1

    def __init__(self, *, max_records: int | None = None) -> None:
        self.max_records = max_records
        self.broken = False
        self.encode_calls = 0
        self.stored: list[bytes] = []
        self.requests: list[list[bytes]] = []

    def encode(self, records: list[bytes]) -> list[Request]:
        self.encode_calls += 1
        if self.broken:
            raise RuntimeError("compressor context lost")
        lines = [msgspec.json.encode(msgspec.json.decode(r)) for r in records]
        return [Request(payload=b"".join(x + b"\n" for x in lines), indices=list(range(len(records))))]

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        raise NotImplementedError("this sink cannot split a request")

    async def send(self, request: Request) -> Reply:
        lines = request.payload.split(b"\n")[:-1]
        if self.max_records is not None and len(lines) > self.max_records:
            return Reply(413, {}, b"too many records")
        self.requests.append(lines)
        self.stored.extend(lines)
        return Reply(200, {}, b"")

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        if isinstance(result, Reply) and result.status == 413:
            return Split("HTTP 413: too many records")
        if isinstance(result, Reply):
            return Delivered()
        return Retry(str(result))

    async def aclose(self, deadline: float | None = None) -> None:
        pass


def records(n: int) -> list[bytes]:
    return [b'{"r":%d,"verb":"get"}' % i for i in range(n)]


def chunk_of(recs: list[bytes]) -> Chunk:
    ends, pos = [], 0
    for r in recs:
        pos += len(r) + 1
        ends.append(pos)
    return Chunk(1, 0, pos, recs, ends, time.monotonic())


def deliver(sink: NaiveSink, recs: list[bytes], dl: DeadLetterStore, *, spool: Spool | None = None, max_events: int = 1000) -> tuple[SinkRunner, Ledger]:
    async def run() -> tuple[SinkRunner, Ledger]:
        ledger = Ledger([sink.name])
        ledger.open(1, 0)
        runner = SinkRunner(
            sink,
            batch=BatchConfig(max_events=max_events, max_bytes=64 * MiB, max_wait_ms=0),
            retry=FAST,
            concurrency=1,
            ledger=ledger,
            deadletter=dl,
            spool=spool,
        )
        runner.path_of = lambda fid: "/var/log/audit.log"
        task = asyncio.get_running_loop().create_task(runner.run())
        runner.queue.put_nowait(chunk_of(recs))
        await runner.stop()
        await asyncio.wait_for(task, 30)
        assert await asyncio.wait_for(runner.finish(None, drain_spool=True), 30) == 0
        return runner, ledger

    return asyncio.run(run())


def dead(dl: DeadLetterStore) -> list[dict[str, Any]]:
    dl.sync()
    return list(dl.iter_records())


def canonical(recs: list[bytes]) -> list[bytes]:
    return [msgspec.json.encode(msgspec.json.decode(r)) for r in recs]


def test_a_record_the_sink_cannot_encode_is_dead_lettered_and_the_rest_delivered(dl: DeadLetterStore) -> None:
    recs = records(40)
    recs[3], recs[17], recs[31] = DEEP, HUGE, DEEP.replace(b'"deep"', b'"deep2"')
    sink = NaiveSink()
    runner, ledger = deliver(sink, recs, dl)
    good = [r for i, r in enumerate(recs) if i not in (3, 17, 31)]
    assert sink.requests == [canonical(good)]  # the others encoded again together: one request, in order
    assert ledger.offset(1) == chunk_of(recs).end  # the whole batch acknowledged
    letters = dead(dl)
    assert [r["event"].encode() for r in letters] == [recs[3], recs[17], recs[31]]
    content = b"".join(r + b"\n" for r in recs)
    for letter, index in zip(letters, (3, 17, 31), strict=True):
        assert letter["sink"] == "naive"
        assert letter["reason"].startswith("sink naive: cannot encode the record: ")
        assert ("RecursionError" if index != 17 else "ValidationError: Number out of range") in letter["reason"]
        assert len(letter["reason"]) <= len("sink naive: ") + MAX_REASON_CHARS
        source = letter["source"]
        assert source["path"] == "/var/log/audit.log" and content[source["offset"] : source["offset"] + source["length"]] == recs[index] + b"\n"
    assert runner.state == "ok" and runner.rejected_events == 3 and runner.shipped_events == 37
    # bisection, not one encode per record: log2(40) rounds for each of the 3
    assert sink.encode_calls <= 2 + 3 * 2 * 6 + 1


def test_a_batch_of_nothing_but_unencodable_records_is_dead_lettered(dl: DeadLetterStore) -> None:
    sink = NaiveSink()
    deliver(sink, records(5), dl)  # a first batch: the sink learns a record it can encode (its canary)
    deliver(sink, [DEEP, HUGE], dl)
    assert [r["event"].encode() for r in dead(dl)] == [DEEP, HUGE]
    assert len(sink.stored) == 5


def test_a_sink_that_cannot_encode_anything_keeps_the_batch_until_it_can(dl: DeadLetterStore) -> None:
    sink = NaiveSink()
    sink.broken = True
    recs = [*records(10), DEEP]

    async def run() -> SinkRunner:
        ledger = Ledger([sink.name])
        ledger.open(1, 0)
        runner = SinkRunner(sink, batch=BatchConfig(max_events=100, max_bytes=MiB, max_wait_ms=0), retry=FAST, concurrency=1, ledger=ledger, deadletter=dl)
        task = asyncio.get_running_loop().create_task(runner.run())
        runner.queue.put_nowait(chunk_of(recs))
        await until(lambda: runner.state == "blocked" and sink.encode_calls >= 3, what="the sink blocked, retrying")
        assert dead(dl) == [] and ledger.offset(1) == 0  # nothing dead-lettered for the sink's own failure
        sink.broken = False
        await runner.stop()
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(runner.finish(None), 30)
        assert ledger.offset(1) == chunk_of(recs).end
        return runner

    runner = asyncio.run(run())
    assert runner.state == "ok" and sink.stored == canonical(recs[:10])
    assert [r["event"].encode() for r in dead(dl)] == [DEEP]  # once the sink works, the record it cannot encode


def test_a_request_the_sink_fails_to_split_is_cut_by_the_engine(dl: DeadLetterStore) -> None:
    sink = NaiveSink(max_records=4)
    recs = records(19)
    recs[9] = HUGE
    runner, ledger = deliver(sink, recs, dl)
    assert sorted(sink.stored) == sorted(canonical([r for r in recs if r != HUGE]))
    assert all(len(req) <= 4 for req in sink.requests)
    assert [r["event"].encode() for r in dead(dl)] == [HUGE]
    assert ledger.offset(1) == chunk_of(recs).end


def test_a_single_record_too_large_that_the_sink_fails_to_split_is_dead_lettered(dl: DeadLetterStore) -> None:
    sink = NaiveSink(max_records=0)  # the backend takes nothing
    recs = records(3)
    runner, ledger = deliver(sink, recs, dl)
    letters = dead(dl)
    assert [r["event"].encode() for r in letters] == recs
    assert all(r["reason"].startswith("sink naive: too large for the backend: HTTP 413") for r in letters)
    assert ledger.offset(1) == chunk_of(recs).end and sink.stored == []


def test_spooled_batches_are_contained_too(tmp_path: Path, dl: DeadLetterStore) -> None:
    sink = NaiveSink()
    spool = Spool(tmp_path / "spool", max_bytes=16 * MiB, segment_bytes=MiB)
    recs = [*records(6), DEEP, *records(3)]
    deliver(sink, recs, dl, spool=spool, max_events=4)
    assert sorted(sink.stored) == sorted(canonical([r for r in recs if r != DEEP]))
    assert [r["event"].encode() for r in dead(dl)] == [DEEP]


@pytest.mark.parametrize("bad", [DEEP, HUGE])
def test_replay_outside_the_pipeline_is_contained(dl: DeadLetterStore, bad: bytes) -> None:
    sink = NaiveSink()
    runner = SinkRunner(
        sink, batch=BatchConfig(max_events=100, max_bytes=MiB, max_wait_ms=0), retry=FAST, concurrency=1, ledger=Ledger([sink.name]), deadletter=dl
    )
    asyncio.run(runner.deliver([*records(2), bad]))
    assert sink.stored == canonical(records(2))
    assert [r["event"].encode() for r in dead(dl)] == [bad]
