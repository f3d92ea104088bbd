"""Unit tests for agent.delivery.engine.SinkRunner: batching, exact acknowledgements, retries, give-up, order."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.checkpoint.ledger import Ledger
from agent.deadletter.store import DeadLetterStore
from agent.delivery.config import BatchConfig, RetryConfig
from agent.delivery.engine import SinkRunner
from agent.model import Chunk

MiB = 1 << 20
FAST_RETRY = RetryConfig(initial_ms=1, max_ms=5)


# -- test doubles ----------------------------------------------------------------------------------


class MemSink:
    """An in-memory sink: the payload is the list of records; `fail(payload, attempt)` decides failures."""

    def __init__(
        self,
        name: str = "mem",
        max_concurrency: int | None = 1,
        fail: Callable[[list[bytes], int], bool] | None = None,
        delay: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.fail = fail
        self.delay = delay
        self.sent: list[list[bytes]] = []  # successful sends, in completion order
        self.delivered: set[bytes] = set()
        self.attempts: dict[tuple[bytes, ...], int] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.closed = False

    def encode(self, records: list[bytes]) -> list[bytes]:
        return list(records)

    async def send(self, payload: list[bytes]) -> None:
        key = tuple(payload)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.delay is not None:
                await asyncio.sleep(self.delay())
            if self.fail is not None and self.fail(payload, self.attempts[key]):
                raise ConnectionError(f"refused (attempt {self.attempts[key]})")
            self.sent.append(payload)
            self.delivered.update(payload)
        finally:
            self.inflight -= 1

    async def aclose(self) -> None:
        self.closed = True


class Model:
    """Chunks with known per-record input ranges, and a checker for the at-least-once invariant."""

    def __init__(self, seed: int = 0) -> None:
        self.rnd = random.Random(seed)
        self.next_off: dict[int, int] = {}
        self.range_of: dict[bytes, tuple[int, int, int]] = {}  # record -> (fid, start, end)
        self.chunks: list[Chunk] = []
        self.n = 0

    def chunk(self, fid: int, sizes: list[int], folded: bool = True) -> Chunk:
        """A chunk of records with the given byte sizes; some records absorb skipped lines before them."""
        start = self.next_off.get(fid, 0)
        pos = start
        records, ends = [], []
        for size in sizes:
            tag = b'{"r":%d,"p":"' % self.n
            self.n += 1
            rec = tag + b"x" * max(0, size - len(tag) - 2) + b'"}'
            assert len(rec) == size or size < len(tag) + 2
            skipped = self.rnd.choice([0, 0, 0, 17, 250]) if folded else 0  # dead-lettered/blank lines folded in
            a = pos
            pos += skipped + len(rec) + 1
            self.range_of[rec] = (fid, a, pos)
            records.append(rec)
            ends.append(pos)
        self.next_off[fid] = pos
        c = Chunk(fid, start, pos, records, ends, time.monotonic())
        self.chunks.append(c)
        return c

    def prefix(self, fid: int, done: set[bytes]) -> int:
        """Longest prefix of fid's input whose records are all in `done`."""
        off = 0
        for rec, (f, a, b) in sorted(self.range_of.items(), key=lambda kv: kv[1][1]):
            if f != fid:
                continue
            if rec not in done:
                break
            off = b
        return off


