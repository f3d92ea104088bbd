"""checkpoint/files.py: matching a file found on disk to its saved record (the three rules of its docstring)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from kube_audit_shipper.checkpoint.files import FileRecord, FileRecords
from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.model import FP_BYTES, FileStat, Fingerprint
from kube_audit_shipper.source.identity import is_gzip_fd, read_head
from tests.support.corpus import DATA

TS1 = "2026-11-22T10-00-00.000"


def corpus_bytes() -> bytes:
    return b"".join(p.read_bytes() for p in sorted((DATA / "real-audit").glob("*.jsonl")))


def make(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def fstat(path: Path) -> FileStat:
    st = os.stat(path)
    return FileStat(path=str(path), dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime=st.st_mtime)


def head_of(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_head(fd, is_gzip_fd(fd))
    finally:
        os.close(fd)


def entry_for(path: Path, offset: int = 0) -> FileRecord:
    st = os.stat(path)
    fp = Fingerprint.of(head_of(path))
    return FileRecord(path=str(path), dev=st.st_dev, ino=st.st_ino, fp_len=fp.length, fp=fp.digest, offset=offset)


def match_checkpoint(stat: FileStat, head: bytes, records: list[FileRecord], claimed: set[int]) -> tuple[FileRecord | None, bool]:
    """FileRecords.lookup with `claimed` records held by live files; (the match, whether a stale record was retired)."""
    files = FileRecords(list(records), ledger=Ledger([]), forget_after_s=60, lost_grace_s=1)
    for fid, r in enumerate(r for r in records if id(r) in claimed):
        files.opened(fid, FileStat(r.path, r.dev, r.ino, r.size, 0.0), b"", r.gzip, r, r.offset, r.complete)
    before = len(files.records)
    got = files.lookup(stat, head)
    if got is not None:
        files.opened(len(records), stat, head, False, got, got.offset, got.complete)
    files.present({(stat.dev, stat.ino)})  # the end of the scan: a stale record no moved copy claimed is retired
    return got, len(files.records) < before


def test_rule1_same_inode_renamed_resumes(tmp_path: Path) -> None:
    content = corpus_bytes()[:5000]
    active = make(tmp_path / "audit.log", content[:700])
    e = entry_for(active, offset=321)
    other = entry_for(make(tmp_path / "other.log", b"other content\n"))
    with active.open("ab") as fh:  # it grew after the checkpoint
        fh.write(content[700:])
    backup = tmp_path / f"audit-{TS1}.log"
    os.rename(active, backup)
    got, stale = match_checkpoint(fstat(backup), head_of(backup), [other, e], set())
    assert got is e and stale is False


def test_rule2_same_inode_rewritten_is_stale(tmp_path: Path) -> None:
    p = make(tmp_path / "audit.log", b'{"first":"file"}\n' * 10)
    e = entry_for(p, offset=50)
    with p.open("r+b") as fh:  # truncated and rewritten in place: same inode, other content
        fh.truncate(0)
        fh.write(b'{"second":"file"}\n' * 10)
    assert os.stat(p).st_ino == e.ino
    got, stale = match_checkpoint(fstat(p), head_of(p), [e], set())
    assert got is None and stale is True


def test_a_stale_record_not_read_to_its_end_is_reported_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Truncated (or replaced on the same inode) while the agent was not running: what was not read is lost, said."""
    p = make(tmp_path / "audit.log", b'{"first":"file"}\n' * 10)
    e = entry_for(p, offset=50)
    e.size = p.stat().st_size
    with p.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b'{"second":"file"}\n' * 3)
    files = FileRecords([e], ledger=Ledger([]), forget_after_s=60, lost_grace_s=1)
    with caplog.at_level("ERROR"):
        assert files.lookup(fstat(p), head_of(p)) is None
        files.present({(e.dev, e.ino)})
    assert files.records == [] and files.lost_files == 1 and files.lost_bytes == e.size - 50
    assert any("truncated or replaced" in str(r.__dict__.get("why")) for r in caplog.records)


