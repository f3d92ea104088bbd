"""Unit tests for kube_audit_shipper.source.identity (fingerprints, checkpoint matching) and kube_audit_shipper.source.discover."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from kube_audit_shipper.model import FP_BYTES, FileStat, Fingerprint
from kube_audit_shipper.source.discover import Found, backup_pattern, discover, split_backup
from kube_audit_shipper.source.identity import is_gzip_fd, read_head
from tests.support.corpus import DATA

CORPUS_DIR = DATA / "real-audit"

TS0 = "2026-11-22T09-00-00.000"
TS1 = "2026-11-22T10-00-00.000"
TS2 = "2026-11-22T10-00-00.123"
TS3 = "2026-11-23T00-00-00.000"


def corpus_bytes() -> bytes:
    files = sorted(CORPUS_DIR.glob("*.jsonl"))
    assert files
    return b"".join(p.read_bytes() for p in files)


def fstat(path: Path) -> FileStat:
    st = os.stat(path)
    return FileStat(path=str(path), dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime=st.st_mtime)


def head_of(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_head(fd, is_gzip_fd(fd))
    finally:
        os.close(fd)


# -- backup names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "active", "ts"),
    [
        (f"audit-{TS1}.log", "audit.log", TS1),
        (f"audit-{TS1}.log.gz", "audit.log", TS1),
        (f"kubernetes-{TS1}.audit", "kubernetes.audit", TS1),
        (f"kubernetes-{TS1}.audit.gz", "kubernetes.audit", TS1),
        (f"kube-apiserver-audit-{TS2}.log", "kube-apiserver-audit.log", TS2),
        (f"audit-{TS1}", "audit", TS1),
    ],
)
def test_split_backup_names(name: str, active: str, ts: str) -> None:
    assert split_backup(f"/var/log/k8s/{name}") == (f"/var/log/k8s/{active}", ts)


def test_split_backup_gzipped_backup_of_extensionless_active() -> None:
    # lumberjack: active `audit` -> backup `audit-<ts>` -> compressed `audit-<ts>.gz`
    assert split_backup(f"/d/audit-{TS1}.gz") == ("/d/audit", TS1)


@pytest.mark.parametrize(
    "name",
    [
        "audit.log",
        "audit.log.gz",
        "audit-2026-11-22.log",
        "audit-2026-11-22T10-00-00.log",  # no milliseconds
        f"audit-{TS1}.log.1",
        f"audit-{TS1}.log.gz.tmp",
        f"-{TS1}.log",  # no name
    ],
)
def test_split_backup_rejects_non_backups(name: str) -> None:
    assert split_backup(f"/d/{name}") is None


def test_backup_pattern_matches_only_own_backups() -> None:
    rx = backup_pattern("/var/log/k8s/audit.log")
    assert rx.match(f"audit-{TS1}.log").group("ts") == TS1
    assert rx.match(f"audit-{TS1}.log.gz").group("ts") == TS1
    for other in (f"other-{TS1}.log", f"audit-{TS1}.txt", f"audit-{TS1}.log.1", f"xaudit-{TS1}.log", "audit.log", f"audit-{TS1}.LOG"):
        assert rx.match(other) is None, other
    rx2 = backup_pattern("/x/kubernetes.audit")
    assert rx2.match(f"kubernetes-{TS1}.audit")
    assert rx2.match(f"kubernetes-{TS1}.audit.gz")
    assert rx2.match(f"kubernetes-{TS1}.log") is None


# -- discovery -------------------------------------------------------------------------------------


def make(path: Path, content: bytes = b"x\n") -> Path:
    path.write_bytes(content)
    return path


def test_family_rank_order_backups_oldest_first_active_last(tmp_path: Path) -> None:
    d = tmp_path
    # created in an order unrelated to their timestamps
    make(d / "audit.log")
    make(d / f"audit-{TS2}.log")
    make(d / f"audit-{TS0}.log.gz", gzip.compress(b"old\n"))
    make(d / f"audit-{TS1}.log")
    make(d / "unrelated.log")
    make(d / f"unrelated-{TS1}.log")
    found = discover([str(d / "audit.log")], [])
    assert [os.path.basename(f.path) for f in found] == [f"audit-{TS0}.log.gz", f"audit-{TS1}.log", f"audit-{TS2}.log", "audit.log"]
    assert {f.family for f in found} == {str(d / "audit.log")}
    assert [f.rank for f in found] == [(0, TS0), (0, TS1), (0, TS2), (1, "")]
    assert all(isinstance(f, Found) and f.stat.size == os.stat(f.path).st_size for f in found)


def test_rank_not_name_orders_the_family(tmp_path: Path) -> None:
    """`audit` sorts before `audit-<ts>` by name, but the active file is read last."""
    d = tmp_path
    make(d / "audit")
    make(d / f"audit-{TS1}.gz", gzip.compress(b"y\n"))
    make(d / f"audit-{TS0}")
    found = discover([str(d / "audit")], [])
    assert [(os.path.basename(f.path), f.rank) for f in found] == [(f"audit-{TS0}", (0, TS0)), (f"audit-{TS1}.gz", (0, TS1)), ("audit", (1, ""))]


def test_two_families_each_ordered(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make(a / "audit.log")
    make(a / f"audit-{TS1}.log")
    make(b / "kubernetes.audit")
    make(b / f"kubernetes-{TS3}.audit.gz", gzip.compress(b"z\n"))
    make(b / f"kubernetes-{TS0}.audit")
    found = discover([str(b / "kubernetes.audit"), str(a / "audit.log")], [])
    by_family: dict[str, list[str]] = {}
    for f in found:
        by_family.setdefault(f.family, []).append(os.path.basename(f.path))
    assert by_family == {
        str(a / "audit.log"): [f"audit-{TS1}.log", "audit.log"],
        str(b / "kubernetes.audit"): [f"kubernetes-{TS0}.audit", f"kubernetes-{TS3}.audit.gz", "kubernetes.audit"],
    }
    # a family's files are contiguous in the result
    fams = [f.family for f in found]
    assert fams == sorted(fams, key=fams.index)


def test_glob_matching_backups_classifies_them_as_backups(tmp_path: Path) -> None:
    d = tmp_path
    make(d / "audit.log")
    make(d / f"audit-{TS1}.log")
    make(d / f"audit-{TS2}.log.gz", gzip.compress(b"y\n"))
    found = discover([str(d / "*.log*")], [])
    assert [(os.path.basename(f.path), f.family, f.rank) for f in found] == [
        (f"audit-{TS1}.log", str(d / "audit.log"), (0, TS1)),
        (f"audit-{TS2}.log.gz", str(d / "audit.log"), (0, TS2)),
        ("audit.log", str(d / "audit.log"), (1, "")),
    ]


def test_glob_matching_only_backups_keeps_their_family(tmp_path: Path) -> None:
    d = tmp_path
    make(d / "audit.log")
    make(d / f"audit-{TS1}.log.gz", gzip.compress(b"y\n"))
    found = discover([str(d / "*.gz")], [])
    assert [(os.path.basename(f.path), f.family, f.rank) for f in found] == [(f"audit-{TS1}.log.gz", str(d / "audit.log"), (0, TS1))]


def test_glob_gzipped_backup_of_extensionless_active_joins_its_family(tmp_path: Path) -> None:
    d = tmp_path
    make(d / f"audit-{TS0}")
    make(d / f"audit-{TS1}.gz", gzip.compress(b"y\n"))
    # the glob matches only backups (the active file `audit` is not there right now)
    found = discover([str(d / "audit-*")], [])
    assert [(os.path.basename(f.path), f.family, f.rank) for f in found] == [
        (f"audit-{TS0}", str(d / "audit"), (0, TS0)),
        (f"audit-{TS1}.gz", str(d / "audit"), (0, TS1)),
    ]


def test_backups_found_while_active_is_missing(tmp_path: Path) -> None:
    make(tmp_path / f"audit-{TS1}.log")
    found = discover([str(tmp_path / "audit.log")], [])
    assert [(os.path.basename(f.path), f.family) for f in found] == [(f"audit-{TS1}.log", str(tmp_path / "audit.log"))]


def test_missing_path_and_directories_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "dir.log").mkdir()
    assert discover([str(tmp_path / "nope.log"), str(tmp_path / "*.log")], []) == []


@pytest.mark.parametrize("exclude", [["*.gz"], ["audit-*.log.gz"], ["{d}/audit-" + TS2 + ".log.gz"]])
def test_exclude_globs(tmp_path: Path, exclude: list[str]) -> None:
    d = tmp_path
    make(d / "audit.log")
    make(d / f"audit-{TS1}.log")
    make(d / f"audit-{TS2}.log.gz", gzip.compress(b"y\n"))
    found = discover([str(d / "audit.log")], [x.format(d=d) for x in exclude])
    assert [os.path.basename(f.path) for f in found] == [f"audit-{TS1}.log", "audit.log"]


def test_exclude_active(tmp_path: Path) -> None:
    make(tmp_path / "audit.log")
    make(tmp_path / f"audit-{TS1}.log")
    found = discover([str(tmp_path / "audit.log")], ["audit.log"])
    assert [os.path.basename(f.path) for f in found] == [f"audit-{TS1}.log"]


def test_one_entry_per_inode_active_name_wins(tmp_path: Path) -> None:
    d = tmp_path
    make(d / "audit.log", b"same\n")
    os.link(d / "audit.log", d / f"audit-{TS1}.log")  # rename seen mid-way: both names, one inode
    make(d / f"audit-{TS0}.log")
    for patterns in ([str(d / "audit.log")], [str(d / "*.log")]):
        found = discover(patterns, [])
        keys = [(f.stat.dev, f.stat.ino) for f in found]
        assert len(keys) == len(set(keys))
        assert [os.path.basename(f.path) for f in found] == [f"audit-{TS0}.log", "audit.log"]


def test_one_entry_per_inode_two_backup_names_later_one_wins(tmp_path: Path) -> None:
    d = tmp_path
    make(d / "audit.log")
    make(d / f"audit-{TS0}.log", b"b\n")
    os.link(d / f"audit-{TS0}.log", d / f"audit-{TS1}.log")
    found = discover([str(d / "audit.log")], [])
    assert [os.path.basename(f.path) for f in found] == [f"audit-{TS1}.log", "audit.log"]


# -- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_of_is_blake2b64_of_first_kib() -> None:
    data = corpus_bytes()[:5000]
    fp = Fingerprint.of(data)
    assert fp.length == FP_BYTES == 1024
    assert fp.digest == hashlib.blake2b(data[:1024], digest_size=8).hexdigest()
    assert fp.full
    short = Fingerprint.of(data[:10])
    assert (short.length, short.full) == (10, False)
    assert short.digest == hashlib.blake2b(data[:10], digest_size=8).hexdigest()


def test_fingerprint_grows_and_matches() -> None:
    content = corpus_bytes()[:3000]
    sizes = [0, 1, 10, 200, 1023, 1024, 1025, 3000]
    for n in sizes:
        fp = Fingerprint.of(content[:n])
        assert fp.length == min(n, 1024)
        for m in sizes:
            # a head matches when it starts with the fingerprinted bytes: same or longer content
            assert fp.matches(content[:m]) == (m >= fp.length), (n, m)
    grown = [Fingerprint.of(content[:n]) for n in sizes]
    assert [g.length for g in grown] == sorted(g.length for g in grown)
    assert grown[-1] == Fingerprint.of(content[:1024])  # capped at 1 KiB


def test_fingerprint_does_not_match_rewritten_head() -> None:
    content = corpus_bytes()[:2000]
    fp = Fingerprint.of(content[:500])
    changed = bytearray(content)
    changed[499] ^= 1
    assert not fp.matches(bytes(changed))
    changed = bytearray(content)
    changed[500] ^= 1  # beyond the fingerprinted bytes: still the same file, grown
    assert fp.matches(bytes(changed))
    assert not Fingerprint.of(content).matches(b"")


def test_fingerprint_distinctive() -> None:
    assert not Fingerprint.of(b"").distinctive(b"")
    assert not Fingerprint.of(b"abc").distinctive(b"abc")
    assert not Fingerprint.of(b"abc").distinctive(b"abc\nmore")  # the newline lies beyond the fingerprint
    assert Fingerprint.of(b"abc\n").distinctive(b"abc\n")
    assert Fingerprint.of(b"x" * 2000).distinctive(b"x" * 2000)  # a full KiB, even without a newline


# -- read_head -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100, 1023, 1024, 1025, 50_000])
def test_read_head_gzip_equals_plain_head(tmp_path: Path, size: int) -> None:
    content = (corpus_bytes() * 2)[:size]
    plain = make(tmp_path / "a.log", content)
    gz = make(tmp_path / "a.log.gz", gzip.compress(content))
    assert head_of(plain) == content[:1024]
    assert head_of(gz) == content[:1024]


def test_read_head_multi_member_gzip_equals_plain_head(tmp_path: Path) -> None:
    content = corpus_bytes()[:4000]
    gz = make(tmp_path / "m.gz", gzip.compress(content[:300]) + gzip.compress(content[300:]))
    assert gzip.decompress(gz.read_bytes()) == content
    assert head_of(gz) == content[:1024]


def test_read_head_of_gzip_being_written_is_a_prefix(tmp_path: Path) -> None:
    content = corpus_bytes()[:20_000]
    comp = gzip.compress(content)
    for cut in (10, 50, 300, len(comp) // 2):
        gz = make(tmp_path / f"p{cut}.gz", comp[:cut])
        head = head_of(gz)
        assert content[:1024].startswith(head)


def test_is_gzip_fd(tmp_path: Path) -> None:
    for path, expect in ((make(tmp_path / "a.gz", gzip.compress(b"x\n")), True), (make(tmp_path / "a.log", b"x\n"), False), (make(tmp_path / "e", b""), False)):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert is_gzip_fd(fd) is expect
        finally:
            os.close(fd)
