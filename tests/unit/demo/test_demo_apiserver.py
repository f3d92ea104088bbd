"""RotatingAuditWriter and the fake-apiserver CLI: lumberjack's naming, rotation, compression and pruning."""

from __future__ import annotations

import gzip
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from kube_audit_shipper.demo.apiserver import (
    OversizeLineError,
    RotatingAuditWriter,
    backup_name,
    compress_file,
    list_backups,
    write_events,
)
from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from tests.support.rotated_logs import all_ids, read_lines

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def ticking(step: timedelta = timedelta(seconds=1), start: datetime = T0) -> Callable[[], datetime]:
    """A clock that advances by ``step`` each time it is read."""
    state = {"now": start - step}

    def clock() -> datetime:
        state["now"] += step
        return state["now"]

    return clock


def test_rotation_names_order_and_no_split_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    ids = write_events(log, 3000, seed=1, max_bytes=300_000, clock=ticking())
    backups = list_backups(log)
    assert len(backups) >= 5
    assert [b.name for b in backups] == [f"audit-2026-11-22T10-00-{i:02d}.000.log" for i in range(len(backups))]
    for f in [*backups, log]:
        assert f.stat().st_size <= 300_000
        assert all(json.loads(line)["kind"] == "Event" for line in read_lines(f))
    assert all_ids(log) == ids and len(ids) == 3000


def test_backup_names_follow_go_filepath_ext() -> None:
    when = datetime(2026, 11, 22, 10, 0, 0, 123_999, tzinfo=UTC)
    assert backup_name("/v/kubernetes.audit", when) == Path("/v/kubernetes-2026-11-22T10-00-00.123.audit")
    assert backup_name("/v/audit", when) == Path("/v/audit-2026-11-22T10-00-00.123")
    assert backup_name("/v/a.b.log", when) == Path("/v/a.b-2026-11-22T10-00-00.123.log")
    local = when.astimezone(timezone(timedelta(hours=2)))
    assert backup_name("/v/audit.log", local) == Path("/v/audit-2026-11-22T10-00-00.123.log")


def test_kubernetes_audit_file_and_collision_free_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "kubernetes.audit"
    ids = write_events(log, 2000, seed=2, max_bytes=200_000, clock=lambda: T0)  # the clock never moves
    names = [b.name for b in list_backups(log)]
    assert len(names) >= 4
    assert names == [f"kubernetes-2026-11-22T10-00-00.{i:03d}.audit" for i in range(len(names))]
    assert all_ids(log) == ids


def test_backup_timestamps_stay_sorted_when_the_clock_goes_back(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    times = iter([T0, T0 - timedelta(hours=1), T0 + timedelta(milliseconds=1), T0 + timedelta(seconds=5)])
    with RotatingAuditWriter(log, max_bytes=10_000, clock=lambda: next(times)) as w:
        for i in range(4):
            w.write(b'{"n":%d}' % i)
            assert w.rotate() is not None
    stamps = [b.name for b in list_backups(log)]
    assert stamps == [
        "audit-2026-11-22T10-00-00.000.log",
        "audit-2026-11-22T10-00-00.001.log",
        "audit-2026-11-22T10-00-00.002.log",
        "audit-2026-11-22T10-00-05.000.log",
    ]
    assert [read_lines(tmp_path / s) for s in stamps] == [[b'{"n":%d}' % i] for i in range(4)]


@pytest.mark.parametrize("compress_async", [False, True])
def test_compression_keeps_content_and_removes_the_source(tmp_path: Path, compress_async: bool) -> None:
    log = tmp_path / "audit.log"
    ids = write_events(log, 2500, seed=3, max_bytes=250_000, compress=True, compress_async=compress_async, clock=ticking())
    backups = list_backups(log)
    assert len(backups) >= 4 and all(b.name.endswith(".log.gz") for b in backups)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".log") and p != log]
    for b in backups:
        assert b.read_bytes()[:2] == b"\x1f\x8b"
        assert stat.S_IMODE(b.stat().st_mode) == 0o600
    assert all_ids(log) == ids


