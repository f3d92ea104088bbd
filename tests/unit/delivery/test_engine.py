"""Unit tests for kube_audit_shipper.delivery.runner.SinkRunner against the sink contract (delivery/contract.py).

Batching, exact acknowledgements, out-of-order completion, retries with full-jitter backoff and
Retry-After, Rejected/Blocked/Split outcomes, max_retry_age give-ups, the spool (ack after fsync,
drain, full), and finish() at shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery import sink_state as sink_state_mod
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.contract import (
    Blocked,
    Delivered,
    Outcome,
    Rejected,
    Reply,
    Request,
    Retry,
    Sink,
    Split,
    split_in_half,
)
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.delivery.spool import Spool
from kube_audit_shipper.model import Chunk
from tests.support.wait import until

MiB = 1 << 20
FAST_RETRY = RetryConfig(initial_ms=1, max_ms=5)
NEVER = 3_600_000  # max_wait_ms that never fires within a test


# -- test doubles ----------------------------------------------------------------------------------


def records_of(request: Request) -> list[bytes]:
    """The records a request carries, from its wire payload (NDJSON)."""
    return request.payload.split(b"\n")[:-1]


class MemSink(Sink):
    """An in-memory sink honouring the contract: encode one NDJSON request per batch (or per
    `per_request` records), send stores it unless `fail(records, attempt)` says to raise a connection
    error, classify maps a Reply to Delivered and an exception to Retry."""

    def __init__(
        self,
        name: str = "mem",
        max_concurrency: int | None = 1,
        fail: Callable[[list[bytes], int], bool] | None = None,
        delay: Callable[[], float] | None = None,
        per_request: int | None = None,
    ) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.fail = fail
        self.delay = delay
        self.per_request = per_request
        self.sent: list[list[bytes]] = []  # successful sends (requests), in completion order
        self.delivered: set[bytes] = set()
        self.attempts: dict[tuple[bytes, ...], int] = {}
        self.send_times: dict[tuple[bytes, ...], list[float]] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.closed = False

    def _request(self, records: list[bytes], indices: list[int]) -> Request:
        data = b"".join(records[i] + b"\n" for i in indices)
        return Request(payload=data, indices=indices, raw_bytes=len(data))

    def encode(self, records: list[bytes]) -> list[Request]:
        step = self.per_request or max(1, len(records))
        return [self._request(records, list(range(i, min(i + step, len(records))))) for i in range(0, len(records), step)]

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        halves = split_in_half(request)
        return [] if halves is None else [self._request(records, h) for h in halves]

    async def send(self, request: Request) -> Reply:
        payload = records_of(request)
        key = tuple(payload)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.send_times.setdefault(key, []).append(time.monotonic())
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.delay is not None:
                await asyncio.sleep(self.delay())
            if self.fail is not None and self.fail(payload, self.attempts[key]):
                raise ConnectionError(f"refused (attempt {self.attempts[key]})")
            self.store(payload)
            return Reply(200, {}, b"")
        finally:
            self.inflight -= 1

    def store(self, payload: list[bytes]) -> None:
        self.sent.append(payload)
        self.delivered.update(payload)

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        if isinstance(result, Reply):
            return Delivered()
        return Retry(f"{type(result).__name__}: {result}")

    async def aclose(self, deadline: float | None = None) -> None:
        self.closed = True


class ScriptSink(MemSink):
    """The backend's answer to each attempt is `answer(request, attempt) -> Outcome` (positions are the
    batch's, as the contract says). What it stores follows the answer: everything for Delivered, the
    records not named for Rejected(retry_rest=False), nothing otherwise. classify returns that answer."""

    def __init__(self, answer: Callable[[Request, int], Outcome], **kw: Any) -> None:
        super().__init__(**kw)
        self.answer = answer
        self._answers: list[Outcome] = []

    async def send(self, request: Request) -> Reply:
        payload = records_of(request)
        key = tuple(payload)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.send_times.setdefault(key, []).append(time.monotonic())
        outcome = self.answer(request, self.attempts[key])
        if isinstance(outcome, Delivered):
            self.store(payload)
        elif isinstance(outcome, Rejected) and not outcome.retry_rest:
            named = set(outcome.indices)
            kept = [r for i, r in zip(request.indices, payload) if i not in named]
            if kept:
                self.store(kept)
        self._answers.append(outcome)
        return Reply(200, {"x-answer": str(len(self._answers) - 1)}, b"")

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        assert isinstance(result, Reply)
        return self._answers[int(result.headers["x-answer"])]


class Model:
    """Chunks with known per-record input ranges, and a checker for the at-least-once invariant."""

    def __init__(self, seed: int = 0) -> None:
        self.rnd = random.Random(seed)
        self.next_off: dict[int, int] = {}
        self.range_of: dict[bytes, tuple[int, int, int]] = {}  # record -> (fid, start, end)
        self.chunks: list[Chunk] = []
        self.n = 0

    def chunk(self, fid: int, sizes: list[int], folded: bool = True, noisy: bool = False) -> Chunk:
        """A chunk of records with the given byte sizes; some records absorb skipped lines before them.
        `noisy`: the padding is random base64 (hardly compressible) instead of x's."""
        start = self.next_off.get(fid, 0)
        pos = start
        records, ends = [], []
        for size in sizes:
            tag = b'{"r":%d,"p":"' % self.n
            self.n += 1
            pad = max(0, size - len(tag) - 2)
            filler = base64.b64encode(self.rnd.randbytes(pad))[:pad] if noisy else b"x" * pad
            rec = tag + filler + b'"}'
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