class SpyLedger(Ledger):
    """Records acks; on every advance checks that every record below the new offset was delivered."""

    def __init__(self, sinks: list[MemSink], model: Model, extra_done: Callable[[], set[bytes]] | None = None) -> None:
        super().__init__([s.name for s in sinks], on_advance=self._advanced)
        self.sinks_ = sinks
        self.model = model
        self.extra_done = extra_done
        self.acks: list[tuple[str, int, int, int, int]] = []  # (sink, batch index at ack time, fid, start, end)
        self.advances: list[tuple[int, int]] = []
        self.violations: list[str] = []

    def ack(self, sink: str, fid: int, start: int, end: int) -> None:
        s = next(x for x in self.sinks_ if x.name == sink)
        self.acks.append((sink, len(s.sent) - 1, fid, start, end))
        super().ack(sink, fid, start, end)

    def _advanced(self, fid: int, offset: int) -> None:
        self.advances.append((fid, offset))
        extra = self.extra_done() if self.extra_done else set()
        for rec, (f, a, b) in self.model.range_of.items():
            if f == fid and b <= offset:
                for s in self.sinks_:
                    if rec not in s.delivered and rec not in extra:
                        self.violations.append(f"offset {offset} of fid {fid} passes record [{a},{b}) not delivered by {s.name}")


def runner_for(sink: MemSink, ledger: Ledger, dl: DeadLetterStore, *, batch: BatchConfig, retry: RetryConfig = FAST_RETRY, concurrency: int = 1) -> SinkRunner:
    return SinkRunner(sink, batch=batch, retry=retry, concurrency=concurrency, ledger=ledger, deadletter=dl)


async def run_all(runner: SinkRunner, chunks: list[Chunk], timeout: float = 10.0) -> None:
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await runner.stop()
    await asyncio.wait_for(task, timeout)


def expected_ranges(model: Model, batch: list[bytes]) -> dict[int, tuple[int, int]]:
    """The input a batch stands for: per file, from its first record's range start to its last's end."""
    out: dict[int, tuple[int, int]] = {}
    for rec in batch:
        fid, a, b = model.range_of[rec]
        if fid in out:
            assert out[fid][1] == a, "records of one file in a batch are contiguous"
            out[fid] = (out[fid][0], b)
        else:
            out[fid] = (a, b)
    return out


def check_exact_acks(model: Model, sink: MemSink, ledger: SpyLedger) -> None:
    """With one batch in flight at a time, the acks after batch k are exactly batch k's ranges."""
    by_batch: dict[int, dict[int, tuple[int, int]]] = {}
    for name, k, fid, a, b in ledger.acks:
        assert name == sink.name
        assert fid not in by_batch.setdefault(k, {})
        by_batch[k][fid] = (a, b)
    assert sorted(by_batch) == list(range(len(sink.sent)))
    for k, batch in enumerate(sink.sent):
        assert by_batch[k] == expected_ranges(model, batch), f"batch {k}"


@pytest.fixture
def dl(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    yield store
    store.close()


def all_records(chunks: list[Chunk]) -> list[bytes]:
    return [r for c in chunks for r in c.records]


# -- batching --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_batches_by_max_events_within_one_chunk(dl: DeadLetterStore) -> None:
    model = Model(1)
    c = model.chunk(1, [50 + 7 * i for i in range(10)])
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=3, max_bytes=MiB, max_wait_ms=3_600_000)), [c])
    assert [len(b) for b in sink.sent] == [3, 3, 3, 1]
    assert all_records([c]) == [r for b in sink.sent for r in b]
    # the exact ranges, computed from the chunk itself
    assert [(a, b) for _, _, _, a, b in ledger.acks] == [(c.start, c.ends[2]), (c.ends[2], c.ends[5]), (c.ends[5], c.ends[8]), (c.ends[8], c.end)]
    check_exact_acks(model, sink, ledger)
    assert ledger.offset(1) == c.end
    assert ledger.violations == []


@pytest.mark.asyncio
async def test_batches_by_max_events_across_chunks_and_files(dl: DeadLetterStore) -> None:
    model = Model(2)
    chunks = [model.chunk(1, [60, 70]), model.chunk(2, [80]), model.chunk(1, [60, 61, 62]), model.chunk(2, [90] * 5), model.chunk(1, [55])]
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    ledger.open(2, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=4, max_bytes=MiB, max_wait_ms=3_600_000))
    await run_all(runner, chunks)
    assert [len(b) for b in sink.sent] == [4, 4, 4]
    assert [r for b in sink.sent for r in b] == all_records(chunks)
    check_exact_acks(model, sink, ledger)
    assert ledger.offset(1) == chunks[4].end and ledger.offset(2) == chunks[3].end
    assert ledger.violations == []
    assert runner.shipped_events == 12
    assert runner.shipped_bytes == sum(len(r) + 1 for r in all_records(chunks))


