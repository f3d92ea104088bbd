"""Unit tests for kube_audit_shipper.delivery.spool: order, acks, restart, torn tails, corruption, bounds, roll-over."""

from __future__ import annotations

import logging
import os
import random
import shutil
import threading
from pathlib import Path

import pytest

from kube_audit_shipper.delivery import spool as spool_mod
from kube_audit_shipper.delivery.spool import (
    RECORD_OVERHEAD,
    SEGMENT_HEADER_SIZE,
    RecordId,
    RecordTooLargeError,
    Spool,
    SpoolFullError,
)
from kube_audit_shipper.errors import StateError


def text_payload(n: int, size: int = 2000) -> bytes:
    """Compressible NDJSON-like payload that names its number."""
    line = b'{"n":%d,"verb":"get","uri":"/api/v1/namespaces/default/pods"}\n' % n
    return (line * (size // len(line) + 1))[:size]


def noise(n: int, size: int) -> bytes:
    """Incompressible payload (stored as is, so its on-disk size is exact)."""
    return random.Random(n).randbytes(size)


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.spool"))


def read_all(sp: Spool) -> list[tuple[RecordId, bytes, bytes]]:
    out, after = [], None
    while batch := sp.next_unacked(3, after=after):
        out.extend((r.id, r.meta, r.payload) for r in batch)
        after = batch[-1].id
    return out


def crash_image(src: Path, dst: Path) -> Path:
    """What a crash right now would leave: the files as the kernel has them (the lock is not copied held)."""
    shutil.copytree(src, dst)
    return dst


def test_round_trip_in_order_with_paging(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", max_bytes=1 << 20) as sp:
        items = [(text_payload(i, 500 + 300 * i), b'{"i":%d}' % i) for i in range(8)]
        items.append((noise(99, 3000), b""))  # incompressible: stored raw
        items.append((b"", b"empty"))
        ids = [sp.append(p, m) for p, m in items[:5]] + sp.append_many(items[5:])
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        got = read_all(sp)
        assert [(m, p) for _, m, p in got] == [(m, p) for p, m in items]
        assert [i for i, _, _ in got] == ids
        assert [r.id for r in sp.next_unacked(2)] == ids[:2]  # not consumed: reading is not acking
        assert sp.unacked_count == len(items)


def test_append_many_fsyncs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Spool(tmp_path / "s", max_bytes=1 << 20) as sp:
        sp.append(b"first")  # creates the segment
        calls: list[int] = []
        real = os.fsync
        monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
        sp.append_many([(text_payload(i), b"") for i in range(10)])
        assert len(calls) == 1
        monkeypatch.undo()


def test_out_of_order_acks_delete_segments_only_when_fully_acked(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, max_bytes=1 << 20, segment_bytes=3 * (RECORD_OVERHEAD + 1000) + SEGMENT_HEADER_SIZE) as sp:
        ids = [sp.append(noise(i, 1000)) for i in range(12)]  # 3 records per segment -> 4 segments
        assert len({i.segment for i in ids}) == 4 and len(segments(d)) == 4
        order = ids[:]
        random.Random(7).shuffle(order)
        for n, rid in enumerate(order, 1):
            sp.ack(rid)
            sp.flush_acks()
            acked = set(order[:n])
            expect = {i.segment for i in ids if i not in acked} | {ids[-1].segment}  # + the one being written
            assert {int(p.stem) for p in segments(d)} == expect
            assert [r.id for r in sp.next_unacked(100)] == [i for i in ids if i not in acked]
        assert sp.bytes_used == SEGMENT_HEADER_SIZE + 3 * (RECORD_OVERHEAD + 1000)  # only the active is live
        assert sp.ack(ids[0]) is False  # acking twice, even after deletion, is a no-op
        with pytest.raises(ValueError):
            sp.ack(RecordId(ids[-1].segment + 5, 0))
    assert segments(d) == []  # closing with everything acked reclaims the last segment too


def test_ack_reports_when_flush_is_due(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=4096, ack_flush_every=3) as sp:
        ids = [sp.append(noise(i, 1500)) for i in range(4)]  # 2 per segment
        assert [sp.ack(ids[i]) for i in (2, 0)] == [False, False]
        assert sp.ack(ids[1]) is True  # third ack, and segment 0 is fully acked


def test_restart_replays_unacked_in_order(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, max_bytes=1 << 20, segment_bytes=4096) as sp:
        ids = [sp.append(text_payload(i, 3000), b"%d" % i) for i in range(10)]
        for i in (0, 1, 4, 7):
            sp.ack(ids[i])
    with Spool(d, max_bytes=1 << 20, segment_bytes=4096) as sp:
        got = read_all(sp)
        assert [m for _, m, _ in got] == [b"%d" % i for i in (2, 3, 5, 6, 8, 9)]
        assert [p for _, _, p in got] == [text_payload(i, 3000) for i in (2, 3, 5, 6, 8, 9)]
        assert sp.stats["replayed_records"] == 6
        new = sp.append(b"after restart")
        assert new > got[-1][0]  # ids keep increasing across restarts
        assert [r.payload for r in sp.next_unacked(10)][-1] == b"after restart"


def test_ack_durability_follows_flush(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, max_bytes=1 << 20) as sp:
        ids = [sp.append(b"r%d" % i) for i in range(6)]
        sp.ack(ids[1])
        sp.ack(ids[3])
        sp.flush_acks()
        sp.ack(ids[4])  # not flushed: may replay after a crash (at-least-once), must not be lost
        img = crash_image(d, tmp_path / "crash")
    with Spool(img, max_bytes=1 << 20) as sp:
        assert [r.payload for r in sp.next_unacked(10)] == [b"r0", b"r2", b"r4", b"r5"]
    (img / "acks").write_bytes(b"garbage")
    with Spool(img, max_bytes=1 << 20) as sp:  # an unreadable cursor only costs duplicates
        assert [r.payload for r in sp.next_unacked(10)] == [b"r%d" % i for i in range(6)]


def test_seqs_are_not_reused_after_everything_was_acked_and_reclaimed(tmp_path: Path) -> None:
    """The cursor still lists acked seqs of reclaimed segments; a reused seq would make a new record 'acked'."""
    d = tmp_path / "s"
    with Spool(d, max_bytes=1 << 20) as sp:
        for rid in [sp.append(b"old%d" % i) for i in range(3)]:
            sp.ack(rid)
        sp.flush_acks()  # cursor: seqs 0..2 acked; the active segment still holds them
        img = crash_image(d, tmp_path / "crash1")
    with Spool(img, max_bytes=1 << 20) as sp:
        assert sp.next_unacked(10) == [] and segments(img) == []  # reclaimed on open, cursor not rewritten
    with Spool(img, max_bytes=1 << 20) as sp:  # no segment left: only the cursor knows seqs 0..2 were used
        sp.append(b"new")
        img2 = crash_image(img, tmp_path / "crash2")
    with Spool(img2, max_bytes=1 << 20) as sp:
        assert [r.payload for r in sp.next_unacked(10)] == [b"new"]


def test_second_opener_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", max_bytes=1 << 20), pytest.raises(StateError, match="already open"):
        Spool(tmp_path / "s", max_bytes=1 << 20)
    Spool(tmp_path / "s", max_bytes=1 << 20).close()


def test_torn_tail_at_every_byte_of_last_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with Spool(src, max_bytes=1 << 20) as sp:
        sp.append(text_payload(1), b"m1")
        sp.append(noise(2, 100), b"m2")
        (seg,) = segments(src)
        boundary = seg.stat().st_size
        sp.append(text_payload(3, 5000) + noise(3, 200), b"m3")
    whole = seg.read_bytes()
    assert len(whole) > boundary + RECORD_OVERHEAD
    for cut in range(boundary, len(whole)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(whole[:cut])
        with Spool(d, max_bytes=1 << 20) as sp:
            assert [(r.meta, r.payload) for r in sp.next_unacked(10)] == [
                (b"m1", text_payload(1)),
                (b"m2", noise(2, 100)),
            ]
            assert sp.stats["torn_tails_cut"] == (cut > boundary)
            assert sp.stats["corrupt_records"] == 0
            assert (d / seg.name).stat().st_size == boundary
            sp.append(b"next", b"m4")
        with Spool(d, max_bytes=1 << 20) as sp:
            assert [r.meta for r in sp.next_unacked(10)] == [b"m1", b"m2", b"m4"]
        shutil.rmtree(d)


def _five_record_segment(d: Path) -> tuple[Path, list[int]]:
    """A segment with records m0..m4; returns it and the offset where each record starts."""
    starts = []
    with Spool(d, max_bytes=1 << 20) as sp:
        for i in range(5):
            starts.append(sum(p.stat().st_size for p in segments(d)) or SEGMENT_HEADER_SIZE)
            sp.append(text_payload(i, 1000) + noise(i, 300), b"m%d" % i)
    (seg,) = segments(d)
    return seg, starts


@pytest.mark.parametrize("where", [0, 2, 5, 9, 18, 22, 26, 30, 40, 200])  # sync, crc, flags, seq, lengths, meta, data
def test_corrupt_byte_in_the_middle_skips_only_that_record(tmp_path: Path, where: int, caplog: pytest.LogCaptureFixture) -> None:
    seg, starts = _five_record_segment(tmp_path / "s")
    size = seg.stat().st_size
    data = bytearray(seg.read_bytes())
    data[starts[2] + where] ^= 0x5A
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), Spool(tmp_path / "s", max_bytes=1 << 20) as sp:
        got = sp.next_unacked(10)
        assert [r.meta for r in got] == [b"m0", b"m1", b"m3", b"m4"]
        assert got[2].payload == text_payload(3, 1000) + noise(3, 300)
        assert sp.stats["corrupt_records"] == 1 and sp.stats["torn_tails_cut"] == 0
    assert seg.stat().st_size == size  # nothing cut
    assert any(seg.name in r.getMessage() and f"offset {starts[2]}" in r.getMessage() for r in caplog.records)


def test_corrupt_last_record_is_cut_like_a_torn_tail(tmp_path: Path) -> None:
    seg, starts = _five_record_segment(tmp_path / "s")
    data = bytearray(seg.read_bytes())
    data[starts[4] + 100] ^= 0xFF
    seg.write_bytes(bytes(data))
    with Spool(tmp_path / "s", max_bytes=1 << 20) as sp:
        assert [r.meta for r in sp.next_unacked(10)] == [b"m0", b"m1", b"m2", b"m3"]
        assert sp.stats["torn_tails_cut"] == 1
    assert seg.stat().st_size == starts[4]


def test_stale_copy_of_an_earlier_record_after_the_tail_is_not_replayed(tmp_path: Path) -> None:
    seg, starts = _five_record_segment(tmp_path / "s")
    data = seg.read_bytes()
    seg.write_bytes(data + bytes(64) + data[starts[1] : starts[2]])  # e.g. old blocks after a torn write
    with Spool(tmp_path / "s", max_bytes=1 << 20) as sp:
        assert [r.meta for r in sp.next_unacked(10)] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert sp.stats["torn_tails_cut"] == 1 and sp.stats["corrupt_records"] == 0
    assert seg.read_bytes() == data


def test_record_damaged_after_open_is_dropped_and_counted(tmp_path: Path) -> None:
    seg, starts = _five_record_segment(tmp_path / "s")
    with Spool(tmp_path / "s", max_bytes=1 << 20) as sp:
        with open(seg, "r+b") as f:
            f.seek(starts[1] + 60)
            f.write(b"\0\0\0")
        assert [r.meta for r in sp.next_unacked(10)] == [b"m0", b"m2", b"m3", b"m4"]
        assert sp.stats["corrupt_records"] == 1
        assert [r.meta for r in sp.next_unacked(10)] == [b"m0", b"m2", b"m3", b"m4"]


def test_bad_segment_headers(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d, max_bytes=1 << 20, segment_bytes=2000) as sp:
        for i in range(3):
            sp.append(noise(i, 1500), b"m%d" % i)
    first, second, third = segments(d)
    first.write_bytes(b"KASPOOLX" + first.read_bytes()[8:])  # damaged header: set aside
    (d / "00000000000000000009.spool").write_bytes(b"KASPO")  # newest, torn while created: removed
    with Spool(d, max_bytes=1 << 20) as sp:
        assert [r.meta for r in sp.next_unacked(10)] == [b"m1", b"m2"]
        assert sp.stats["quarantined_segments"] == 1 and sp.stats["torn_tails_cut"] == 1
        assert sp.append(b"x").segment == 10
    assert (d / (first.name + ".corrupt")).exists()
    assert not (d / "00000000000000000009.spool").exists()


def test_full_spool_raises_and_has_room_is_exact(tmp_path: Path) -> None:
    d = tmp_path / "s"
    rec = RECORD_OVERHEAD + 2 + 10_000
    with Spool(d, max_bytes=SEGMENT_HEADER_SIZE * 3 + rec * 6, segment_bytes=rec * 2 + SEGMENT_HEADER_SIZE) as sp:
        ids = []
        for i in range(6):
            assert sp.has_room(2 + 10_000)
            ids.append(sp.append(noise(i, 10_000), b"mm"))
        assert sp.bytes_used == sp.max_bytes == sum(p.stat().st_size for p in segments(d))
        assert not sp.has_room(0)
        with pytest.raises(SpoolFullError):
            sp.append(b"", b"")
        with pytest.raises(SpoolFullError):  # a group that does not fit is refused whole
            sp.append_many([(b"a", b"")])
        assert sp.stats["full_rejections"] == 2 and sp.unacked_count == 6
        sp.ack(ids[3])  # frees nothing: its segment still holds ids[2]
        assert not sp.has_room(0)
        sp.ack(ids[2])  # segment 1 fully acked: reclaimable, before any flush
        # freed: one header + two records; needed: a new segment (the active is full) + the record
        assert sp.has_room(2 + 10_000 + rec) and not sp.has_room(2 + 10_000 + rec + 1)
        sp.append(noise(7, 10_000), b"mm")
        assert ids[2].segment not in {int(p.stem) for p in segments(d)}  # reclaimed before writing
        assert sp.has_room(2 + 10_000) and not sp.has_room(2 + 10_000 + 1)
        sp.append(noise(8, 10_000), b"mm")
        assert sp.bytes_used == sp.max_bytes == sum(p.stat().st_size for p in segments(d))
        assert not sp.has_room(0)
        with pytest.raises(RecordTooLargeError) as too_big:
            sp.append(noise(8, sp.max_bytes))
        assert not isinstance(too_big.value, SpoolFullError)


def test_has_room_matches_append_for_random_sizes(tmp_path: Path) -> None:
    rng = random.Random(3)
    with Spool(tmp_path / "s", max_bytes=200_000, segment_bytes=30_000) as sp:
        live: list[RecordId] = []
        for i in range(400):
            size = rng.randrange(0, 25_000)
            room = sp.has_room(size)
            try:
                live.append(sp.append(noise(i, size)))
                assert room
            except SpoolFullError:
                assert not room
            assert sp.bytes_used <= sp.max_bytes
            assert sum(p.stat().st_size for p in segments(tmp_path / "s")) <= sp.max_bytes
            if live and rng.random() < 0.45:
                sp.ack(live.pop(rng.randrange(len(live))))


def test_active_segment_fully_acked_is_rolled_away_when_room_is_needed(tmp_path: Path) -> None:
    rec = RECORD_OVERHEAD + 5000
    with Spool(tmp_path / "s", max_bytes=SEGMENT_HEADER_SIZE + 3 * rec) as sp:  # one segment's worth
        ids = [sp.append(noise(i, 5000)) for i in range(3)]
        assert not sp.has_room(5000)
        for rid in ids:
            sp.ack(rid)
        assert sp.has_room(5000)
        new = sp.append(noise(9, 5000))
        assert new.segment == ids[0].segment + 1
        assert [p.stem for p in segments(tmp_path / "s")] == [f"{new.segment:020d}"]


def test_segment_roll_over(tmp_path: Path) -> None:
    d = tmp_path / "s"
    seg_bytes = 4096
    with Spool(d, max_bytes=1 << 20, segment_bytes=seg_bytes) as sp:
        ids = sp.append_many([(noise(i, 1000), b"") for i in range(10)])
        big = sp.append(noise(50, 3 * seg_bytes))  # larger than a segment: a segment of its own
        after = sp.append(noise(51, 10))
        names = [p.name for p in segments(d)]
        assert names == sorted(names) and all(len(n) == 20 + len(".spool") for n in names)
        assert len({i.segment for i in ids}) == 4  # 3 + 3 + 3 + 1 records
        assert big.segment not in {i.segment for i in ids} and after.segment == big.segment + 1
        for p in segments(d):
            head = p.read_bytes()[:SEGMENT_HEADER_SIZE]
            assert head[:9] == b"KASPOOL1\x01" and int.from_bytes(head[9:17], "big") == int(p.stem)
            if int(p.stem) != big.segment:
                assert p.stat().st_size <= seg_bytes
        assert [r.payload for r in sp.next_unacked(20)] == [noise(i, 1000) for i in range(10)] + [
            noise(50, 3 * seg_bytes),
            noise(51, 10),
        ]


def test_concurrent_writer_and_reader(tmp_path: Path) -> None:
    d = tmp_path / "s"
    total = 300
    with Spool(d, max_bytes=300_000, segment_bytes=20_000) as sp:
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                i = 0
                while i < total:
                    try:
                        sp.append(text_payload(i, 3000), b"%d" % i)
                        i += 1
                    except SpoolFullError:
                        threading.Event().wait(0.001)
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        t = threading.Thread(target=writer)
        t.start()
        seen: list[int] = []
        while len(seen) < total:
            batch = sp.next_unacked(7)
            for r in batch:
                assert r.payload == text_payload(int(r.meta), 3000)
                seen.append(int(r.meta))
                if sp.ack(r.id):
                    sp.flush_acks()
        t.join()
        assert errors == []
        assert seen == list(range(total))
    assert segments(d) == []


@pytest.mark.parametrize("fail_at", ["write", "fsync"])
def test_failed_append_is_cut_back_and_the_spool_stays_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str) -> None:
    d = tmp_path / "s"
    with Spool(d, max_bytes=1 << 20) as sp:
        sp.append(b"before", b"0")
        (seg,) = segments(d)
        size = seg.stat().st_size
        name = "pwritev" if fail_at == "write" else "fsync"
        real = getattr(os, name)

        def fail_once(*args: object) -> object:
            monkeypatch.setattr(spool_mod.os, name, real)
            if fail_at == "write":
                real(args[0], [b"partial garbage"], *args[2:])  # a short write, then the error
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(spool_mod.os, name, fail_once)
        with pytest.raises(OSError):
            sp.append_many([(b"lost-a", b"x"), (b"lost-b", b"x")])
        assert seg.stat().st_size == size
        sp.append(b"after", b"1")
        assert [(r.meta, r.payload) for r in sp.next_unacked(10)] == [(b"0", b"before"), (b"1", b"after")]
    with Spool(d, max_bytes=1 << 20) as sp:
        assert [r.payload for r in sp.next_unacked(10)] == [b"before", b"after"]
        assert sp.stats["corrupt_records"] == 0 and sp.stats["torn_tails_cut"] == 0


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path / "a", max_bytes=10)
    with pytest.raises(Exception):  # noqa: B017 - zstandard's own error type for a bad level
        Spool(tmp_path / "b", max_bytes=1 << 20, compression_level=1000)
    sp = Spool(tmp_path / "c", max_bytes=1 << 20)
    sp.close()
    sp.close()
    with pytest.raises(StateError):
        sp.append(b"x")