def runner_for(
    sink: MemSink,
    ledger: Ledger,
    dl: DeadLetterStore,
    *,
    batch: BatchConfig,
    retry: RetryConfig = FAST_RETRY,
    concurrency: int = 1,
    spool: Spool | None = None,
    metrics: Any = None,
) -> SinkRunner:
    return SinkRunner(sink, batch=batch, retry=retry, concurrency=concurrency, ledger=ledger, deadletter=dl, spool=spool, metrics=metrics)


async def run_all(runner: SinkRunner, chunks: list[Chunk], timeout: float = 10.0) -> None:
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await runner.stop()
    await asyncio.wait_for(task, timeout)
    await asyncio.wait_for(runner.finish(None, drain_spool=True), timeout)


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


def all_records(chunks: list[Chunk]) -> list[bytes]:
    return [r for c in chunks for r in c.records]


def dead(dl: DeadLetterStore) -> list[dict[str, Any]]:
    dl.sync()
    return list(dl.iter_records())


def track_dead(dl: DeadLetterStore) -> set[bytes]:
    """The events handed to the dead-letter store so far, kept up to date (for the ledger checks)."""
    events: set[bytes] = set()
    orig = dl.add

    def add(**kw: Any) -> None:
        events.add(kw["event"])
        orig(**kw)

    dl.add = add  # type: ignore[method-assign]
    return events


# -- batching --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_batches_by_max_events_within_one_chunk(dl: DeadLetterStore) -> None:
    model = Model(1)
    c = model.chunk(1, [50 + 7 * i for i in range(10)])
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=3, max_bytes=MiB, max_wait_ms=NEVER)), [c])
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
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=4, max_bytes=MiB, max_wait_ms=NEVER))
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
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=1000, max_bytes=max_bytes, max_wait_ms=NEVER)), [c])
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
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=1024, max_wait_ms=NEVER)), [c])
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
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=1024, max_wait_ms=NEVER)), chunks)
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

    async def send(request: Request) -> Reply:
        if second in records_of(request):
            offsets_during_failures.append(ledger.offset(1))
        return await orig_send(request)

    sink.send = send  # type: ignore[method-assign]
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=1024, max_wait_ms=NEVER)), [c1, c2])
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

    async def send(request: Request) -> Reply:
        reply = await orig(request)
        sent.set()
        return reply

    sink.send = send  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=MiB, max_wait_ms=150))
    task = asyncio.get_running_loop().create_task(runner.run())
    t0 = time.monotonic()
    runner.queue.put_nowait(c)
    await asyncio.sleep(0.02)  # nothing may be sent in these 20 ms (of the 150 ms max_wait)
    assert sink.sent == []  # not yet: neither full nor old
    await asyncio.wait_for(sent.wait(), 5)
    assert time.monotonic() - t0 >= 0.14
    assert sink.sent == [c.records]
    await until(lambda: ledger.offset(1) == c.end, what="the ack")
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

    async def send(request: Request) -> Reply:
        reply = await orig(request)
        sent.set()
        return reply

    sink.send = send  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    batch = (
        BatchConfig(max_events=4, max_bytes=MiB, max_wait_ms=NEVER) if limit == "events" else BatchConfig(max_events=1000, max_bytes=1024, max_wait_ms=NEVER)
    )
    runner = runner_for(sink, ledger, dl, batch=batch)
    task = asyncio.get_running_loop().create_task(runner.run())
    runner.queue.put_nowait(c)
    await asyncio.wait_for(sent.wait(), 5)  # neither stop nor max_wait: the batch was full
    assert sink.sent == [c.records]
    await runner.stop()
    await asyncio.wait_for(task, 5)
    await until(lambda: ledger.offset(1) == c.end, what="the ack")


