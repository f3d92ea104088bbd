"""Reading logs for a report: plain, gzip (as kube-apiserver compresses backups), the file sink's real zstd output."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from kube_audit_shipper.report.inputs import LogFile, LogReadError, whole_frames_bytes
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.sinks.file.sink import FileSink
from tests.support.sink_context import context
from tests.unit.report import scenario


def _read(path: Path, **kwargs: int) -> tuple[list[bytes], LogFile]:
    log = LogFile(str(path), **kwargs)
    return list(log.lines()), log


def test_plain_and_gzip(tmp_path: Path) -> None:
    lines = scenario.demo_lines(500)
    plain = tmp_path / "audit.log"
    plain.write_bytes(b"\n".join(lines[:250]) + b"\r\n\n  \n" + b"\n".join(lines[250:]))  # CRLF, blank lines, no final newline
    packed = tmp_path / "audit-2026-11-22T10-00-00.000.log.gz"
    packed.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    got, log = _read(plain)
    assert got == lines and log.format == "plain" and log.position_bytes == plain.stat().st_size
    got, log = _read(packed)
    assert got == lines and log.format == "gzip"


def test_file_sink_output_is_read_across_its_frames(tmp_path: Path) -> None:
    lines = scenario.demo_lines(900)
    sink = FileSink(FileSinkConfig(name="archive", path=str(tmp_path)), context(tmp_path / "state"))

    async def ship() -> None:
        for start in range(0, len(lines), 200):  # one zstd frame per batch
            for request in sink.encode(lines[start : start + 200]):
                await sink.send(request)
        await sink.aclose()

    asyncio.run(ship())
    (output,) = tmp_path.glob("audit-*.ndjson.zst")
    got, log = _read(output)
    assert got == lines and log.format == "zstd"
    with output.open("rb") as raw:
        assert whole_frames_bytes(raw, output.stat().st_size) == output.stat().st_size


def test_a_torn_zstd_tail_gives_the_whole_frames_then_an_error(tmp_path: Path) -> None:
    lines = scenario.demo_lines(400)
    sink = FileSink(FileSinkConfig(name="archive", path=str(tmp_path)), context(tmp_path / "state"))

    async def ship() -> None:
        for start in (0, 200):
            for request in sink.encode(lines[start : start + 200]):
                await sink.send(request)
        await sink.aclose()

    asyncio.run(ship())
    (output,) = tmp_path.glob("audit-*.ndjson.zst")
    data = output.read_bytes()
    torn = tmp_path / "torn.ndjson.zst"
    torn.write_bytes(data[:-40])
    log = LogFile(str(torn))
    got: list[bytes] = []
    with pytest.raises(LogReadError, match="zstd data unreadable"):
        got.extend(log.lines())
    assert got == lines[:200]  # the whole first frame, nothing of the torn one


def test_a_torn_gzip_member_gives_what_was_read_then_an_error(tmp_path: Path) -> None:
    lines = scenario.demo_lines(2000)
    data = gzip.compress(b"\n".join(lines) + b"\n")
    torn = tmp_path / "audit.log.gz"
    torn.write_bytes(data[: len(data) // 2])
    log = LogFile(str(torn))
    got: list[bytes] = []
    with pytest.raises(LogReadError, match="gzip data unreadable"):
        got.extend(log.lines())
    assert 0 < len(got) < len(lines) and got == lines[: len(got)]


def test_oversize_lines_are_skipped_to_their_newline_and_counted(tmp_path: Path) -> None:
    small = scenario.demo_lines(3)
    path = tmp_path / "audit.log"
    huge = b'{"verb":"get","x":"' + b"a" * (3 << 20) + b'"}'
    path.write_bytes(b"\n".join([small[0], huge, small[1], huge, huge, small[2]]) + b"\n" + huge)
    skipped = []
    log = LogFile(str(path), max_line_bytes=1 << 20)
    got = list(log.lines(on_oversize=lambda: skipped.append(1)))
    assert got == small and log.oversize_lines == len(skipped) == 4


def test_a_missing_log_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(LogReadError, match="No such file"):
        list(LogFile(str(tmp_path / "absent.log")).lines())
