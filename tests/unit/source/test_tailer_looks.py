"""The tailer alone, through its two ports: when it looks at files (inotify, pacing, the safety poll) and what it
calls at risk. Real files, the real kernel's inotify; a recording index and output stand in for checkpoints and
the processing stage."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kube_audit_shipper.model import FileStat, Fingerprint, Lines
from kube_audit_shipper.source.config import InputConfig
from kube_audit_shipper.source.inotify import Inotify
from kube_audit_shipper.source.tailer import Tailer
from tests.support.wait import until

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")


class Index:
    """A FileIndex with no saved state (first start) that remembers nothing."""

    first_start = True

    def lookup(self, stat: FileStat, head: bytes) -> None:
        return None

    def opened(self, *args: Any) -> None: ...
    def renamed(self, fid: int, path: str) -> None: ...
    def resized(self, fid: int, size: int, fingerprint: Fingerprint) -> None: ...
    def drained(self, fid: int, end: int) -> None: ...
    def abandoned(self, fid: int, offset: int) -> None: ...
    def truncated(self, fid: int, new_fid: int, head: bytes) -> None: ...
    def complete(self, fid: int) -> bool:
        return False

    def released(self, fid: int) -> None: ...
    def present(self, seen: set[tuple[int, int]]) -> None: ...
    def lost(self, path: str, unread_bytes: int, why: str) -> None: ...


class Output:
    """A LineOutput that keeps every line it is given."""

    def __init__(self) -> None:
        self.room = asyncio.Event()
        self.room.set()
        self.lines: list[bytes] = []

    async def take(self, fid: int, path: str, lines: Lines) -> None:
        self.lines.extend(lines.lines)

    def incomplete_tail(self, fid: int, path: str, offset: int, length: int) -> None: ...
    def unreadable_rest(self, fid: int, path: str, offset: int, reason: str) -> None: ...
    def retired(self, fid: int) -> None: ...


def run_tailer(cfg: InputConfig, body: Callable[[Tailer, Output], Awaitable[None]], *, scan_first: bool = False) -> None:
    async def main() -> None:
        out = Output()
        tailer = Tailer(cfg, index=Index(), output=out)
        if scan_first:  # as the pipeline does for its first checkpoint
            tailer.scan()
        stop = asyncio.Event()
        task = asyncio.create_task(tailer.run(stop))
        try:
            await body(tailer, out)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            tailer.close()

    asyncio.run(main())


def looks(tailer: Tailer) -> Callable[[], int]:
    """A counter of the tailer's looks (each one fstat()s the open files)."""
    count = [0]
    poll = tailer.poll

    def counted() -> None:
        count[0] += 1
        poll()

    tailer.poll = counted  # type: ignore[method-assign]
    return lambda: count[0]


@linux_only
def test_inotify_reports_a_write_to_a_watched_open_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    inotify = Inotify.create()
    assert inotify is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        assert inotify.watch_fd(fd) is not None
        assert inotify.drain() == 0
        with path.open("ab") as f:
            for _ in range(100):
                f.write(b"{}\n")
                f.flush()
        assert inotify.drain() > 0
        assert inotify.drain() == 0  # drained
    finally:
        os.close(fd)
        inotify.close()


@linux_only
@pytest.mark.parametrize("scan_first", [False, True], ids=["opened-by-run", "opened-before-run"])
def test_a_growing_file_is_read_soon_and_an_idle_one_costs_no_looks(tmp_path: Path, scan_first: bool) -> None:
    """With every open file watched, the fstat poll is only a safety net: an idle file is not looked at
    every poll_interval_ms, and a write is noticed at once (well before the safety net would)."""
    log = tmp_path / "audit.log"
    log.write_bytes(b'{"n":0}\n')
    cfg = InputConfig(paths=[str(log)], poll_interval_ms=50, rescan_interval_ms=600_000)

    async def body(tailer: Tailer, out: Output) -> None:
        await until(lambda: len(out.lines) == 1)
        count = looks(tailer)
        wakes = tailer.hints.file_wakes  # type: ignore[union-attr]
        await asyncio.sleep(0.5)  # ten poll intervals of an idle file
        assert count() == 0
        with log.open("ab") as f:
            f.write(b'{"n":1}\n')
        await until(lambda: len(out.lines) == 2, timeout_s=5.0)  # the safety net is 600 s away
        assert tailer.hints.file_wakes > wakes  # type: ignore[union-attr]

    run_tailer(cfg, body, scan_first=scan_first)