@pytest.mark.asyncio
async def test_stop_flushes_the_pending_batch(dl: DeadLetterStore) -> None:
    model = Model(8)
    chunks = [model.chunk(1, [100] * 3), model.chunk(1, [100] * 2)]
    sink = MemSink()
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    await run_all(runner_for(sink, ledger, dl, batch=BatchConfig(max_events=1000, max_bytes=MiB, max_wait_ms=NEVER)), chunks)
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
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=4, max_bytes=MiB, max_wait_ms=NEVER), concurrency=1)
    await run_all(runner, chunks)
    assert sink.sent == [c.records for c in chunks]
    assert all(n == 4 for n in sink.attempts.values())
    assert runner.retries == 3 * len(chunks)
    assert runner.last_error is not None and "ConnectionError" in runner.last_error
    assert runner.state == "ok"
    check_exact_acks(model, sink, ledger)  # each ack came after its batch's successful send
    assert ledger.violations == []
    assert ledger.offset(1) == chunks[-1].end
    assert dead(dl) == []
    assert runner.gave_up_events == 0


@pytest.mark.asyncio
async def test_retry_after_is_honoured_over_a_shorter_backoff(dl: DeadLetterStore) -> None:
    """429 with Retry-After: the next attempt waits at least that long even though the backoff is 1-5 ms."""
    model = Model(20)
    c = model.chunk(1, [90, 90])
    sink = ScriptSink(lambda req, attempt: Retry("HTTP 429", after_s=0.25) if attempt <= 2 else Delivered())
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=10, max_bytes=MiB, max_wait_ms=NEVER))
    await run_all(runner, [c])
    (times,) = sink.send_times.values()
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) == 2 and all(g >= 0.24 for g in gaps), gaps
    assert sink.sent == [c.records] and ledger.offset(1) == c.end
    # without Retry-After the same outcome retries within the 5 ms cap (plus scheduling)
    model2 = Model(21)
    c2 = model2.chunk(1, [90])
    sink2 = ScriptSink(lambda req, attempt: Retry("HTTP 503") if attempt <= 2 else Delivered(), name="other")
    ledger2 = SpyLedger([sink2], model2)
    ledger2.open(1, 0)
    await run_all(runner_for(sink2, ledger2, dl, batch=BatchConfig(max_events=10, max_bytes=MiB, max_wait_ms=NEVER)), [c2])
    (times2,) = sink2.send_times.values()
    assert all(b - a < 0.15 for a, b in pairwise(times2)), times2


@pytest.mark.asyncio
async def test_backoff_is_exponential_with_full_jitter_and_a_cap(dl: DeadLetterStore) -> None:
    random.seed(20261122)  # tenacity's jitter uses the global random module
    model = Model(22)
    c = model.chunk(1, [90])
    failures = 9
    sink = MemSink(fail=lambda payload, attempt: attempt <= failures)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    retry = RetryConfig(initial_ms=8, max_ms=60, multiplier=2.0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=10, max_bytes=MiB, max_wait_ms=NEVER), retry=retry)
    drawn: list[tuple[int, float]] = []
    orig_jitter = runner.backoff.jitter_s

    def jitter(attempt: int) -> float:
        value = orig_jitter(attempt)
        drawn.append((attempt, value))
        return value

    runner.backoff.jitter_s = jitter  # type: ignore[method-assign]
    await run_all(runner, [c])
    assert [n for n, _ in drawn] == list(range(1, failures + 1))
    caps = [min(0.060, 0.008 * 2 ** (n - 1)) for n in range(1, failures + 1)]
    assert all(0 <= v <= cap for (_, v), cap in zip(drawn, caps)), (drawn, caps)
    fractions = [v / cap for (_, v), cap in zip(drawn, caps)]
    assert min(fractions) < 0.5 < max(fractions), fractions  # full jitter: anywhere in [0, cap]
    (times,) = sink.send_times.values()
    gaps = [b - a for a, b in pairwise(times)]
    assert all(g >= v - 0.002 for g, (_, v) in zip(gaps, drawn)), (gaps, drawn)  # the drawn delay is slept
    assert runner.retries == failures