def test_a_stale_record_keeps_until_the_scan_ends_so_its_moved_copy_is_found(tmp_path: Path) -> None:
    """Two backups compressed in turn, the second .gz on the first one's freed inode: the first backup's record is
    not retired when that .gz is seen, so its own .gz (found later in the scan) still resumes it."""
    content1, content2 = corpus_bytes()[:3000], corpus_bytes()[3000:6000]
    b1 = make(tmp_path / f"audit-{TS1}.log", content1)
    r1 = entry_for(b1, offset=len(content1))
    r1.complete = True
    gz2 = tmp_path / "second.log.gz"
    os.rename(b1, tmp_path / "gone")  # keep the inode: the other .gz takes it
    (tmp_path / "gone").write_bytes(gzip.compress(content2))
    os.rename(tmp_path / "gone", gz2)
    gz1 = make(tmp_path / f"audit-{TS1}.log.gz", gzip.compress(content1))
    files = FileRecords([r1], ledger=Ledger([]), forget_after_s=60, lost_grace_s=1)
    assert files.lookup(fstat(gz2), head_of(gz2)) is None  # r1's inode, other content: stale, kept for now
    assert files.lookup(fstat(gz1), head_of(gz1)) is r1  # its content moved: resumed, not read again


def test_rule2_then_rule3_reports_stale_and_the_moved_entry(tmp_path: Path) -> None:
    a = make(tmp_path / "a.log", b'{"a":1}\n' * 5)
    b = make(tmp_path / "b.log", b'{"b":2}\n' * 5)
    ea, eb = entry_for(a), entry_for(b)
    a.write_bytes(b.read_bytes())  # a's inode now holds b's content
    got, stale = match_checkpoint(fstat(a), head_of(a), [ea, eb], set())
    assert got is eb and stale is True


def test_rule3_gzipped_backup_matches_by_content(tmp_path: Path) -> None:
    content = corpus_bytes()[:3000]
    log = make(tmp_path / f"audit-{TS1}.log", content)
    e = entry_for(log, offset=2000)
    gz = make(tmp_path / f"audit-{TS1}.log.gz", gzip.compress(content))
    assert os.stat(gz).st_ino != e.ino
    got, stale = match_checkpoint(fstat(gz), head_of(gz), [e], set())
    assert got is e and stale is False


def test_rule3_short_head_with_newline_matches_across_inodes(tmp_path: Path) -> None:
    head = b'{"a":1}\n{"b"'
    src = make(tmp_path / "a.log", head)
    e = entry_for(src)
    assert e.fp_len == len(head) < FP_BYTES
    dst = tmp_path / "moved.log"
    shutil.copyfile(src, dst)
    with dst.open("ab") as fh:
        fh.write(b":2}\n")
    got, stale = match_checkpoint(fstat(dst), head_of(dst), [e], set())
    assert got is e and stale is False


def test_rule3_short_head_without_newline_does_not_match_across_inodes(tmp_path: Path) -> None:
    src = make(tmp_path / "a.log", b'{"kind":"Event"')
    e = entry_for(src)
    dst = make(tmp_path / "other.log", b'{"kind":"Event","other":"file"}\n')
    got, stale = match_checkpoint(fstat(dst), head_of(dst), [e], set())
    assert got is None and stale is False
    # but the same inode, grown, is still the same file (rule 1)
    with src.open("ab") as fh:
        fh.write(b',"x":1}\n')
    got, stale = match_checkpoint(fstat(src), head_of(src), [e], set())
    assert got is e and stale is False


def test_rule3_empty_fingerprint_never_matches_across_inodes(tmp_path: Path) -> None:
    src = make(tmp_path / "a.log", b"")
    e = entry_for(src)
    assert e.fp_len == 0
    dst = make(tmp_path / "b.log", b'{"a":1}\n')
    assert match_checkpoint(fstat(dst), head_of(dst), [e], set()) == (None, False)


def test_claimed_entries_are_not_matched_twice(tmp_path: Path) -> None:
    content = corpus_bytes()[:2000]
    log = make(tmp_path / "audit.log", content)
    e = entry_for(log)
    copy = make(tmp_path / "copy.log", content)
    # the live file owns the entry: its copy is a new file
    assert match_checkpoint(fstat(copy), head_of(copy), [e], {id(e)}) == (None, False)
    assert match_checkpoint(fstat(copy), head_of(copy), [e], set()) == (e, False)
    # a claimed entry is not handed out again by inode either
    got, _ = match_checkpoint(fstat(log), head_of(log), [e], {id(e)})
    assert got is None


def test_match_prefers_same_inode_over_content_twin(tmp_path: Path) -> None:
    content = corpus_bytes()[:2000]
    a = make(tmp_path / "a.log", content)
    b = make(tmp_path / "b.log", content)
    ea, eb = entry_for(a), entry_for(b)
    assert match_checkpoint(fstat(b), head_of(b), [ea, eb], set()) == (eb, False)
    assert match_checkpoint(fstat(a), head_of(a), [eb, ea], set()) == (ea, False)
