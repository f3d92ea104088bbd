"""While the reader waits (a sink is down, memory_limit_bytes is used up), kube-apiserver goes on rotating
and deleting backups (--audit-log-maxbackup 2). The agent keeps discovering meanwhile and opens each backup
as it appears, so deleting it later loses nothing; a file that goes before it could be read is an error
naming it and its unread bytes, and is counted (kube_audit_shipper_source_lost_{files,bytes}_total), also
when it went while the agent was not running.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from kube_audit_shipper.app import Agent
from kube_audit_shipper.config import Config, parse
from tests.support.corpus import audit_id, numbered_lines
from tests.support.fault_sink import FaultServer, FaultSink
from tests.support.harness import Running, append
from tests.support.wait import until

MiB = 1 << 20
ROTATE_BYTES = 200 * 1024
MAX_BACKUPS = 2


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    with FaultServer() as srv:
        yield srv


def config(tmp: Path, **top: Any) -> Config:
    (tmp / "log").mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "input": {"paths": [str(tmp / "log" / "audit.log")], "poll_interval_ms": 20, "rescan_interval_ms": 100},
        "batch": {"max_events": 200, "max_wait_ms": 20},
        "sinks": [{"name": "flaky", "type": "file", "path": str(tmp / "unused"), "retry": {"initial_ms": 10, "max_ms": 50}, "spool": None}],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
        "memory_limit_bytes": MiB,
        "shutdown_timeout_s": 1,
    }
    for key, value in top.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return parse(data)


def sinks(cfg: Config, server: FaultServer) -> list[Any]:
    return [FaultSink("flaky", server.url)]


class ApiServerLog:
    """Writes like kube-apiserver (lumberjack): rename rotation at ROTATE_BYTES, keeps MAX_BACKUPS backups."""

    def __init__(self, directory: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.rotate_bytes = rotate_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.active = directory / "audit.log"
        self.active.touch()
        self.rotations = 0
        self.deleted: list[tuple[Path, int]] = []

    def write(self, lines: list[bytes]) -> Path | None:
        """Append; rotate when full. Returns the backup made, if any."""
        append(self.active, lines)
        if self.active.stat().st_size < self.rotate_bytes:
            return None
        self.rotations += 1
        backup = self.active.with_name(f"audit-2026-12-05T10-00-{self.rotations:02d}.000.log")
        os.rename(self.active, backup)
        self.active.touch()
        return backup

    def prune(self) -> None:
        backups = sorted(self.active.parent.glob("audit-*.log"))
        for old in backups[: max(0, len(backups) - MAX_BACKUPS)]:
            self.deleted.append((old, old.stat().st_size))
            old.unlink()


def open_paths(agent: Agent) -> set[str]:
    assert agent.tailer is not None
    return {tf.path for tf in agent.tailer.files.values() if tf.fd is not None}


def held_paths(agent: Agent) -> set[str]:
    """Files whose content the agent can still ship whatever happens on disk: open, or read to their end."""
    assert agent.tailer is not None
    return {tf.path for tf in agent.tailer.files.values() if tf.fd is not None or tf.drained_at is not None}


@pytest.mark.asyncio
async def test_backups_rotated_and_deleted_while_the_reader_waits_are_not_lost(tmp_path: Path, server: FaultServer) -> None:
    server.down()
    log = ApiServerLog(tmp_path / "log")
    lines = numbered_lines(6000, prefix="w")  # about 4 MB: well past memory_limit_bytes (1 MiB) while the sink is down
    async with Running(config(tmp_path), sinks=sinks(config(tmp_path), server)) as run:
        agent = run.agent
        for i in range(0, len(lines), 100):
            backup = log.write(lines[i : i + 100])
            if backup is not None:
                # kube-apiserver does not wait for the agent; the agent must find the backup by itself while it
                # waits for memory. Only then does the next rotation delete the oldest backup.
                await until(lambda b=backup: str(b) in held_paths(agent), what=f"{backup.name} opened while the reader waits")
                log.prune()
        assert log.deleted, "the test must delete backups the agent had not read"
        assert agent.budget.waits > 0, "the reader never waited: the test did not reach memory_limit_bytes"
        server.up()
        await until(lambda: server.stored_ids() == {audit_id(x) for x in lines}, timeout_s=60, what="every event delivered once the sink is back")
        assert agent.records is not None and agent.records.lost_files == 0


@pytest.mark.asyncio
async def test_a_backup_deleted_before_it_could_be_opened_is_an_error_and_counted(
    tmp_path: Path, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kube_audit_shipper.source.tailer")
    server.down()
    log = ApiServerLog(tmp_path / "log", rotate_bytes=3 * MiB // 2)  # more than memory_limit_bytes: the oldest stays open
    cfg = config(tmp_path, input={"max_open_files": 2})
    lines = numbered_lines(12000, prefix="m")
    async with Running(cfg, sinks=sinks(cfg, server)) as run:
        agent = run.agent
        assert agent.tailer is not None
        backups: list[Path] = []
        for i in range(0, len(lines), 100):
            if (backup := log.write(lines[i : i + 100])) is not None:
                backups.append(backup)
                await until(lambda b=backup: str(b) in held_paths(agent), what=f"{backup.name} found")
            if len(backups) == 2:
                break
        # two files open (the oldest first); the next backup waits for a free descriptor
        await until(lambda: len(open_paths(agent)) == 2, what="max_open_files open")
        while (backup := log.write(lines[i : i + 100])) is None:
            i += 100
            assert i < len(lines), "not enough lines for a third rotation"
        await until(lambda: any(f.path == str(backup) for f in agent.tailer._deferred.values()), what="a backup found but not opened")
        size = backup.stat().st_size
        backup.unlink()  # removed before the agent could open it: its events are gone
        await until(lambda: agent.records.lost_files == 1, what="the lost backup counted")
        assert agent.records.lost_bytes == size
        assert agent.metrics.registry.get_sample_value("kube_audit_shipper_source_lost_bytes_total") == size
        assert agent.metrics.registry.get_sample_value("kube_audit_shipper_source_lost_files_total") == 1
    [error] = [r for r in caplog.records if r.getMessage().startswith("input file lost")]
    assert error.path == str(backup) and error.unread_bytes == size  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_file_deleted_while_the_agent_was_not_running_is_an_error_and_counted(
    tmp_path: Path, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kube_audit_shipper.source.tailer")
    server.down()
    log = ApiServerLog(tmp_path / "log")
    lines = numbered_lines(400, prefix="d")
    cfg = config(tmp_path)
    async with Running(cfg, sinks=sinks(cfg, server)) as run:
        backup = None
        for i in range(0, len(lines), 100):
            backup = log.write(lines[i : i + 100]) or backup
        assert backup is not None
        await until(lambda: str(backup) in held_paths(run.agent), what="the backup found")
    doc = json.loads((tmp_path / "state" / "checkpoints.json").read_bytes())
    [entry] = [e for e in doc["files"] if e["path"] == str(backup)]
    assert not entry["complete"] and entry["size"] == backup.stat().st_size
    unread = entry["size"] - entry["offset"]
    assert unread > 0
    backup.unlink()  # deleted while the agent is not running
    caplog.clear()
    async with Running(cfg, sinks=sinks(cfg, server)) as run:
        await until(lambda: run.agent.metrics_state().lost_files == 1, what="the lost file counted at start")
        assert run.agent.metrics_state().lost_bytes == unread
    [error] = [r for r in caplog.records if r.getMessage().startswith("input file lost")]
    assert error.path == str(backup) and error.unread_bytes == unread  # type: ignore[attr-defined]
    assert "while the agent was not running" in error.why  # type: ignore[attr-defined]