@pytest.mark.asyncio
async def test_give_up_after_max_retry_age_dead_letters_and_acknowledges(dl: DeadLetterStore) -> None:
    model = Model(10)
    chunks = [model.chunk(1, [60, 70, 80]), model.chunk(1, [90, 100])]
    sink = MemSink(name="broken", max_concurrency=4, fail=lambda payload, attempt: True)
    gave_up = track_dead(dl)
    ledger = SpyLedger([sink], model, extra_done=lambda: gave_up)
    ledger.open(1, 0)
    retry = RetryConfig(initial_ms=1, max_ms=5, max_retry_age_s=1)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=3, max_bytes=MiB, max_wait_ms=NEVER), retry=retry, concurrency=4)
    t0 = time.monotonic()
    await run_all(runner, chunks, timeout=15)
    assert time.monotonic() - t0 >= 1.0
    assert sink.sent == []
    assert all(n >= 2 for n in sink.attempts.values())
    recs = dead(dl)
    assert sorted(r["event"].encode() for r in recs) == sorted(all_records(chunks))
    for r in recs:
        assert r["sink"] == "broken"
        assert "gave up" in r["reason"] and "ConnectionError" in r["reason"]
    assert runner.gave_up_events == 5
    assert runner.shipped_events == 0
    assert ledger.offset(1) == chunks[-1].end
    assert ledger.violations == []


# -- the other outcomes ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rejected_records_are_dead_lettered_with_the_backend_reason_and_the_rest_delivered(dl: DeadLetterStore) -> None:
    model = Model(23)
    chunks = [model.chunk(1, [70 + i for i in range(6)]) for _ in range(3)]
    bad = {chunks[0].records[1], chunks[0].records[4], chunks[2].records[0]}

    def answer(req: Request, attempt: int) -> Outcome:
        named = {i: f"field too long ({len(r)} bytes)" for i, r in zip(req.indices, records_of(req)) if r in bad}
        return Rejected("HTTP 400: records rejected", indices=sorted(named), reasons=named) if named else Delivered()

    sink = ScriptSink(answer)
    dead_events = track_dead(dl)
    ledger = SpyLedger([sink], model, extra_done=lambda: dead_events)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=6, max_bytes=MiB, max_wait_ms=NEVER))
    await run_all(runner, chunks)
    recs = dead(dl)
    assert dead_events == bad
    assert sorted(r["event"].encode() for r in recs) == sorted(bad)
    for r in recs:
        assert r["sink"] == "mem"
        assert r["reason"] == f"sink mem: field too long ({len(r['event'])} bytes)"
    assert sink.delivered == set(all_records(chunks)) - bad
    assert all(n == 1 for n in sink.attempts.values())  # a permanent rejection is not retried
    assert runner.rejected_events == 3 and runner.shipped_events == 18 - 3 and runner.retries == 0
    assert ledger.offset(1) == chunks[-1].end
    assert ledger.violations == []


@pytest.mark.asyncio
async def test_rejected_with_retry_rest_sends_the_others_again_keeping_batch_positions(dl: DeadLetterStore) -> None:
    """The backend refused the whole request because of two records: those are dead-lettered, the others
    are re-encoded and sent again; positions of a re-encoded subset still name the batch's records."""
    model = Model(24)
    c = model.chunk(1, [80 + i for i in range(8)])
    bad = {c.records[2], c.records[5]}

    def answer(req: Request, attempt: int) -> Outcome:
        named = [i for i, r in zip(req.indices, records_of(req)) if r in bad]
        if named:
            return Rejected("HTTP 400: bad records, nothing stored", indices=named, retry_rest=True)
        if len(req.indices) == 6 and attempt == 1:  # the resent rest fails once more: retried, not lost
            return Retry("HTTP 503")
        return Delivered()

    sink = ScriptSink(answer)
    dead_events = track_dead(dl)
    ledger = SpyLedger([sink], model, extra_done=lambda: dead_events)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=8, max_bytes=MiB, max_wait_ms=NEVER))
    await run_all(runner, [c])
    assert sorted(r["event"].encode() for r in dead(dl)) == sorted(bad)
    assert sink.sent == [[r for r in c.records if r not in bad]]
    assert runner.shipped_events == 6 and runner.rejected_events == 2 and runner.retries == 1
    assert ledger.offset(1) == c.end
    assert ledger.violations == []