@pytest.mark.asyncio
async def test_batches_by_max_bytes_within_one_chunk(dl: DeadLetterStore) -> None:
    model = Model(3)
    rnd = random.Random(3)
    c = model.chunk(1, [rnd.randrange(30, 400) for _ in range(60)])
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    max_bytes = 1024
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=1000, max_bytes=max_bytes, max_wait_ms=3_600_000)), [c])
    assert [r for b in sink.sent for r in b] == c.records
    sizes = [sum(len(r) + 1 for r in b) for b in sink.sent]
    assert all(s <= max_bytes for s in sizes)
    # greedy: a batch is only cut when the next record would not fit
    flat = c.records
    i = 0
    for b, s in zip(sink.sent[:-1], sizes[:-1]):
        i += len(b)
        assert s + len(flat[i]) + 1 > max_bytes
    check_exact_acks(model, sink, ledger)
    assert ledger.offset(1) == c.end


@pytest.mark.asyncio
async def test_record_larger_than_max_bytes_goes_alone(dl: DeadLetterStore) -> None:
    model = Model(4)
    c = model.chunk(1, [100, 5000, 100])
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=1024, max_wait_ms=3_600_000)), [c])
    assert [[len(r) for r in b] for b in sink.sent] == [[100], [5000], [100]]
    check_exact_acks(model, sink, ledger)


@pytest.mark.asyncio
async def test_max_bytes_split_across_chunks_acknowledges_exact_ranges(dl: DeadLetterStore) -> None:
    """A batch filled by one chunk that has no room for the next chunk's first record must not claim that chunk."""
    model = Model(5)
    chunks = [model.chunk(1, [599], folded=False), model.chunk(1, [599], folded=False), model.chunk(2, [700], folded=False), model.chunk(1, [300, 300, 300])]
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    ledger.open(2, 0)
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=1024, max_wait_ms=3_600_000)), chunks)
    assert [r for b in sink.sent for r in b] == all_records(chunks)
    assert all(sum(len(r) + 1 for r in b) <= 1024 for b in sink.sent)
    check_exact_acks(model, sink, ledger)


@pytest.mark.asyncio
async def test_max_bytes_split_across_chunks_never_acks_unsent_events(dl: DeadLetterStore) -> None:
    """At-least-once: while the batch holding chunk 2 keeps failing, the checkpoint stays before chunk 2."""
    model = Model(6)
    c1 = model.chunk(1, [599], folded=False)  # [0, 600)
    c2 = model.chunk(1, [599], folded=False)  # [600, 1200): does not fit next to c1 under max_bytes=1024
    second = c2.records[0]
    sink = MemSink(fail=lambda payload, attempt: second in payload and attempt <= 3)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    offsets_during_failures: list[int | None] = []
    orig_send = sink.send

    async def send(payload: list[bytes]) -> None:
        if second in payload:
            offsets_during_failures.append(ledger.offset(1))
        await orig_send(payload)

    sink.send = send  # type: ignore[method-assign]
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=1024, max_wait_ms=3_600_000)), [c1, c2])
    assert len(offsets_during_failures) == 4
    assert all(o is not None and o <= c1.end for o in offsets_during_failures), offsets_during_failures
    assert ledger.violations == []
    assert ledger.offset(1) == c2.end


