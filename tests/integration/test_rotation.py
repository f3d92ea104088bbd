"""Rotation, restart and file-lifecycle cases with real files, real renames and the real pipeline."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from kube_audit_shipper.checkpoint.store import CheckpointStore
from tests.support.corpus import audit_id, numbered_lines
from tests.support.harness import Running, append, make_config, rotate, run_once, sink_lines
from tests.support.sink_context import context
from tests.support.wait import until


def ids(lines: list[bytes]) -> list[str]:
    return [audit_id(x) for x in lines]


def test_restart_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    first, second = numbered_lines(300), numbered_lines(200, start=300)
    append(log, first)
    cfg = make_config(tmp_path)
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(first)
    append(log, second)
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(first + second)
    run_once(cfg)  # nothing new: nothing shipped again
    assert ids(sink_lines(tmp_path / "out")) == ids(first + second)


def test_rename_rotation_while_running_keeps_file_order(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    batches = [numbered_lines(150, start=i * 150) for i in range(4)]
    append(log, batches[0])

    async def scenario() -> None:
        async with Running(make_config(tmp_path)) as run:
            out = tmp_path / "out"
            await until(lambda: len(sink_lines(out, include_tmp=True)) >= 150, what="first batch")
            append(log, batches[1])
            rotate(log, "2026-11-22T10-00-00.000")  # the renamed file gained lines before the rename
            append(log, batches[2])
            rotate(log, "2026-11-22T10-05-00.000", gz=False)
            append(log, batches[3])
            await until(lambda: len(sink_lines(out, include_tmp=True)) >= 600, what="all events")
            await run.stop()

    import asyncio

    asyncio.run(scenario())
    got = ids(sink_lines(tmp_path / "out"))
    assert got == ids(sum(batches, []))


def test_rotation_while_down_resumes_renamed_file_by_identity(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    a, b, c = numbered_lines(100), numbered_lines(100, start=100), numbered_lines(100, start=200)
    append(log, a)
    cfg = make_config(tmp_path)
    run_once(cfg)
    append(log, b)  # written after the agent stopped, then rotated away
    rotate(log, "2026-11-22T10-00-00.000")
    append(log, c)
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(a + b + c)


def test_gzipped_backup_resumes_in_decompressed_stream(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    a, b, c = numbered_lines(120), numbered_lines(80, start=120), numbered_lines(50, start=200)
    append(log, a)
    cfg = make_config(tmp_path)
    run_once(cfg)
    append(log, b)
    backup = rotate(log, "2026-11-22T10-00-00.000", gz=True)  # --audit-log-compress, while the agent was down
    assert backup.suffix == ".gz" and not backup.with_suffix("").exists()
    append(log, c)
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(a + b + c)
    entries = CheckpointStore(cfg.state_dir).load()
    assert entries is not None
    gz_entry = [e for e in entries if e.path == str(backup)]
    assert gz_entry and gz_entry[0].gzip and gz_entry[0].complete


def test_gzip_backup_never_seen_before_is_read_through_decompression(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    a, b = numbered_lines(70), numbered_lines(30, start=70)
    append(log, a)
    cfg = make_config(tmp_path)
    run_once(cfg)  # state exists from now on
    # a whole rotated generation appears while the agent is down, already compressed
    old = log.with_name("audit-2026-11-22T11-00-00.000.log.gz")
    with gzip.open(old, "wb") as fh:
        fh.write(b"".join(x + b"\n" for x in b))
    run_once(cfg)
    assert sorted(ids(sink_lines(tmp_path / "out"))) == sorted(ids(a + b))


def test_first_start_skips_rotated_backups_unless_backfill(tmp_path: Path) -> None:
    for backfill in (False, True):
        root = tmp_path / f"backfill-{backfill}"
        log = root / "log" / "audit.log"
        old, cur = numbered_lines(40), numbered_lines(60, start=40)
        append(log.with_name("audit-2026-11-22T09-00-00.000.log"), old)
        append(log, cur)
        cfg = make_config(root, input={"backfill_rotated": backfill})
        run_once(cfg)
        assert ids(sink_lines(root / "out")) == ids((old if backfill else []) + cur)
        # after the first start, a backup that appears is always shipped
        newer = numbered_lines(10, start=100)
        append(log.with_name("audit-2026-11-22T09-30-00.000.log"), newer)
        run_once(cfg)
        assert Counter(ids(sink_lines(root / "out"))) == Counter(ids((old if backfill else []) + cur + newer))


def test_start_at_end_ships_only_new_lines_and_never_starts_mid_line(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    before, after = numbered_lines(50), numbered_lines(20, start=50)
    append(log, before)
    with open(log, "ab") as fh:
        fh.write(after[0][:40])  # a line being written at the moment of the first start
    cfg = make_config(tmp_path, input={"start_at": "end"})
    run_once(cfg)
    assert sink_lines(tmp_path / "out") == []
    with open(log, "ab") as fh:
        fh.write(after[0][40:] + b"\n" + b"".join(x + b"\n" for x in after[1:]))
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(after)


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    lines = numbered_lines(3)
    log.parent.mkdir(parents=True)
    log.write_bytes(lines[0] + b"\n" + lines[1][:25])
    cfg = make_config(tmp_path)
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(lines[:1])
    with open(log, "ab") as fh:
        fh.write(lines[1][25:] + b"\n" + lines[2] + b"\n")
    run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(lines)


def test_copytruncate_is_detected_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    a, b = numbered_lines(100), numbered_lines(10, start=100)
    append(log, a)

    async def scenario() -> int:
        async with Running(make_config(tmp_path)) as run:
            out = tmp_path / "out"
            await until(lambda: len(sink_lines(out, include_tmp=True)) >= 100, what="first lines")
            with open(log, "r+b") as fh:  # copytruncate: the copy is elsewhere, the file is cut to 0
                fh.truncate(0)
            append(log, b)
            await until(lambda: len(sink_lines(out, include_tmp=True)) >= 110, what="lines after truncation")
            truncations = run.agent.tailer.truncations  # type: ignore[union-attr]
            await run.stop()
            return truncations

    import asyncio

    assert asyncio.run(scenario()) == 1
    assert ids(sink_lines(tmp_path / "out")) == ids(a + b)


def test_deleted_while_open_is_drained_through_the_descriptor(tmp_path: Path) -> None:
    """The sink holds the pipeline (backpressure) while the file is deleted; every line still arrives."""
    import asyncio

    from kube_audit_shipper.sinks.file.config import FileSinkConfig
    from kube_audit_shipper.sinks.file.sink import FileSink

    log = tmp_path / "log" / "audit.log"
    lines = numbered_lines(2000)
    append(log, lines)
    gate = asyncio.Event()

    class GatedSink(FileSink):
        async def send(self, request):  # type: ignore[no-untyped-def]
            await gate.wait()
            return await super().send(request)

    cfg = make_config(tmp_path, memory_limit_bytes=1 << 20, input={"read_chunk_bytes": 65536})
    sink = GatedSink(FileSinkConfig(name="archive", path=str(tmp_path / "out")), context(tmp_path / "state"))

    async def scenario() -> None:
        async with Running(cfg, sinks=[sink]) as run:
            await until(lambda: run.agent.budget.waits > 0, what="reader held back by the memory limit")
            os.unlink(log)
            gate.set()
            await until(lambda: len(sink_lines(tmp_path / "out", include_tmp=True)) >= len(lines), what="all lines")
            await run.stop()

    asyncio.run(scenario())
    assert ids(sink_lines(tmp_path / "out")) == ids(lines)


def test_bad_lines_go_to_dead_letters_with_location(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    good = numbered_lines(5)
    content = good[0] + b"\n" + b"{not json\n" + good[1] + b"\n" + b"\xff\xfe{}\n" + b"[1,2]\n" + b"x" * 5000 + b"\n" + good[2] + b"\n"
    log.parent.mkdir(parents=True)
    log.write_bytes(content)
    cfg = make_config(tmp_path, input={"max_line_bytes": 4096})
    agent = run_once(cfg)
    assert ids(sink_lines(tmp_path / "out")) == ids(good[:3])
    records = list(agent.deadletter.iter_records())  # type: ignore[union-attr]
    reasons = [r["reason"] for r in records]
    assert len(records) == 4, reasons
    offsets = sorted(r["source"]["offset"] for r in records)
    expected = [content.index(b"{not json"), content.index(b"\xff\xfe"), content.index(b"[1,2]"), content.index(b"xxxx")]
    assert offsets == sorted(expected)
    oversize = [r for r in records if "max_line_bytes" in r["reason"]]
    assert oversize and "event" not in oversize[0] and oversize[0]["source"]["length"] == 5001
    state = agent.metrics_state()
    assert state.deadlettered == {"malformed": 3, "oversize": 1}
    assert json.loads(json.dumps(records))  # plain JSON on disk


def test_glob_with_several_families(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    a, b = numbered_lines(30, prefix="a"), numbered_lines(30, prefix="b")
    append(logdir / "audit.log", a[:20])
    append(logdir / "audit-2026-11-22T10-00-00.000.log", a[20:])  # a backup matched by the glob too
    append(logdir / "kubernetes.audit", b)
    cfg = make_config(tmp_path, input={"paths": [str(logdir / "*")], "backfill_rotated": True})
    run_once(cfg)
    got = ids(sink_lines(tmp_path / "out"))
    assert sorted(got) == sorted(ids(a + b))
    got_a = [x for x in got if x.startswith("a-")]
    assert got_a == ids(a[20:] + a[:20])  # the backup (older) before the active file


def test_oldest_backup_being_read_is_flagged_at_risk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """While the agent is still on the oldest backup on disk, the next rotation may delete it: warn and flag."""
    import asyncio

    from kube_audit_shipper.sinks.file.config import FileSinkConfig
    from kube_audit_shipper.sinks.file.sink import FileSink

    log = tmp_path / "log" / "audit.log"
    oldest = log.with_name("audit-2026-11-22T09-00-00.000.log")
    append(oldest, numbered_lines(3000))
    append(log.with_name("audit-2026-11-22T09-30-00.000.log"), numbered_lines(10, start=3000))
    append(log, numbered_lines(10, start=3010))
    gate = asyncio.Event()

    class GatedSink(FileSink):
        async def send(self, request):  # type: ignore[no-untyped-def]
            await gate.wait()
            return await super().send(request)

    cfg = make_config(tmp_path, memory_limit_bytes=1 << 20, input={"backfill_rotated": True, "read_chunk_bytes": 65536})
    sink = GatedSink(FileSinkConfig(name="archive", path=str(tmp_path / "out")), context(tmp_path / "state"))

    async def scenario() -> tuple[list[str], int, int]:
        async with Running(cfg, sinks=[sink]) as run:
            await until(lambda: run.agent.budget.waits > 0, what="reader held back")
            at_risk = run.agent.tailer.at_risk()  # type: ignore[union-attr]
            flagged = run.agent.metrics_state().files_at_risk
            gate.set()
            await until(lambda: len(sink_lines(tmp_path / "out", include_tmp=True)) >= 3020, what="everything")
            after = len(run.agent.tailer.at_risk())  # type: ignore[union-attr]
            await run.stop()
            return at_risk, flagged, after

    with caplog.at_level("WARNING"):
        at_risk, flagged, after = asyncio.run(scenario())
    assert at_risk == [str(oldest)] and flagged == 1 and after == 0
    assert any("oldest rotated backup on disk" in r.getMessage() for r in caplog.records)
