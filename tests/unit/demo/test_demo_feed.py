"""The demo's fake apiserver thread: writes the scenario, rotates only what the agent has read, stops when told."""

from __future__ import annotations

import gzip
from pathlib import Path

from kube_audit_shipper.demo.apiserver import list_backups
from kube_audit_shipper.demo.feed import AuditFeed
from kube_audit_shipper.demo.scenario import Scenario
from tests.support.wait import until_blocking


def test_it_writes_every_line_and_holds_each_rotation_until_the_file_was_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    scenario = Scenario(4, 600)
    expected = list(Scenario(4, 600).lines())
    feed = AuditFeed(scenario, log, rate_per_s=0, max_bytes=200_000)
    feed.start()
    rotations = 0
    while not feed.done:
        waiting = until_blocking(lambda: feed.waiting_for_read or feed.done, what="the writer at a rotation, or done")
        if feed.done:
            break
        assert feed.rotations == rotations and len(list_backups(log)) == rotations
        assert log.stat().st_size + sum(_size(b) for b in list_backups(log)) == feed.written_bytes == waiting
        feed.read_up_to(waiting - 1)  # not all of it yet: still held
        assert feed.waiting_for_read == waiting and feed.rotations == rotations
        feed.read_up_to(waiting)
        rotations += 1
        until_blocking(lambda n=rotations: feed.rotations == n or feed.done, what="the rotation")
    feed.join()
    assert feed.error is None and feed.written == 600 and rotations >= 3 and feed.rotations == rotations
    lines = b"".join(gzip.decompress(b.read_bytes()) for b in list_backups(log)) + log.read_bytes()
    assert lines.splitlines() == expected and feed.written_bytes == len(lines)


def _size(backup: Path) -> int:
    return len(gzip.decompress(backup.read_bytes())) if backup.name.endswith(".gz") else backup.stat().st_size


def test_stop_ends_a_writer_held_at_a_rotation_or_pacing_itself(tmp_path: Path) -> None:
    held = AuditFeed(Scenario(1, 2000), tmp_path / "a" / "audit.log", rate_per_s=0, max_bytes=100_000)
    held.start()
    until_blocking(lambda: held.waiting_for_read, what="the writer at its first rotation")
    held.stop()
    held.join()
    assert held.done and held.error is None and held.rotations == 0 and 0 < held.written < 2000
    slow = AuditFeed(Scenario(1, 2000), tmp_path / "b" / "audit.log", rate_per_s=20, max_bytes=1 << 30)
    slow.start()
    until_blocking(lambda: slow.written >= 2, what="two lines written")
    slow.stop()
    slow.join()
    assert slow.done and slow.error is None and slow.written < 100


def test_a_writer_that_fails_says_why(tmp_path: Path) -> None:
    (tmp_path / "audit.log").mkdir()  # the log path is a directory: the first write fails
    feed = AuditFeed(Scenario(1, 10), tmp_path / "audit.log", rate_per_s=0, max_bytes=1 << 20)
    feed.start()
    feed.join()
    assert feed.done and isinstance(feed.error, OSError) and feed.written == 0