@pytest.mark.asyncio
async def test_max_wait_flushes_a_partial_batch(dl: DeadLetterStore) -> None:
    model = Model(7)
    c = model.chunk(1, [100, 100])
    sent = asyncio.Event()
    sink = MemSink()
    orig = sink.send

    async def send(payload: list[bytes]) -> None:
        await orig(payload)
        sent.set()

    sink.send = send  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=MiB, max_wait_ms=150))
    task = asyncio.get_running_loop().create_task(runner.run())
    t0 = time.monotonic()
    runner.queue.put_nowait(c)
    await asyncio.sleep(0.02)
    assert sink.sent == []  # not yet: neither full nor old
    await asyncio.wait_for(sent.wait(), 5)
    assert time.monotonic() - t0 >= 0.14
    assert sink.sent == [c.records]
    for _ in range(100):
        if ledger.offset(1) == c.end:
            break
        await asyncio.sleep(0.001)
    assert ledger.offset(1) == c.end
    await runner.stop()
    await asyncio.wait_for(task, 5)
    assert sink.sent == [c.records]


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", ["events", "bytes"])
async def test_a_full_batch_is_sent_at_once(dl: DeadLetterStore, limit: str) -> None:
    """A batch that reaches max_events or max_bytes with the chunk's last record goes out without waiting."""
    model = Model(13)
    c = model.chunk(1, [255] * 4, folded=False)  # 4 records, 1024 bytes with their newlines
    sent = asyncio.Event()
    sink = MemSink()
    orig = sink.send

    async def send(payload: list[bytes]) -> None:
        await orig(payload)
        sent.set()

    sink.send = send  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    batch = BatchConfig(max_events=4, max_bytes=MiB, max_wait_ms=3_600_000) if limit == "events" else BatchConfig(max_events=1000, max_bytes=1024, max_wait_ms=3_600_000)
    runner = runner_for(sink, ledger, dl, batch=batch)
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(c)
    await asyncio.wait_for(sent.wait(), 5)  # neither stop nor max_wait: the batch was full
    assert sink.sent == [c.records]
    await runner.stop()
    await asyncio.wait_for(task, 5)
    assert ledger.offset(1) == c.end


@pytest.mark.asyncio
async def test_stop_flushes_the_pending_batch(dl: DeadLetterStore) -> None:
    model = Model(8)
    chunks = [model.chunk(1, [100] * 3), model.chunk(1, [100] * 2)]
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=1000, max_bytes=MiB, max_wait_ms=3_600_000)), chunks)
    assert sink.sent == [all_records(chunks)]
    assert ledger.offset(1) == chunks[1].end


# -- retries and give-up ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_failures_are_retried_and_acknowledged_only_after_success(dl: DeadLetterStore) -> None:
    model = Model(9)
    chunks = [model.chunk(1, [80] * 4) for _ in range(5)]
    sink = MemSink(fail=lambda payload, attempt: attempt <= 3)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=4, max_bytes=MiB, max_wait_ms=3_600_000), concurrency=1)
    await run_all(runner, chunks)
    assert sink.sent == [c.records for c in chunks]
    assert all(n == 4 for n in sink.attempts.values())
    assert runner.retries == 3 * len(chunks)
    assert runner.last_error is not None and "ConnectionError" in runner.last_error
    assert ledger.violations == []
    assert ledger.offset(1) == chunks[-1].end
    assert list(dl.iter_records()) == []
    assert runner.gave_up_events == 0


