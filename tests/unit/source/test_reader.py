"""Unit tests for kube_audit_shipper.source.reader.LineReader on real files: plain, gzip, offsets, oversize lines."""

from __future__ import annotations

import gzip
import itertools
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_audit_shipper.model import Lines
from kube_audit_shipper.source import reader as reader_mod
from kube_audit_shipper.source.reader import CorruptInputError, LineReader
from tests.support.corpus import DATA

CORPUS_DIR = DATA / "real-audit"


def corpus_bytes() -> bytes:
    files = sorted(CORPUS_DIR.glob("*.jsonl"))
    assert files, f"no corpus under {CORPUS_DIR}"
    data = b"".join(p.read_bytes() for p in files)
    assert data.endswith(b"\n")
    return data


# -- model -----------------------------------------------------------------------------------------


@dataclass
class Expected:
    lines: list[bytes] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    oversize: list[tuple[int, int]] = field(default_factory=list)
    consumed: int = 0


def expected_for(content: bytes, max_line: int, start: int = 0) -> Expected:
    """What a correct reader returns for `content[start:]` (start at a line boundary)."""
    exp = Expected(consumed=start)
    pos = start
    while True:
        nl = content.find(b"\n", pos)
        if nl < 0:
            break
        line = content[pos:nl]
        if len(line) > max_line:
            exp.oversize.append((pos, nl + 1 - pos))
        else:
            exp.lines.append(line)
            exp.ends.append(nl + 1)
        pos = nl + 1
    exp.consumed = pos
    return exp


# -- helpers ---------------------------------------------------------------------------------------


@contextmanager
def opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class Collected:
    lines: list[bytes] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    oversize: list[tuple[int, int]] = field(default_factory=list)
    results: list[Lines] = field(default_factory=list)
    max_pending: int = 0
    prev_end: int | None = None


def drain(r: LineReader, into: Collected | None = None, max_calls: int = 1_000_000) -> Collected:
    """Read until nothing more comes; check per-call invariants on the way."""
    out = into or Collected()
    for _ in range(max_calls):
        res = r.read()
        out.results.append(res)
        # contiguity: a read starts where the previous one ended, and ends at `consumed`
        if out.prev_end is not None:
            assert res.start == out.prev_end
        assert res.start <= res.end == r.consumed
        out.prev_end = res.end
        assert len(res.lines) == len(res.ends)
        assert all(a < b for a, b in zip(res.ends, res.ends[1:]))
        out.lines.extend(res.lines)
        out.ends.extend(res.ends)
        out.oversize.extend(res.oversize)
        out.max_pending = max(out.max_pending, len(r._pending))
        if res.eof and res.raw_bytes == 0 and not res.lines and not res.oversize:
            return out
    raise AssertionError("reader never reached EOF")


def check_against(got: Collected, exp: Expected, r: LineReader, max_line: int) -> None:
    assert got.lines == exp.lines
    assert got.ends == exp.ends
    assert got.oversize == exp.oversize
    assert r.consumed == exp.consumed
    assert all(len(line) <= max_line for line in got.lines)
    assert got.max_pending <= max_line


def gz_members(content: bytes, cuts: list[int]) -> bytes:
    """Multi-member gzip: one member per piece of `content` split at `cuts`."""
    bounds = [0, *sorted(cuts), len(content)]
    return b"".join(gzip.compress(content[a:b], mtime=0) for a, b in zip(bounds, bounds[1:]))


def lines_with_lengths(lengths: list[int], seed: int = 0, crlf: bool = False) -> bytes:
    rnd = random.Random(seed)
    alphabet = b'abcdefghijklmnopqrstuvwxyz0123456789{}":,'
    out = bytearray()
    for n in lengths:
        out += bytes(rnd.choice(alphabet) for _ in range(n))
        out += b"\r\n" if crlf else b"\n"
    return bytes(out)


# -- plain files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536, 1 << 22])
def test_plain_corpus_lines_and_offsets_exact(tmp_path: Path, chunk: int) -> None:
    content = corpus_bytes()
    p = tmp_path / "audit.log"
    p.write_bytes(content)
    max_line = 1 << 20
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=chunk, max_line_bytes=max_line)
        got = drain(r)
    exp = expected_for(content, max_line)
    assert len(exp.lines) == content.count(b"\n")
    check_against(got, exp, r, max_line)
    assert r.consumed == r.read_pos == len(content)
    # every line is byte-identical to the file's line at that offset
    for line, end in zip(got.lines, got.ends):
        assert content[end - len(line) - 1 : end] == line + b"\n"