@pytest.mark.asyncio
async def test_split_sends_halves_and_dead_letters_a_single_record_too_large(dl: DeadLetterStore) -> None:
    model = Model(25)
    c = model.chunk(1, [100] * 6 + [3000] + [100])
    limit = 350  # bytes per request the backend takes

    def answer(req: Request, attempt: int) -> Outcome:
        return Split("HTTP 413") if len(req.payload) > limit else Delivered()

    sink = ScriptSink(answer)
    huge = c.records[6]
    dead_events = track_dead(dl)
    ledger = SpyLedger([sink], model, extra_done=lambda: dead_events)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=100, max_bytes=MiB, max_wait_ms=NEVER))
    await run_all(runner, [c])
    assert sorted(r for b in sink.sent for r in b) == sorted(set(c.records) - {huge})
    assert all(sum(len(r) + 1 for r in b) <= limit for b in sink.sent)
    assert [r for b in sink.sent for r in b] == [r for r in c.records if r != huge]  # halves in order
    (rec,) = dead(dl)
    assert rec["event"].encode() == huge and "too large" in rec["reason"] and "413" in rec["reason"]
    assert runner.rejected_events == 1 and runner.shipped_events == 7 and runner.retries == 0
    assert ledger.offset(1) == c.end
    assert ledger.violations == []


@pytest.mark.asyncio
async def test_a_batch_of_several_requests_is_acknowledged_after_all_and_done_requests_are_not_resent(dl: DeadLetterStore) -> None:
    model = Model(26)
    c = model.chunk(1, [80] * 9)
    third = c.records[6]
    sink = MemSink(per_request=3, fail=lambda payload, attempt: third in payload and attempt <= 3)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=9, max_bytes=MiB, max_wait_ms=NEVER))
    offsets: list[int | None] = []
    orig = sink.send

    async def send(request: Request) -> Reply:
        offsets.append(ledger.offset(1))
        return await orig(request)

    sink.send = send  # type: ignore[method-assign]
    await run_all(runner, [c])
    assert sink.sent == [c.records[0:3], c.records[3:6], c.records[6:9]]
    assert sorted(sink.attempts.values()) == [1, 1, 4]
    assert offsets and all(o == 0 for o in offsets)  # nothing acknowledged while a request of the batch was open
    assert [(a, b) for _, _, _, a, b in ledger.acks] == [(c.start, c.end)]
    assert ledger.offset(1) == c.end


@pytest.mark.asyncio
async def test_blocked_waits_max_ms_logs_once_per_interval_keeps_data_then_recovers(
    dl: DeadLetterStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sink_state_mod, "BLOCKED_LOG_INTERVAL_S", 0.3)
    caplog.set_level(logging.INFO, logger="kube_audit_shipper.delivery.runner")
    model = Model(27)
    chunks = [model.chunk(1, [90, 90]), model.chunk(1, [90, 90])]
    blocked_until = [float("inf")]
    sink = ScriptSink(lambda req, attempt: Blocked("HTTP 401: invalid access key") if time.monotonic() < blocked_until[0] else Delivered())
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    retry = RetryConfig(initial_ms=1, max_ms=40)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), retry=retry)
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await runner.stop()
    blocked_at = time.monotonic()
    await until(lambda: runner.state == "blocked", what="blocked state")
    await asyncio.sleep(0.5)  # nothing may be acknowledged or given up in 0.5 s of blocked attempts
    assert runner.state == "blocked" and runner.blocked_since is not None
    assert ledger.offset(1) == 0 and ledger.acks == [] and sink.sent == []  # data kept, nothing acknowledged
    blocked_until[0] = max(blocked_at + 1.0, time.monotonic())  # the backend is fixed ~1 s after the first attempt, never before these checks
    await asyncio.wait_for(task, 10)
    await asyncio.wait_for(runner.finish(None), 10)
    assert runner.state == "ok" and runner.blocked_since is None
    assert sink.sent == [c.records for c in chunks]
    assert dead(dl) == []
    assert ledger.offset(1) == chunks[-1].end
    (times,) = [t for k, t in sink.send_times.items() if list(k) == chunks[0].records]
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) >= 10 and all(g >= 0.038 for g in gaps), gaps  # max_ms between attempts, not the 1 ms backoff
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "blocked" in r.getMessage()]
    assert 2 <= len(errors) <= 5, [r.getMessage() for r in errors]  # ~1 s blocked, one per 0.3 s interval
    assert all(getattr(r, "reason", None) == "HTTP 401: invalid access key" for r in errors)
    assert any("unblocked" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.getMessage()]