@linux_only
def test_a_file_written_continuously_is_looked_at_no_more_often_than_the_poll_interval(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    cfg = InputConfig(paths=[str(log)], poll_interval_ms=200, rescan_interval_ms=600_000)
    n = 300

    async def body(tailer: Tailer, out: Output) -> None:
        await asyncio.sleep(0.05)
        count = looks(tailer)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with log.open("ab") as f:
            for i in range(n):  # about 1.5 s of one write every 5 ms
                f.write(b'{"n":%d}\n' % i)
                f.flush()
                await asyncio.sleep(0.005)
        await until(lambda: len(out.lines) == n)
        elapsed = loop.time() - start
        assert count() <= elapsed / 0.2 + 2  # paced: not one look per write
        assert count() >= 2  # but it did read along the way

    run_tailer(cfg, body)


def test_without_notifications_open_files_are_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Inotify, "create", classmethod(lambda cls: None))
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    cfg = InputConfig(paths=[str(log)], poll_interval_ms=50, rescan_interval_ms=600_000)

    async def body(tailer: Tailer, out: Output) -> None:
        await asyncio.sleep(0.05)
        with log.open("ab") as f:
            f.write(b'{"n":1}\n')
        await until(lambda: len(out.lines) == 1, timeout_s=5.0)
        count = looks(tailer)
        await until(lambda: count() >= 3, timeout_s=5.0)  # polled every 50 ms though nothing changes

    run_tailer(cfg, body)


def test_a_backup_read_to_its_end_is_not_at_risk(tmp_path: Path) -> None:
    """The oldest backup on disk is at risk only while it has unread bytes: once read to its size (drained at
    the next read round), no 'falling behind' warning."""
    logdir = tmp_path / "log"
    logdir.mkdir()
    oldest = logdir / "audit-2026-11-22T09-00-00.000.log"
    oldest.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(1000)))
    (logdir / "audit.log").write_bytes(b'{"n":"live"}\n')
    cfg = InputConfig(paths=[str(logdir / "audit.log")], backfill_rotated=True, read_chunk_bytes=4096)

    async def main() -> None:
        out = Output()
        tailer = Tailer(cfg, index=Index(), output=out)
        tailer.scan()
        assert tailer.at_risk() == [str(oldest)]  # nothing read yet
        (tf,) = [tf for tf in tailer.files.values() if tf.path == str(oldest)]
        assert tf.reader is not None
        while tf.reader.consumed < tf.size:
            await out.take(tf.fid, tf.path, tf.reader.read())
        assert tf.drained_at is None  # read to its size, not yet drained
        assert tailer.at_risk() == []
        tailer.close()

    asyncio.run(main())


class SlowOutput(Output):
    """An output whose memory is used up by every read and freed a moment later (a sink acknowledging), after
    flapping once: freed and used up again at once (one batch acknowledged while another read is charged), as
    the memory budget does under a backlog."""

    async def take(self, fid: int, path: str, lines: Lines) -> None:
        await super().take(fid, path, lines)
        self.room.clear()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, self._flap)
        loop.call_later(0.03, self.room.set)

    def _flap(self) -> None:
        self.room.set()
        self.room.clear()


@pytest.mark.parametrize("once", [False, True], ids=["run", "run-once"])
def test_a_reader_waiting_for_room_goes_on_when_room_comes_not_at_the_next_paced_look(tmp_path: Path, once: bool) -> None:
    """Regression: while the reader waited for memory, a wake-up by room that was gone again when the reader
    looked (the budget flaps under a backlog) led to a look paced at poll_interval_ms that ignored the room coming
    back: a backlog was read about one chunk per poll interval whenever the sinks were behind (a 300 MB backlog
    took 3.05 s instead of 1.96 s at the default 200 ms). Here the pace is 30 s: 40 chunks must not need 40 paces."""
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * 200) for i in range(400)))
    cfg = InputConfig(paths=[str(log)], poll_interval_ms=30_000, rescan_interval_ms=600_000, read_chunk_bytes=2048)

    async def main() -> None:
        out = SlowOutput()
        tailer = Tailer(cfg, index=Index(), output=out)
        stop = asyncio.Event()
        task = asyncio.create_task(tailer.run(stop, once=once))
        try:
            await until(lambda: len(out.lines) == 400, timeout_s=20.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            tailer.close()

    asyncio.run(main())