def test_plain_eof_flag_and_raw_bytes(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"x" * 10 + b"\n" + b"y" * 20 + b"\n")
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=16, max_line_bytes=1024)
        first = r.read()
        assert first.raw_bytes == 16 and not first.eof
        assert first.lines == [b"x" * 10] and first.ends == [11]
        second = r.read()
        assert second.raw_bytes == 16 and second.lines == [b"y" * 20] and second.ends == [32]
        third = r.read()
        assert third.eof and third.raw_bytes == 0 and third.lines == [] and (third.start, third.end) == (32, 32)


def test_last_line_without_newline_is_held_back_until_newline_arrives(tmp_path: Path) -> None:
    lines = corpus_bytes().split(b"\n")[:3]
    p = tmp_path / "audit.log"
    head = lines[0] + b"\n" + lines[1] + b"\n"
    partial = lines[2][:100]
    p.write_bytes(head + partial)
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=4096, max_line_bytes=1 << 20)
        got = drain(r)
        assert got.lines == lines[:2]
        assert r.consumed == len(head)
        assert r.read_pos == len(head) + len(partial)
        # the rest of the line arrives, without its newline: still held
        with p.open("ab") as fh:
            fh.write(lines[2][100:])
        got2 = drain(r)
        assert got2.lines == [] and r.consumed == len(head)
        # the newline arrives: the whole line, with its exact end offset
        with p.open("ab") as fh:
            fh.write(b"\n")
        got3 = drain(r)
        assert got3.lines == [lines[2]]
        assert got3.ends == [len(head) + len(lines[2]) + 1]
        assert got3.results[0].start == len(head)
        assert r.consumed == p.stat().st_size


def test_appends_between_reads_at_every_split_point(tmp_path: Path) -> None:
    content = b"".join(corpus_bytes().split(b"\n")[i] + b"\n" for i in range(4))
    max_line = 1 << 20
    for cut in range(0, len(content) + 1, 37):
        p = tmp_path / f"a{cut}.log"
        p.write_bytes(content[:cut])
        with opened(p) as fd:
            r = LineReader(fd, offset=0, gz=False, chunk_bytes=512, max_line_bytes=max_line)
            got = drain(r)
            with p.open("ab") as fh:
                fh.write(content[cut:])
            drain(r, got)
        check_against(got, expected_for(content, max_line), r, max_line)


def test_resume_from_every_line_boundary_plain(tmp_path: Path) -> None:
    content = b"\n".join(corpus_bytes().split(b"\n")[:25]) + b"\n"
    p = tmp_path / "audit.log"
    p.write_bytes(content)
    boundaries = [0] + [i + 1 for i, b in enumerate(content) if b == 0x0A]
    for off in boundaries:
        with opened(p) as fd:
            r = LineReader(fd, offset=off, gz=False, chunk_bytes=1000, max_line_bytes=1 << 20)
            assert r.consumed == off
            got = drain(r)
        assert got.results[0].start == off
        check_against(got, expected_for(content, 1 << 20, off), r, 1 << 20)


def test_crlf_lines_kept_as_is(tmp_path: Path) -> None:
    content = b'{"a":1}\r\n{"b":2}\r\n\r\n{"c":3}\r\n'
    p = tmp_path / "crlf.log"
    p.write_bytes(content)
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=5, max_line_bytes=1024)
        got = drain(r)
    assert got.lines == [b'{"a":1}\r', b'{"b":2}\r', b"\r", b'{"c":3}\r']
    assert got.ends == [9, 18, 20, 29]
    assert r.consumed == len(content)


def test_empty_lines(tmp_path: Path) -> None:
    content = b"\n\nx\n\n"
    p = tmp_path / "e.log"
    p.write_bytes(content)
    for chunk in (1, 2, 100):
        with opened(p) as fd:
            r = LineReader(fd, offset=0, gz=False, chunk_bytes=chunk, max_line_bytes=1024)
            got = drain(r)
        assert got.lines == [b"", b"", b"x", b""]
        assert got.ends == [1, 2, 4, 5]
        assert got.oversize == []


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.log"
    p.write_bytes(b"")
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=4096, max_line_bytes=1024)
        res = r.read()
    assert res.eof and res.lines == [] and res.oversize == [] and (res.start, res.end) == (0, 0)


# -- oversize lines --------------------------------------------------------------------------------