@pytest.mark.asyncio
async def test_blocked_data_is_given_up_only_through_max_retry_age(dl: DeadLetterStore) -> None:
    model = Model(28)
    c = model.chunk(1, [90, 91, 92])
    sink = ScriptSink(lambda req, attempt: Blocked("HTTP 404: logstore missing"))
    dead_events = track_dead(dl)
    ledger = SpyLedger([sink], model, extra_done=lambda: dead_events)
    ledger.open(1, 0)
    retry = RetryConfig(initial_ms=1, max_ms=50, max_retry_age_s=1)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=10, max_bytes=MiB, max_wait_ms=NEVER), retry=retry)
    await run_all(runner, [c], timeout=10)
    recs = dead(dl)
    assert sorted(r["event"].encode() for r in recs) == sorted(c.records)
    assert all("gave up after retry.max_retry_age_s=1" in r["reason"] and "logstore missing" in r["reason"] for r in recs)
    assert runner.gave_up_events == 3 and runner.shipped_events == 0
    assert ledger.offset(1) == c.end
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
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=5, max_bytes=MiB, max_wait_ms=NEVER), concurrency=4)
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

    async def send(request: Request) -> Reply:
        payload = records_of(request)
        fut: asyncio.Future[None] = loop.create_future()
        pending.append((payload, fut))
        await fut
        sink.store(payload)
        return Reply(200, {}, b"")

    sink.send = send  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), concurrency=4)
    task = loop.create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await runner.stop()

    rnd = random.Random(seed)
    total = len(chunks)
    completed = 0
    out_of_order = 0
    done: set[bytes] = set()
    while completed < total:
        in_flight = min(4, total - completed)
        await until(lambda n=in_flight: len(pending) == n, what="4 batches in flight")
        assert len(pending) <= 4
        k = rnd.randrange(len(pending))
        if k != 0:
            out_of_order += 1
        payload, fut = pending.pop(k)
        acks_before = len(ledger.acks)
        fut.set_result(None)
        await until(lambda n=acks_before + 1: len(ledger.acks) == n, what="the ack")
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
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), concurrency=8)
    assert runner.concurrency == 2
    await run_all(runner, chunks)
    assert sink.max_inflight == 2
    assert ledger.offset(1) == chunks[-1].end


# -- spool -----------------------------------------------------------------------------------------


def spool_at(tmp_path: Path, name: str = "s", max_bytes: int = 8 * MiB) -> Spool:
    return Spool(tmp_path / "spool" / name, max_bytes=max_bytes, segment_bytes=min(max_bytes, MiB))


def track_appends(spool: Spool) -> set[bytes]:
    """The records of every batch whose spool append returned (is fsynced), kept up to date."""
    done: set[bytes] = set()
    orig = spool.append

    def append(payload: bytes, meta: bytes = b"") -> Any:
        rid = orig(payload, meta)
        done.update(payload.split(b"\n"))
        return rid

    spool.append = append  # type: ignore[method-assign]
    return done