@pytest.mark.asyncio
async def test_give_up_after_max_retry_age_dead_letters_and_acknowledges(dl: DeadLetterStore) -> None:
    model = Model(10)
    chunks = [model.chunk(1, [60, 70, 80]), model.chunk(1, [90, 100])]
    sink = MemSink(name="broken", max_concurrency=4, fail=lambda payload, attempt: True)
    gave_up: set[bytes] = set()
    ledger = SpyLedger([sink], model, extra_done=lambda: gave_up)
    ledger.open(1, 0)
    retry = RetryConfig(initial_ms=1, max_ms=5, max_retry_age_s=1)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=3, max_bytes=MiB, max_wait_ms=3_600_000), retry=retry, concurrency=4)
    orig_add = dl.add

    def add(**kw):  # type: ignore[no-untyped-def]
        gave_up.add(kw["event"])
        orig_add(**kw)

    dl.add = add  # type: ignore[method-assign]
    t0 = time.monotonic()
    await run_all(runner, chunks, timeout=15)
    assert time.monotonic() - t0 >= 1.0
    assert sink.sent == []
    assert all(n >= 2 for n in sink.attempts.values())
    recs = list(dl.iter_records())
    assert sorted(r["event"].encode() for r in recs) == sorted(all_records(chunks))
    for r in recs:
        assert r["sink"] == "broken"
        assert "gave up" in r["reason"] and "ConnectionError" in r["reason"]
    assert runner.gave_up_events == 5
    assert runner.shipped_events == 0
    assert ledger.offset(1) == chunks[-1].end
    assert ledger.violations == []


# -- concurrency and order -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_out_of_order_completion_with_concurrency_4_never_passes_a_gap(dl: DeadLetterStore) -> None:
    model = Model(11)
    chunks = [model.chunk(1 + i % 2, [40 + (i * 13) % 90 for _ in range(5)]) for i in range(40)]
    rnd = random.Random(11)
    sink = MemSink(max_concurrency=4, delay=lambda: rnd.uniform(0, 0.004))
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    ledger.open(2, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=5, max_bytes=MiB, max_wait_ms=3_600_000), concurrency=4)
    assert runner.concurrency == 4
    await run_all(runner, chunks)
    assert sink.max_inflight <= 4
    assert sorted(r for b in sink.sent for r in b) == sorted(all_records(chunks))
    assert ledger.violations == []
    assert ledger.offset(1) == model.next_off[1] and ledger.offset(2) == model.next_off[2]


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_controlled_out_of_order_completion(dl: DeadLetterStore, seed: int) -> None:
    """Batches complete in a random order chosen by the test; after each completion the offset is the model's."""
    model = Model(seed)
    chunks = [model.chunk(1, [50 + (i * 7) % 60 for _ in range(2)]) for i in range(24)]
    loop = asyncio.get_running_loop()
    pending: list[tuple[list[bytes], asyncio.Future[None]]] = []
    sink = MemSink(max_concurrency=4)

    async def send(payload: list[bytes]) -> None:
        fut: asyncio.Future[None] = loop.create_future()
        pending.append((payload, fut))
        await fut
        sink.sent.append(payload)
        sink.delivered.update(payload)

    sink.send = send  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=3_600_000), concurrency=4)
    task = loop.create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await runner.stop()

    async def until(cond: Callable[[], bool]) -> None:
        for _ in range(5000):
            if cond():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("timed out")

    rnd = random.Random(seed)
    total = len(chunks)
    completed = 0
    out_of_order = 0
    done: set[bytes] = set()
    while completed < total:
        await until(lambda: len(pending) == min(4, total - completed))
        assert len(pending) <= 4
        k = rnd.randrange(len(pending))
        if k != 0:
            out_of_order += 1
        payload, fut = pending.pop(k)
        acks_before = len(ledger.acks)
        fut.set_result(None)
        await until(lambda: len(ledger.acks) == acks_before + 1)
        completed += 1
        done.update(payload)
        assert ledger.offset(1) == model.prefix(1, done)
    await asyncio.wait_for(task, 5)
    assert out_of_order > 0
    assert ledger.offset(1) == chunks[-1].end
    assert ledger.violations == []


@pytest.mark.asyncio
async def test_runner_concurrency_capped_by_sink(dl: DeadLetterStore) -> None:
    model = Model(12)
    chunks = [model.chunk(1, [50] * 2) for _ in range(12)]
    sink = MemSink(max_concurrency=2, delay=lambda: 0.002)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=3_600_000), concurrency=8)
    assert runner.concurrency == 2
    await run_all(runner, chunks)
    assert sink.max_inflight == 2
    assert ledger.offset(1) == chunks[-1].end
