"""Unit tests for kube_audit_shipper.process.check and process.lines: event checks and chunk building."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.model import Chunk, Lines
from kube_audit_shipper.process.check import check_event
from kube_audit_shipper.source.reader import LineReader
from tests.support.corpus import DATA
from tests.support.line_processing import ProcessingWithDeadLetters as LineProcessor

CORPUS_DIR = DATA / "real-audit"
MiB = 1 << 20


def corpus_lines() -> list[bytes]:
    files = sorted(CORPUS_DIR.glob("*.jsonl"))
    assert files
    lines = [line for p in files for line in p.read_bytes().split(b"\n") if line.strip()]
    assert len(lines) >= 300
    return lines


def test_check_event_accepts_every_corpus_line() -> None:
    for line in corpus_lines():
        check_event(line)  # raises on failure


def test_check_event_accepts_whitespace_around_and_crlf() -> None:
    check_event(b'  {"kind":"Event"}  ')
    check_event(b'{"kind":"Event"}\r')
    check_event(b"{}")
    check_event('{"user":"José"}'.encode())


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        (b'{"user":"\xff"}', "invalid UTF-8 at byte 9"),
        (b'{"a":"\xed\xa0\x80"}', "invalid UTF-8 at byte 6"),  # an encoded surrogate
        (b'{"a":"\xc3"}', "invalid UTF-8 at byte 6"),  # truncated sequence
        (b"[]", "not a JSON object"),
        (b'[{"kind":"Event"}]', "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"kind":"Event","user":{"username"', "malformed JSON"),
        (b'{"kind":"Event"', "malformed JSON"),
        (b'{"kind":"Event"} trailing', "malformed JSON"),
        (b'{"kind":"Event"}{"kind":"Event"}', "malformed JSON"),
        (b'{"a":1,}', "malformed JSON"),
        (b'{"a":"\\q"}', "malformed JSON"),
        (b'{"a":NaN}', "malformed JSON"),
        (b"\xef\xbb\xbf{}", "malformed JSON"),  # a BOM
        (b"", "malformed JSON"),
    ],
)
def test_check_event_rejects_with_reason(line: bytes, reason_part: str) -> None:
    with pytest.raises(MalformedEventError) as ei:
        check_event(line)
    assert reason_part in ei.value.reason
    assert str(ei.value) == ei.value.reason


def test_check_event_rejects_every_truncation_of_a_real_event() -> None:
    line = corpus_lines()[0]
    for cut in range(len(line)):
        with pytest.raises(MalformedEventError):
            check_event(line[:cut])


# -- LineProcessor ---------------------------------------------------------------------------------


def read_lines(tmp_path: Path, content: bytes, max_line: int = 1 << 20, name: str = "audit.log") -> Lines:
    """One Lines object covering the whole content, produced by the real reader."""
    p = tmp_path / name
    p.write_bytes(content)
    fd = os.open(p, os.O_RDONLY)
    try:
        return LineReader(fd, offset=0, gz=False, chunk_bytes=len(content) + 1, max_line_bytes=max_line).read()
    finally:
        os.close(fd)


def check_ranges_tile(chunk: Chunk, lines: Lines) -> None:
    assert (chunk.start, chunk.end) == (lines.start, lines.end)
    assert len(chunk.records) == len(chunk.ends)
    pos = chunk.start
    for i in range(len(chunk.records)):
        a, b = chunk.range_of(i, i + 1)
        assert a == pos and b > a
        pos = b
    if chunk.records:
        assert pos == chunk.end
        assert chunk.range_of(0, len(chunk.records)) == (chunk.start, chunk.end)


def test_process_valid_lines(tmp_path: Path) -> None:
    lines_in = corpus_lines()[:50]
    content = b"\n".join(lines_in) + b"\n"
    lines = read_lines(tmp_path, content)
    dl = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    proc = LineProcessor(None, dl)
    chunk = proc.process(3, "/var/log/audit.log", lines)
    assert chunk.fid == 3
    assert chunk.records == lines_in  # unchanged bytes
    check_ranges_tile(chunk, lines)
    # record i stands for exactly its own line
    for i, rec in enumerate(chunk.records):
        a, b = chunk.range_of(i, i + 1)
        assert content[a:b] == rec + b"\n"
    assert chunk.nbytes == sum(len(r) + 1 for r in lines_in)
    assert list(dl.iter_records()) == []
    dl.close()


def test_process_dead_letters_bad_lines_and_ranges_still_cover_input(tmp_path: Path) -> None:
    good = corpus_lines()[:4]
    bad_utf8 = b'{"user":"\xff"}'
    arr = b'["not","an","object"]'
    trunc = good[0][:50]
    big = b'{"x":"' + b"B" * 5000 + b'"}'
    parts = [bad_utf8, good[0], b"", arr, good[1], b"   ", trunc, big, good[2], good[3], b"tail garbage"]
    content = b"\n".join(parts) + b"\n"
    lines = read_lines(tmp_path, content, max_line=4096)
    assert lines.oversize  # the reader skipped `big`
    dl = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    proc = LineProcessor(None, dl)
    chunk = proc.process(1, "/var/log/audit.log", lines)
    assert chunk.records == [good[0], good[1], good[2], good[3]]
    check_ranges_tile(chunk, lines)
    # each record's range contains its own line
    for i, rec in enumerate(chunk.records):
        a, b = chunk.range_of(i, i + 1)
        assert rec + b"\n" in content[a:b]
    assert chunk.range_of(3, 4)[1] == len(content)  # the trailing bad line is folded into the last record
    dl.close()
    recs = list(dl.iter_records())
    by_offset = {r["source"]["offset"]: r for r in recs}
    offsets = {}
    pos = 0
    for part in parts:
        offsets[part] = pos
        pos += len(part) + 1
    expected_dead = {bad_utf8: "invalid UTF-8", arr: "not a JSON object", trunc: "malformed JSON", b"tail garbage": "malformed JSON", big: "max_line_bytes"}
    assert set(by_offset) == {offsets[p] for p in expected_dead}
    for part, why in expected_dead.items():
        rec = by_offset[offsets[part]]
        assert rec["source"] == {"path": "/var/log/audit.log", "offset": offsets[part], "length": len(part) + 1}
        assert why in rec["reason"]
        assert rec["sink"] is None
    assert "event" not in by_offset[offsets[big]] and "event_b64" not in by_offset[offsets[big]]
    assert by_offset[offsets[arr]]["event"] == arr.decode()
    assert "event_b64" in by_offset[offsets[bad_utf8]]
    assert "5008 bytes" in by_offset[offsets[big]]["reason"]
    counts = proc.counts()
    assert counts["read"] == len(parts)
    assert counts["blank"] == 2
    assert counts["deadletter:malformed"] == 4
    assert counts["deadletter:oversize"] == 1


def test_process_every_line_bad_yields_chunk_without_records(tmp_path: Path) -> None:
    content = b'[1]\n{"a"\n\n\xff\xfe\n'
    lines = read_lines(tmp_path, content)
    dl = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    chunk = LineProcessor(None, dl).process(9, "/x", lines)
    assert chunk.records == [] and chunk.ends == []
    assert (chunk.start, chunk.end) == (0, len(content))
    assert chunk.nbytes == 0
    dl.close()
    assert sorted(r["source"]["offset"] for r in dl.iter_records()) == [0, 4, 10]


def test_process_keeps_offsets_of_a_resumed_read(tmp_path: Path) -> None:
    good = corpus_lines()[:3]
    content = b"\n".join([good[0], b"bad", good[1], good[2]]) + b"\n"
    p = tmp_path / "r.log"
    p.write_bytes(content)
    start = len(good[0]) + 1
    fd = os.open(p, os.O_RDONLY)
    try:
        lines = LineReader(fd, offset=start, gz=False, chunk_bytes=1 << 20, max_line_bytes=1 << 20).read()
    finally:
        os.close(fd)
    dl = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    chunk = LineProcessor(None, dl).process(1, str(p), lines)
    assert chunk.start == start and chunk.end == len(content)
    assert chunk.records == [good[1], good[2]]
    assert chunk.range_of(0, 1) == (start, start + 4 + len(good[1]) + 1)
    dl.close()
    (rec,) = list(dl.iter_records())
    assert rec["source"] == {"path": str(p), "offset": start, "length": 4}


class MarkerTransform:
    """A transform: drops lines marked DROP, rejects lines marked BAD, uppercases the rest."""

    def __init__(self) -> None:
        self.n = 0

    def run(self, line: bytes, *, detect: bool = True) -> tuple[bytes | None, list[Any]]:
        return self.apply(line), []

    def apply(self, line: bytes) -> bytes | None:
        self.n += 1
        if b"DROP" in line:
            return None
        if b"BAD" in line:
            raise MalformedEventError("transform says bad")
        return line.upper()


def test_process_with_transform_drops_and_ranges_cover(tmp_path: Path) -> None:
    parts = [b'{"a":"keep1"}', b'{"a":"DROP"}', b'{"a":"BAD"}', b'{"a":"keep2"}', b'{"a":"DROP"}', b'{"a":"\xff"}']
    content = b"\n".join(parts) + b"\n"
    lines = read_lines(tmp_path, content)
    dl = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    t = MarkerTransform()
    proc = LineProcessor(t, dl)
    chunk = proc.process(1, "/x", lines)
    assert chunk.records == [b'{"A":"KEEP1"}', b'{"A":"KEEP2"}']
    assert t.n == 5  # invalid UTF-8 never reaches the transform
    check_ranges_tile(chunk, lines)
    assert chunk.range_of(1, 2)[1] == len(content)
    dl.close()
    reasons = sorted(r["reason"] for r in dl.iter_records())
    assert len(reasons) == 2 and "transform says bad" in reasons and any("invalid UTF-8" in r for r in reasons)
    counts = proc.counts()
    assert counts["dropped"] == 2


def test_process_empty_lines_object(tmp_path: Path) -> None:
    dl = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=MiB)
    chunk = LineProcessor(None, dl).process(1, "/x", Lines(start=10, end=10))
    assert chunk.records == [] and (chunk.start, chunk.end) == (10, 10)
    dl.close()