@pytest.mark.asyncio
async def test_failing_sink_spools_batches_acknowledged_after_fsync_then_drains_in_order(dl: DeadLetterStore, tmp_path: Path) -> None:
    model = Model(30)
    chunks = [model.chunk(1, [120] * 3) for _ in range(12)]
    down = [True]
    sink = MemSink(max_concurrency=4, fail=lambda payload, attempt: down[0])
    spool = spool_at(tmp_path)
    appended: list[bytes] = []
    orig_append = spool.append

    def append(payload: bytes, meta: bytes = b"") -> Any:
        rid = orig_append(payload, meta)
        appended.append(payload)  # fsynced: append returned
        return rid

    spool.append = append  # type: ignore[method-assign]
    ledger = SpyLedger([sink], model, extra_done=lambda: {r for p in appended for r in p.split(b"\n")})
    ledger.open(1, 0)
    acked_before_append: list[tuple[int, int]] = []
    orig_ack = ledger.ack

    def ack(sink_name: str, fid: int, start: int, end: int) -> None:
        recs = {r for r, (f, a, b) in model.range_of.items() if f == fid and start <= a and b <= end}
        if not recs <= ({r for p in appended for r in p.split(b"\n")} | sink.delivered):
            acked_before_append.append((start, end))
        orig_ack(sink_name, fid, start, end)

    ledger.ack = ack  # type: ignore[method-assign]
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=3, max_bytes=MiB, max_wait_ms=NEVER), concurrency=4, spool=spool)
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await until(lambda: runner.spooled_batches >= 8, what="batches spooled while the sink is down")
    assert runner.state == "retrying"
    assert spool.unacked_count == runner.spooled_batches
    assert sink.sent == []
    down[0] = False
    await runner.stop()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(runner.finish(None, drain_spool=True), 10)
    assert acked_before_append == []
    assert ledger.violations == []
    assert sorted(r for b in sink.sent for r in b) == sorted(all_records(chunks))
    spooled_sends = [b for b in sink.sent if b"\n".join(b) in appended]
    assert len(spooled_sends) == runner.spooled_batches
    # the drainer sends them in spool order, up to `concurrency` (4) at a time: each send is one of the
    # 4 oldest spooled batches not sent yet
    pending = [p.split(b"\n") for p in appended]
    for sent in spooled_sends:
        assert sent in pending[:4], "a spooled batch was sent before an older one outside the concurrency window"
        pending.remove(sent)
    assert ledger.offset(1) == chunks[-1].end
    reopened = spool_at(tmp_path)
    try:
        assert reopened.unacked_count == 0  # every delivered spool record was acked durably at close
    finally:
        reopened.close()


@pytest.mark.asyncio
async def test_full_spool_holds_the_batcher_until_room_then_nothing_is_lost(dl: DeadLetterStore, tmp_path: Path) -> None:
    model = Model(31)
    chunks = [model.chunk(1, [400] * 5, noisy=True) for _ in range(20)]
    down = [True]
    sink = MemSink(max_concurrency=1, fail=lambda payload, attempt: down[0])
    spool = Spool(tmp_path / "spool" / "tiny", max_bytes=6000, segment_bytes=3000)
    spooled = track_appends(spool)
    ledger = SpyLedger([sink], model, extra_done=lambda: spooled)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=5, max_bytes=MiB, max_wait_ms=NEVER), spool=spool)
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await until(lambda: runner.spool_full_waits >= 2, what="a full spool")
    assert 2 <= runner.spooled_batches < 19 and spool.bytes_used <= 6000
    held = runner.queue.qsize()
    assert held > 0  # the batcher waits: chunks stay queued (the reader is then held by the memory budget)
    await asyncio.sleep(0.3)  # nothing may be taken from the queue or spooled while the spool is full
    assert runner.queue.qsize() == held and spool.bytes_used <= 6000
    offset_while_full = ledger.offset(1)
    assert offset_while_full is not None and offset_while_full < chunks[-1].end
    down[0] = False
    await runner.stop()
    await asyncio.wait_for(task, 10)
    await asyncio.wait_for(runner.finish(None, drain_spool=True), 10)
    assert sorted(r for b in sink.sent for r in b) == sorted(all_records(chunks))
    assert ledger.offset(1) == chunks[-1].end
    assert ledger.violations == []
    assert dead(dl) == []