def test_async_compression_runs_in_the_background_and_flush_waits(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    gen = AuditEventGenerator(4)
    with RotatingAuditWriter(log, max_bytes=2_000_000, compress=True, compress_async=True, clock=ticking()) as w:
        for line in gen.write_bytes(1_500_000):
            w.write(line)
        backup = w.rotate()
        assert backup is not None and backup.name == "audit-2026-11-22T10-00-00.000.log"
        w.write(gen.line())  # the writer goes on while the mill works
        w.flush()
        assert not backup.exists() and Path(f"{backup}.gz").exists()
        assert gzip.decompress(Path(f"{backup}.gz").read_bytes()).count(b"\n") > 100


def test_max_backups_prunes_the_oldest(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    ids = write_events(log, 3000, seed=5, max_bytes=200_000, max_backups=2, clock=ticking())
    backups = list_backups(log)
    assert len(backups) == 2
    kept = all_ids(log)
    assert kept == ids[len(ids) - len(kept) :]  # a suffix: the newest backups survive
    gz = write_events(tmp_path / "z.log", 3000, seed=5, max_bytes=200_000, max_backups=3, compress=True, compress_async=True, clock=ticking())
    assert len(list_backups(tmp_path / "z.log")) == 3 and all_ids(tmp_path / "z.log") == gz[-len(all_ids(tmp_path / "z.log")) :]


def test_pruning_counts_a_backup_and_its_gz_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    for i, suffix in enumerate([".log", ".log", ".log.gz"]):
        (tmp_path / f"audit-2026-11-22T09-00-0{i}.000{suffix}").write_bytes(b"x\n")
    (tmp_path / "audit-2026-11-22T09-00-02.000.log").write_bytes(b"x\n")  # half-compressed: both exist
    (tmp_path / "audit-notastamp.log").write_bytes(b"keep\n")
    with RotatingAuditWriter(log, max_bytes=10_000, max_backups=2, clock=lambda: T0) as w:
        w.write(b"{}")
        w.rotate()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit-2026-11-22T09-00-02.000.log",
        "audit-2026-11-22T09-00-02.000.log.gz",
        "audit-2026-11-22T10-00-00.000.log",
        "audit-notastamp.log",
        "audit.log",
    ]


def test_first_write_appends_or_rotates_an_existing_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b'{"old":1}\n')
    os.chmod(log, 0o640)
    with RotatingAuditWriter(log, max_bytes=100, clock=lambda: T0) as w:
        w.write(b'{"new":1}')
    assert log.read_bytes() == b'{"old":1}\n{"new":1}\n' and not list_backups(log)
    with RotatingAuditWriter(log, max_bytes=30, clock=lambda: T0) as w:  # 20 + 10 >= 30: rotate first
        w.write(b'{"new":2}')
    assert [b.name for b in list_backups(log)] == ["audit-2026-11-22T10-00-00.000.log"]
    assert log.read_bytes() == b'{"new":2}\n'
    assert stat.S_IMODE(log.stat().st_mode) == 0o640  # the new file keeps the old file's mode


def test_new_file_is_0600_and_rotate_without_a_file(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "dir" / "audit.log"
    with RotatingAuditWriter(log, max_bytes=1000, clock=lambda: T0) as w:
        assert w.rotate() is None and w.rotations == 0  # nothing to rename: just a new empty file
        w.write(b"{}")
        assert w.size == 3
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        w.write(b"{}")


def test_oversize_and_multiline_writes_are_refused(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with RotatingAuditWriter(log, max_bytes=10) as w:
        w.write(b"123456789")  # exactly 10 bytes with the newline
        with pytest.raises(OversizeLineError, match="exceeds maximum file size 10"):
            w.write(b"1234567890")
        with pytest.raises(ValueError, match="newline"):
            w.write(b"{}\n{}")
    assert log.read_bytes() == b"123456789\n"
    mix = EventMix(big_event_probability=0.05, big_event_bytes=150_000)
    ids = write_events(tmp_path / "big.log", 300, seed=1, max_bytes=100_000, mix=mix)
    assert 250 < len(ids) < 300 and all_ids(tmp_path / "big.log") == ids


def test_compress_file_replaces_a_partial_gz(tmp_path: Path) -> None:
    src = tmp_path / "audit-2026-11-22T10-00-00.000.log"
    src.write_bytes(b'{"a":1}\n{"b":2}\n')
    Path(f"{src}.gz").write_bytes(b"\x1f\x8b truncated")
    dst = compress_file(src)
    assert not src.exists() and gzip.decompress(dst.read_bytes()) == b'{"a":1}\n{"b":2}\n'
