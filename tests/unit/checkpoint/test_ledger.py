"""Unit tests for kube_audit_shipper.checkpoint.ledger: per-sink acknowledged ranges -> the offset every sink holds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube_audit_shipper.checkpoint.ledger import Ledger


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, fid: int, offset: int) -> None:
        self.calls.append((fid, offset))


def make(sinks: tuple[str, ...] = ("s",), fid: int = 1, offset: int = 0) -> tuple[Ledger, Recorder]:
    rec = Recorder()
    ledger = Ledger(sinks, on_advance=rec)
    ledger.open(fid, offset)
    return ledger, rec


def test_open_sets_offset_and_unknown_fid_is_none() -> None:
    ledger, rec = make(offset=500)
    assert ledger.offset(1) == 500
    assert ledger.offset(2) is None
    assert rec.calls == []


def test_in_order_acks_advance() -> None:
    ledger, rec = make()
    ledger.ack("s", 1, 0, 10)
    ledger.ack("s", 1, 10, 25)
    assert ledger.offset(1) == 25
    assert rec.calls == [(1, 10), (1, 25)]


def test_out_of_order_ack_never_passes_a_gap() -> None:
    ledger, rec = make()
    batches = [(i * 100, (i + 1) * 100) for i in range(10)]
    for b in batches[:6]:  # batches 0..5
        ledger.ack("s", 1, *b)
    assert ledger.offset(1) == 600
    ledger.ack("s", 1, *batches[7])  # batch 7 before batch 6
    assert ledger.offset(1) == 600
    ledger.ack("s", 1, *batches[8])
    assert ledger.offset(1) == 600
    assert ledger.behind(1) == {"s": 2}
    ledger.ack("s", 1, *batches[6])  # the gap closes: 6, 7, 8 at once
    assert ledger.offset(1) == 900
    assert ledger.behind(1) == {"s": 0}
    assert rec.calls[-1] == (1, 900)
    assert [o for _, o in rec.calls] == [100, 200, 300, 400, 500, 600, 900]


def test_two_sinks_slower_one_bounds_the_offset() -> None:
    ledger, rec = make(("fast", "slow"))
    for i in range(5):
        ledger.ack("fast", 1, i * 10, (i + 1) * 10)
    assert ledger.offset(1) == 0
    assert rec.calls == []
    ledger.ack("slow", 1, 0, 20)
    assert ledger.offset(1) == 20
    ledger.ack("slow", 1, 30, 50)  # past a gap for the slow sink
    assert ledger.offset(1) == 20
    ledger.ack("slow", 1, 20, 30)
    assert ledger.offset(1) == 50
    ledger.ack("slow", 1, 50, 70)  # now the fast one is behind
    assert ledger.offset(1) == 50
    ledger.ack("fast", 1, 50, 70)
    assert ledger.offset(1) == 70
    assert rec.calls == [(1, 20), (1, 50), (1, 70)]


def test_ack_all_acknowledges_for_every_sink() -> None:
    ledger, rec = make(("a", "b", "c"))
    ledger.ack_all(1, 0, 40)
    assert ledger.offset(1) == 40
    ledger.ack("a", 1, 40, 60)
    ledger.ack("b", 1, 40, 60)
    assert ledger.offset(1) == 40
    ledger.ack_all(1, 60, 80)  # an empty chunk after a range c has not acked
    assert ledger.offset(1) == 40
    ledger.ack("c", 1, 40, 60)
    assert ledger.offset(1) == 80
    assert rec.calls == [(1, 40), (1, 80)]


def test_duplicate_and_overlapping_acks() -> None:
    ledger, rec = make()
    ledger.ack("s", 1, 0, 10)
    ledger.ack("s", 1, 0, 10)  # duplicate
    ledger.ack("s", 1, 5, 10)  # inside the prefix
    assert ledger.offset(1) == 10
    ledger.ack("s", 1, 5, 30)  # overlaps the prefix and extends it
    assert ledger.offset(1) == 30
    ledger.ack("s", 1, 50, 60)
    ledger.ack("s", 1, 50, 55)  # duplicate start, shorter: must not shrink the ahead range
    ledger.ack("s", 1, 40, 45)
    assert ledger.offset(1) == 30
    ledger.ack("s", 1, 30, 42)  # reaches into [40,45), which does not reach 50
    assert ledger.offset(1) == 45
    ledger.ack("s", 1, 45, 50)
    assert ledger.offset(1) == 60
    ledger.ack("s", 1, 70, 80)
    ledger.ack("s", 1, 65, 75)  # overlapping ranges ahead of a gap
    ledger.ack("s", 1, 60, 66)
    assert ledger.offset(1) == 80
    assert [o for _, o in rec.calls] == [10, 30, 45, 60, 80]


def test_ack_below_open_offset_is_ignored_and_overlap_extends() -> None:
    ledger, rec = make(offset=1000)
    ledger.ack("s", 1, 0, 500)
    assert ledger.offset(1) == 1000 and rec.calls == []
    ledger.ack("s", 1, 900, 1100)
    assert ledger.offset(1) == 1100


def test_closed_fid_is_ignored() -> None:
    ledger, rec = make()
    ledger.ack("s", 1, 0, 10)
    ledger.close(1)
    assert ledger.offset(1) is None
    ledger.ack("s", 1, 10, 20)
    ledger.ack_all(1, 20, 30)
    assert ledger.offset(1) is None
    assert rec.calls == [(1, 10)]
    assert ledger.behind(1) == {}
    ledger.close(1)  # closing twice is harmless


def test_files_are_independent() -> None:
    ledger, rec = make()
    ledger.open(2, 0)
    ledger.ack("s", 2, 0, 7)
    ledger.ack("s", 1, 3, 9)
    assert ledger.offset(1) == 0 and ledger.offset(2) == 7
    assert rec.calls == [(2, 7)]


def test_on_advance_only_when_offset_grows() -> None:
    ledger, rec = make(("a", "b"))
    ledger.ack("a", 1, 0, 10)  # min does not move
    ledger.ack("b", 1, 10, 20)  # ahead for b
    assert rec.calls == []
    ledger.ack("b", 1, 0, 10)  # b: 0..20, a: 0..10 -> 10
    assert rec.calls == [(1, 10)]
    ledger.ack("b", 1, 0, 20)  # nothing new
    ledger.ack("a", 1, 0, 5)
    assert rec.calls == [(1, 10)]


def test_no_callback_is_fine() -> None:
    ledger = Ledger(["s"])
    ledger.open(3, 0)
    ledger.ack("s", 3, 0, 4)
    assert ledger.offset(3) == 4


# -- property --------------------------------------------------------------------------------------


def covered_prefix(covered: list[bool]) -> int:
    n = 0
    for c in covered:
        if not c:
            break
        n += 1
    return n


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[str], list[tuple[str, int, int]]]:
    n = draw(st.integers(min_value=1, max_value=200))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=n - 1), max_size=30))) if n > 1 else []
    bounds = [0, *cuts, n]
    ranges = list(zip(bounds, bounds[1:]))
    nsinks = draw(st.integers(min_value=1, max_value=3))
    sinks = [f"s{i}" for i in range(nsinks)]
    seed = draw(st.integers(min_value=0, max_value=2**32))
    rnd = random.Random(seed)
    per_sink: list[list[tuple[str, int, int]]] = []
    for s in sinks:
        order = ranges[:]
        rnd.shuffle(order)
        acks = [(s, a, b) for a, b in order]
        # a few re-deliveries (at-least-once): duplicates of ranges already sent
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            a, b = rnd.choice(ranges)
            acks.insert(rnd.randrange(len(acks) + 1), (s, a, b))
        per_sink.append(acks)
    # interleave the sinks' sequences, each kept in its own order
    merged: list[tuple[str, int, int]] = []
    while any(per_sink):
        i = rnd.choice([k for k, q in enumerate(per_sink) if q])
        merged.append(per_sink[i].pop(0))
    return n, sinks, merged


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(scenarios())
def test_property_offset_is_common_covered_prefix(scenario: tuple[int, list[str], list[tuple[str, int, int]]]) -> None:
    n, sinks, acks = scenario
    rec = Recorder()
    ledger = Ledger(sinks, on_advance=rec)
    ledger.open(7, 0)
    covered = {s: [False] * n for s in sinks}
    last = 0
    for sink, a, b in acks:
        for x in range(a, b):
            covered[sink][x] = True
        ncalls = len(rec.calls)
        ledger.ack(sink, 7, a, b)
        expect = min(covered_prefix(covered[s]) for s in sinks)
        assert ledger.offset(7) == expect
        if expect > last:
            assert rec.calls[ncalls:] == [(7, expect)]
        else:
            assert len(rec.calls) == ncalls
        last = expect
    assert ledger.offset(7) == n
    offsets = [o for _, o in rec.calls]
    assert offsets == sorted(set(offsets))  # fired exactly when it grew, never twice for one value
    assert offsets[-1] == n


@pytest.mark.parametrize("seed", range(5))
def test_ack_all_mixed_with_sink_acks(seed: int) -> None:
    rnd = random.Random(seed)
    n = 300
    bounds = sorted({0, n, *rnd.sample(range(1, n), 40)})
    ranges = list(zip(bounds, bounds[1:]))
    sinks = ["a", "b"]
    ledger = Ledger(sinks)
    ledger.open(1, 0)
    covered = {s: [False] * n for s in sinks}
    events: list[tuple[str | None, int, int]] = []
    for a, b in ranges:
        if rnd.random() < 0.3:
            events.append((None, a, b))
        else:
            events.extend((s, a, b) for s in sinks)
    rnd.shuffle(events)
    for sink, a, b in events:
        for s in sinks if sink is None else [sink]:
            for x in range(a, b):
                covered[s][x] = True
        if sink is None:
            ledger.ack_all(1, a, b)
        else:
            ledger.ack(sink, 1, a, b)
        assert ledger.offset(1) == min(covered_prefix(covered[s]) for s in sinks)
    assert ledger.offset(1) == n