@pytest.mark.asyncio
async def test_finish_spools_batches_still_in_flight_and_acknowledges_them(dl: DeadLetterStore, tmp_path: Path) -> None:
    model = Model(32)
    chunks = [model.chunk(1, [100] * 2) for _ in range(2)]
    sink = MemSink(max_concurrency=2, fail=lambda payload, attempt: True)
    spool = spool_at(tmp_path)
    spooled = track_appends(spool)
    ledger = SpyLedger([sink], model, extra_done=lambda: spooled)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), concurrency=2, spool=spool)
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await until(lambda: len(sink.attempts) >= 1, what="a send")
    await runner.stop()
    await asyncio.wait_for(task, 5)
    assert ledger.offset(1) < chunks[-1].end
    abandoned = await asyncio.wait_for(runner.finish(0.1), 5)
    assert abandoned == 0
    assert spooled == set(all_records(chunks))
    assert ledger.offset(1) == chunks[-1].end
    assert ledger.violations == []
    reopened = spool_at(tmp_path)
    try:
        got = []
        after = None
        while recs := reopened.next_unacked(10, after=after):
            got.extend(r for rec in recs for r in rec.payload.split(b"\n"))
            after = recs[-1].id
        assert sorted(set(got)) == sorted(all_records(chunks))
    finally:
        reopened.close()


@pytest.mark.asyncio
async def test_finish_without_spool_abandons_unacknowledged(dl: DeadLetterStore) -> None:
    model = Model(33)
    chunks = [model.chunk(1, [100] * 2) for _ in range(2)]
    sink = MemSink(max_concurrency=2, fail=lambda payload, attempt: True)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), concurrency=2)
    task = asyncio.get_running_loop().create_task(runner.run())
    for c in chunks:
        runner.queue.put_nowait(c)
    await runner.stop()
    await asyncio.wait_for(task, 5)
    t0 = time.monotonic()
    assert await asyncio.wait_for(runner.finish(0.2), 5) == 2
    assert time.monotonic() - t0 < 2
    assert ledger.offset(1) == 0 and ledger.acks == []
    assert ledger.violations == []


@pytest.mark.asyncio
async def test_spool_never_lets_a_concurrency_one_sink_see_two_requests_at_once_or_out_of_order(dl: DeadLetterStore, tmp_path: Path) -> None:
    """A sink with max_concurrency=1 (a backend that must see batches in order, e.g. Loki streams) and a
    spool: the batcher may hand batches to the spool while one is in flight, but the spool drainer must
    not send them alongside that batch (or before it)."""
    model = Model(34)
    chunks = [model.chunk(1, [90] * 2) for _ in range(10)]
    sink = MemSink(max_concurrency=1, delay=lambda: 0.02)
    ledger = SpyLedger([sink], model)
    ledger.open(1, 0)
    runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), concurrency=4, spool=spool_at(tmp_path))
    assert runner.concurrency == 1
    await run_all(runner, chunks)
    assert sorted(r for b in sink.sent for r in b) == sorted(all_records(chunks))
    assert sink.max_inflight == 1, f"{sink.max_inflight} requests in flight at once to a max_concurrency=1 sink"
    assert [r for b in sink.sent for r in b] == all_records(chunks), "batches reached the sink out of order"


@pytest.mark.asyncio
async def test_a_busy_healthy_sink_with_a_spool_keeps_its_configured_concurrency(dl: DeadLetterStore, tmp_path: Path) -> None:
    """A sink that keeps up at concurrency 4 must not drop to one request at a time because a spool is
    configured: once every slot was busy, batches go to the spool and a single drainer sends them one by
    one, so a burst takes ~4x longer (and the spool, then the reader, fall behind a sink that could keep up)."""
    model = Model(35)
    chunks = [model.chunk(1, [90] * 2) for _ in range(32)]
    latency = 0.1

    async def burst(spool: Spool | None) -> tuple[float, int]:
        sink = MemSink(max_concurrency=None, delay=lambda: latency)
        ledger = SpyLedger([sink], model)
        ledger.open(1, 0)
        runner = runner_for(sink, ledger, dl, batch=BatchConfig(max_events=2, max_bytes=MiB, max_wait_ms=NEVER), concurrency=4, spool=spool)
        t0 = time.monotonic()
        await run_all(runner, chunks, timeout=30)
        assert sorted(r for b in sink.sent for r in b) == sorted(all_records(chunks))
        return time.monotonic() - t0, sink.max_inflight

    plain, plain_inflight = await burst(None)
    spooled, _ = await burst(spool_at(tmp_path))
    assert plain_inflight == 4 and plain < 32 / 4 * latency * 2
    assert spooled < 2 * plain, f"32 batches of a 100 ms sink at concurrency 4: {plain:.2f}s without a spool, {spooled:.2f}s with one"