def test_oversize_line_in_the_middle_reported_as_offset_and_length(tmp_path: Path) -> None:
    max_line = 100
    content = b"a" * 10 + b"\n" + b"b" * 101 + b"\n" + b"c" * 100 + b"\n" + b"d\n"
    p = tmp_path / "o.log"
    p.write_bytes(content)
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=4096, max_line_bytes=max_line)
        got = drain(r)
    # exactly max_line bytes is fine; one more is oversize (offset, length incl. newline)
    assert got.lines == [b"a" * 10, b"c" * 100, b"d"]
    assert got.ends == [11, 11 + 102 + 101, len(content)]
    assert got.oversize == [(11, 102)]


@pytest.mark.parametrize("chunk", [16, 64, 99, 100, 101, 257])
def test_oversize_line_spanning_several_chunks(tmp_path: Path, chunk: int) -> None:
    max_line = 100
    content = b"first\n" + b"G" * 1000 + b"\n" + b"after\n" + b"H" * 101 + b"\n" + b"I" * 100 + b"\n"
    p = tmp_path / "o.log"
    p.write_bytes(content)
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=chunk, max_line_bytes=max_line)
        got = drain(r)
    check_against(got, expected_for(content, max_line), r, max_line)
    assert got.oversize == [(6, 1001), (1013, 102)]
    assert b"G" * 101 not in b"".join(got.lines)


def test_oversize_pending_tail_then_newline_arrives(tmp_path: Path) -> None:
    max_line = 1024
    p = tmp_path / "tail.log"
    p.write_bytes(b"ok\n" + b"T" * 5000)  # the tail is already oversize and has no newline
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=1 << 20, max_line_bytes=max_line)
        got = drain(r)
        assert got.lines == [b"ok"] and got.oversize == []
        assert r.consumed == 3
        assert len(r._pending) <= max_line
        with p.open("ab") as fh:
            fh.write(b"T" * 3000)
        drain(r, got)
        assert got.oversize == [] and len(r._pending) <= max_line
        with p.open("ab") as fh:
            fh.write(b"\nnext\n")
        drain(r, got)
    assert got.lines == [b"ok", b"next"]
    assert got.oversize == [(3, 8001)]
    assert got.ends == [3, 3 + 8001 + 5]
    assert r.consumed == 3 + 8001 + 5


def test_tail_grows_past_limit_across_reads(tmp_path: Path) -> None:
    """A tail that starts short and only becomes oversize later is skipped, not returned."""
    max_line = 1024
    p = tmp_path / "grow.log"
    p.write_bytes(b"x" * 600)
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=4096, max_line_bytes=max_line)
        got = drain(r)
        with p.open("ab") as fh:
            fh.write(b"x" * 600)
        drain(r, got)
        with p.open("ab") as fh:
            fh.write(b"x" * 10 + b"\nz\n")
        drain(r, got)
    assert got.lines == [b"z"]
    assert got.oversize == [(0, 1211)]
    assert got.max_pending <= max_line


def test_pending_memory_bounded_for_giant_line(tmp_path: Path) -> None:
    max_line = 4096
    p = tmp_path / "giant.log"
    p.write_bytes(b"start\n" + os.urandom(3 << 20).replace(b"\n", b"x"))
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=False, chunk_bytes=65536, max_line_bytes=max_line)
        calls = 0
        while True:
            res = r.read()
            calls += 1
            assert len(r._pending) <= max_line
            assert all(len(x) <= max_line for x in res.lines)
            if res.eof and res.raw_bytes == 0:
                break
        assert calls > 40  # many chunks of the giant line went through
        assert r.consumed == 6
        with p.open("ab") as fh:
            fh.write(b"\n")
        res = r.read()
    assert res.oversize == [(6, (3 << 20) + 1)]
    assert len(r._pending) == 0


# -- gzip ------------------------------------------------------------------------------------------


def test_gzip_equals_plain(tmp_path: Path) -> None:
    content = corpus_bytes()
    p = tmp_path / "audit.log.gz"
    p.write_bytes(gzip.compress(content))
    max_line = 1 << 20
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=max_line)
        got = drain(r)
    check_against(got, expected_for(content, max_line), r, max_line)
    assert r.gz_done
    assert got.results[-1].gzip_incomplete is False
    assert sum(x.raw_bytes for x in got.results) == p.stat().st_size


@pytest.mark.parametrize("gz_read", [1, 5, 64, 256 * 1024])
def test_gzip_multi_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz_read: int) -> None:
    monkeypatch.setattr(reader_mod, "_GZ_READ", gz_read)
    content = b"".join(line + b"\n" for line in corpus_bytes().split(b"\n")[:40])
    rnd = random.Random(gz_read)
    cuts = sorted(rnd.sample(range(1, len(content)), 6)) + [content.find(b"\n") + 1]  # mid-line and at a boundary
    p = tmp_path / "multi.log.gz"
    p.write_bytes(gz_members(content, cuts))
    assert gzip.decompress(p.read_bytes()) == content
    max_line = 1 << 20
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=1000, max_line_bytes=max_line)
        got = drain(r)
    check_against(got, expected_for(content, max_line), r, max_line)
    assert r.gz_done
    assert not got.results[-1].gzip_incomplete


