"""Unit tests for kube_audit_shipper.deadletter.store: records, encodings, bounds, torn tails."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

from kube_audit_shipper.deadletter.store import VERSION, DeadLetterStore

MiB = 1 << 20


def segs(store: DeadLetterStore) -> list[Path]:
    return sorted(store.dir.glob("*.ndjson"))


def test_record_with_location_reason_and_event(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    line = '{"kind":"Event","user":"ü"'.encode()
    store.add(reason="malformed JSON: truncated", sink=None, path="/var/log/audit.log", offset=1234, length=len(line) + 1, event=line)
    store.sync()
    recs = list(store.iter_records())
    assert len(recs) == 1
    rec = recs[0]
    assert rec["v"] == VERSION == 1
    assert rec["sink"] is None
    assert rec["reason"] == "malformed JSON: truncated"
    assert rec["source"] == {"path": "/var/log/audit.log", "offset": 1234, "length": len(line) + 1}
    assert rec["event"] == line.decode()
    assert "event_b64" not in rec
    assert isinstance(rec["time"], float)
    assert store.records == 1
    store.close()
    # one JSON object per line, on disk, under <state_dir>/deadletter/<20 digits>.ndjson
    files = segs(store)
    assert [f.parent for f in files] == [tmp_path / "deadletter"]
    assert len(files[0].stem) == 20 and files[0].stem.isdigit()
    assert [{**json.loads(x), "id": f"{files[0].stem}:{n}"} for n, x in enumerate(files[0].read_bytes().splitlines(), 1)] == recs


def test_sink_rejection_without_location(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    store.add(reason="gave up", sink="archive", path=None, offset=None, length=None, event=b'{"a":1}')
    (rec,) = list(store.iter_records())
    assert rec["sink"] == "archive" and "source" not in rec and rec["event"] == '{"a":1}'
    store.close()


def test_invalid_utf8_stored_as_base64(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    line = b'{"a":"\xff\xfe\x80"}\r'
    store.add(reason="invalid UTF-8 at byte 6", sink=None, path="/p", offset=0, length=len(line) + 1, event=line)
    (rec,) = list(store.iter_records())
    assert "event" not in rec
    assert base64.b64decode(rec["event_b64"]) == line
    store.close()


def test_large_event_stored_as_location_only(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=100)
    exact = b"x" * 100
    big = b"y" * 101
    store.add(reason="r", sink=None, path="/p", offset=0, length=101, event=exact)
    store.add(reason="r", sink=None, path="/p", offset=101, length=102, event=big)
    store.add(reason="r", sink=None, path="/p", offset=203, length=102, event=b"\xff" * 101)
    store.add(reason="oversize", sink=None, path="/p", offset=305, length=99999, event=None)
    a, b, c, d = list(store.iter_records())
    assert a["event"] == exact.decode()
    for rec, off in ((b, 101), (c, 203), (d, 305)):
        assert "event" not in rec and "event_b64" not in rec
        assert rec["source"]["offset"] == off
    assert d["source"]["length"] == 99999
    store.close()


def test_max_event_bytes_zero_keeps_no_event(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=0)
    store.add(reason="r", sink=None, path="/p", offset=0, length=2, event=b"x")
    (rec,) = list(store.iter_records())
    assert "event" not in rec and "event_b64" not in rec and rec["source"]["offset"] == 0
    store.close()


def test_eviction_keeps_store_bounded_and_counts(tmp_path: Path) -> None:
    max_bytes = MiB
    store = DeadLetterStore(tmp_path, max_bytes=max_bytes, max_event_bytes=MiB)
    rnd = random.Random(1)
    n = 200
    biggest = 0
    for i in range(n):
        event = ('{"n":%d,"pad":"%s"}' % (i, "p" * rnd.randrange(10_000, 40_000))).encode()
        store.add(reason=f"r{i}", sink=None, path="/p", offset=i, length=len(event) + 1, event=event)
        biggest = max(biggest, len(event) + 200)
        total = sum(p.stat().st_size for p in segs(store))
        # whole segments go; the current segment may run past the limit by at most one segment
        assert total <= max_bytes + store.segment_bytes + biggest, i
    store.close()
    assert store.records == n
    assert store.evicted_records > 0
    kept = list(store.iter_records())
    assert len(kept) + store.evicted_records == n
    # the oldest went first: what is kept is a suffix, in order
    ns = [json.loads(r["event"])["n"] for r in kept]
    assert ns == list(range(n - len(kept), n))
    assert len(segs(store)) >= 1


def test_new_store_continues_after_existing_segments(tmp_path: Path) -> None:
    s1 = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    s1.add(reason="first", sink=None, path="/p", offset=0, length=1, event=b"{}")
    s1.close()
    s2 = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    s2.add(reason="second", sink=None, path="/p", offset=1, length=1, event=b"{}")
    s2.close()
    assert [r["reason"] for r in s2.iter_records()] == ["first", "second"]
    assert len(segs(s2)) == 2


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    for i in range(3):
        store.add(reason=f"r{i}", sink=None, path="/p", offset=i, length=1, event=b'{"i":%d}' % i)
    store.close()
    (seg,) = segs(store)
    raw = seg.read_bytes()
    last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_start, len(raw) - 1):  # every torn length of the last record
        seg.write_bytes(raw[:cut])
        assert [r["reason"] for r in DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024).iter_records()] == ["r0", "r1"], cut
    seg.write_bytes(raw)
    assert [r["reason"] for r in store.iter_records()] == ["r0", "r1", "r2"]


def test_iter_records_empty_store(tmp_path: Path) -> None:
    assert list(DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=10).iter_records()) == []


def test_sync_and_close_without_records(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=10)
    store.sync()
    store.close()
    assert not (tmp_path / "deadletter").exists() or segs(store) == []