def test_gzip_member_boundary_at_read_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first member ends exactly where one raw read ends: the next read must start a new member."""
    content_a = b'{"a":1}\n' * 5
    content_b = b'{"b":2}\n' * 5
    m1 = gzip.compress(content_a, mtime=0)
    monkeypatch.setattr(reader_mod, "_GZ_READ", len(m1))
    p = tmp_path / "x.gz"
    p.write_bytes(m1 + gzip.compress(content_b, mtime=0))
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=1024)
        got = drain(r)
    assert got.lines == [b'{"a":1}'] * 5 + [b'{"b":2}'] * 5
    assert r.consumed == 80 and r.gz_done


def test_gzip_still_being_written_reports_incomplete_then_continues(tmp_path: Path) -> None:
    content = b"".join(line + b"\n" for line in corpus_bytes().split(b"\n")[:60])
    comp = gzip.compress(content, mtime=0)
    max_line = 1 << 20
    exp = expected_for(content, max_line)
    for cut in sorted({10, 11, 100, len(comp) // 3, len(comp) // 2, len(comp) - 8, len(comp) - 1}):
        p = tmp_path / f"w{cut}.log.gz"
        p.write_bytes(comp[:cut])
        with opened(p) as fd:
            r = LineReader(fd, offset=0, gz=True, chunk_bytes=2048, max_line_bytes=max_line)
            got = drain(r)
            last = got.results[-1]
            assert last.eof and last.gzip_incomplete, cut
            assert not r.gz_done
            # a prefix of the lines, never half a line
            n = len(got.lines)
            assert got.lines == exp.lines[:n] and got.ends == exp.ends[:n]
            with p.open("ab") as fh:
                fh.write(comp[cut:])
            drain(r, got)
        check_against(got, exp, r, max_line)
        assert r.gz_done and not got.results[-1].gzip_incomplete


def test_gzip_done_only_after_the_last_member(tmp_path: Path) -> None:
    """A complete first member followed by a second one still being written is not done."""
    m1 = gzip.compress(b'{"a":1}\n' * 20, mtime=0)
    m2 = gzip.compress(b'{"b":2}\n' * 20, mtime=0)
    p = tmp_path / "g.gz"
    p.write_bytes(m1 + m2[: len(m2) // 2])
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=1024)
        got = drain(r)
        assert got.results[-1].gzip_incomplete
        assert not r.gz_done
        assert got.lines[:20] == [b'{"a":1}'] * 20
        with p.open("ab") as fh:
            fh.write(m2[len(m2) // 2 :])
        drain(r, got)
        assert r.gz_done and not got.results[-1].gzip_incomplete
        assert got.lines == [b'{"a":1}'] * 20 + [b'{"b":2}'] * 20


def test_gzip_only_header_written(tmp_path: Path) -> None:
    p = tmp_path / "h.gz"
    p.write_bytes(gzip.compress(b"a\n", mtime=0)[:10])
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=1024)
        res = r.read()
        if not res.eof:
            res = r.read()
    assert res.eof and res.gzip_incomplete and res.lines == []


def test_gzip_resume_from_offset(tmp_path: Path) -> None:
    content = b"".join(line + b"\n" for line in corpus_bytes().split(b"\n")[:30])
    p = tmp_path / "r.log.gz"
    p.write_bytes(gz_members(content, [len(content) // 2]))
    boundaries = [0] + [i + 1 for i, b in enumerate(content) if b == 0x0A]
    max_line = 1 << 20
    for off in boundaries[:: max(1, len(boundaries) // 8)] + [boundaries[-1]]:
        with opened(p) as fd:
            r = LineReader(fd, offset=off, gz=True, chunk_bytes=777, max_line_bytes=max_line)
            got = drain(r)
        assert got.results[0].start == off
        check_against(got, expected_for(content, max_line, off), r, max_line)


def test_gzip_resume_past_content_end_is_corrupt_input(tmp_path: Path) -> None:
    p = tmp_path / "short.gz"
    p.write_bytes(gzip.compress(b"a\nb\n"))
    with opened(p) as fd:
        r = LineReader(fd, offset=100, gz=True, chunk_bytes=4096, max_line_bytes=1024)
        with pytest.raises(CorruptInputError):
            r.read()


def test_corrupt_gzip_raises(tmp_path: Path) -> None:
    content = corpus_bytes()
    comp = bytearray(gzip.compress(content, mtime=0))
    mid = len(comp) // 2
    for i in range(mid, mid + 16):
        comp[i] ^= 0xFF
    p = tmp_path / "bad.gz"
    p.write_bytes(bytes(comp))
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=1 << 20)
        with pytest.raises(CorruptInputError):
            drain(r)


def test_bad_crc_raises(tmp_path: Path) -> None:
    comp = bytearray(gzip.compress(b'{"a":1}\n' * 100, mtime=0))
    comp[-8] ^= 0x01  # CRC32 of the trailer
    p = tmp_path / "crc.gz"
    p.write_bytes(bytes(comp))
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=1024)
        with pytest.raises(CorruptInputError):
            drain(r)


def test_plain_file_read_as_gzip_raises(tmp_path: Path) -> None:
    p = tmp_path / "notgz.gz"
    p.write_bytes(b'{"a":1}\n' * 10)
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=1024)
        with pytest.raises(CorruptInputError):
            r.read()


def test_gzip_oversize_line(tmp_path: Path) -> None:
    max_line = 1024
    content = b"a\n" + b"B" * 300_000 + b"\nc\n"
    p = tmp_path / "o.gz"
    p.write_bytes(gzip.compress(content))
    with opened(p) as fd:
        r = LineReader(fd, offset=0, gz=True, chunk_bytes=4096, max_line_bytes=max_line)
        got = drain(r)
    check_against(got, expected_for(content, max_line), r, max_line)
    assert got.oversize == [(2, 300_001)]


def test_reset_starts_over(tmp_path: Path) -> None:
    p = tmp_path / "t.log"
    p.write_bytes(b"one\ntwo\n")
    with opened(p) as fd:
        r = LineReader(fd, offset=4, gz=False, chunk_bytes=4096, max_line_bytes=1024)
        assert drain(r).lines == [b"two"]
        os.truncate(p, 0)
        p.write_bytes(b"three\n")
        r.reset()
        got = drain(r)
    assert got.lines == [b"three"] and got.ends == [6] and r.consumed == 6


# -- property --------------------------------------------------------------------------------------

_counter = itertools.count()


@pytest.fixture(scope="module")
def prop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reader_prop")


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=40),
    tail=st.integers(min_value=0, max_value=400),
    chunk=st.integers(min_value=1, max_value=500),
    max_line=st.integers(min_value=1, max_value=200),
    gz=st.booleans(),
    crlf=st.booleans(),
    seed=st.integers(min_value=0, max_value=1000),
    gz_read=st.integers(min_value=1, max_value=300),
    members=st.integers(min_value=1, max_value=4),
)
def test_property_lines_and_oversize_tile_the_input(
    prop_dir: Path,
    lengths: list[int],
    tail: int,
    chunk: int,
    max_line: int,
    gz: bool,
    crlf: bool,
    seed: int,
    gz_read: int,
    members: int,
) -> None:
    content = lines_with_lengths(lengths, seed, crlf) + b"t" * tail
    p = prop_dir / f"p{next(_counter)}"
    rnd = random.Random(seed)
    if gz:
        cuts = rnd.sample(range(1, len(content)), min(members - 1, max(0, len(content) - 1))) if len(content) > 1 else []
        p.write_bytes(gz_members(content, cuts))
    else:
        p.write_bytes(content)
    old = reader_mod._GZ_READ
    reader_mod._GZ_READ = gz_read
    try:
        with opened(p) as fd:
            r = LineReader(fd, offset=0, gz=gz, chunk_bytes=chunk, max_line_bytes=max_line)
            got = drain(r)
    finally:
        reader_mod._GZ_READ = old
        p.unlink()
    # the returned pieces, in offset order, tile [0, consumed) exactly at the input's newlines
    pieces = [(end - len(line) - 1, end) for line, end in zip(got.lines, got.ends)]
    pieces += [(off, off + length) for off, length in got.oversize]
    pieces.sort()
    pos = 0
    for a, b in pieces:
        assert a == pos
        assert content[b - 1 : b] == b"\n" and b"\n" not in content[a : b - 1]
        pos = b
    last_nl = content.rfind(b"\n")
    assert pos == last_nl + 1 == r.consumed
    for line, end in zip(got.lines, got.ends):
        assert content[end - len(line) - 1 : end - 1] == line
        assert len(line) <= max_line
    for off, length in got.oversize:
        assert length - 1 > max_line
    assert got.max_pending <= max_line
    check_against(got, expected_for(content, max_line), r, max_line)
