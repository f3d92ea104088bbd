"""Unit tests for kube_audit_shipper.checkpoint.store: the atomic checkpoint file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kube_audit_shipper.checkpoint.files import FileRecord
from kube_audit_shipper.checkpoint.store import VERSION, CheckpointStore
from kube_audit_shipper.durable import write_atomic
from kube_audit_shipper.errors import StateError
from kube_audit_shipper.model import Fingerprint


def entries() -> list[FileRecord]:
    return [
        FileRecord(path="/var/log/kubernetes/audit/audit.log", dev=64768, ino=1312, fp_len=1024, fp="00112233445566aa", offset=777),
        FileRecord(
            path="/var/log/kubernetes/audit/audit-2026-11-22T10-00-00.000.log",
            dev=64768,
            ino=1311,
            fp_len=1024,
            fp="9f2c4e0b5a1d7c33",
            gzip=False,
            offset=104857187,
            complete=True,
            gone_since=None,
        ),
        FileRecord(
            path="/var/log/kubernetes/audit/audit-2026-11-21T10-00-00.000.log.gz",
            dev=64768,
            ino=99,
            fp_len=17,
            fp="0123456789abcdef",
            gzip=True,
            offset=12,
            gone_since=1763805600.5,
        ),
    ]


def key(e: FileRecord) -> tuple[str, int, int]:
    return (e.path, e.dev, e.ino)


def test_load_absent_is_none(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path).load() is None
    assert CheckpointStore(tmp_path / "does" / "not" / "exist").load() is None


def test_round_trip(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")  # the directory is created on save
    es = entries()
    assert store.save(es) is True
    loaded = CheckpointStore(tmp_path / "state").load()
    assert loaded is not None
    assert sorted(loaded, key=key) == sorted(es, key=key)
    by_ino = {e.ino: e for e in loaded}
    assert by_ino[99].gone_since == 1763805600.5 and by_ino[99].gzip is True
    assert by_ino[1311].complete is True and by_ino[1311].offset == 104857187
    assert by_ino[1312].fingerprint == Fingerprint(1024, "00112233445566aa")


def test_file_format(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(entries())
    doc = json.loads((tmp_path / "checkpoints.json").read_bytes())
    assert doc["version"] == VERSION == 1
    assert isinstance(doc["written_at"], float)
    assert {f["ino"] for f in doc["files"]} == {1311, 1312, 99}
    assert set(doc["files"][0]) == {
        "path",
        "dev",
        "ino",
        "fp_len",
        "fp",
        "gzip",
        "offset",
        "complete",
        "gone_since",
        "size",
        "lost",
        "detected_upto",
        "pending_alerts",
    }


def test_a_checkpoint_written_before_size_and_lost_existed_still_loads(tmp_path: Path) -> None:
    old = {"path": "/a.log", "dev": 1, "ino": 2, "fp_len": 3, "fp": "0011223344556677", "gzip": False, "offset": 5, "complete": False, "gone_since": None}
    (tmp_path / "checkpoints.json").write_text(json.dumps({"version": 1, "written_at": 1.0, "files": [old]}))
    [entry] = CheckpointStore(tmp_path).load() or []
    assert (entry.offset, entry.size, entry.lost) == (5, 0, False)


def test_empty_list_round_trips(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.save([]) is True
    assert CheckpointStore(tmp_path).load() == []


def test_unchanged_state_is_not_rewritten(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    es = entries()
    assert store.save(es) is True
    assert store.writes == 1
    mtime = (tmp_path / "checkpoints.json").stat().st_mtime_ns
    content = (tmp_path / "checkpoints.json").read_bytes()
    assert store.save(es) is False
    assert store.save(list(reversed(es))) is False  # order does not matter
    assert store.save([FileRecord(**{f: getattr(e, f) for f in e.__struct_fields__}) for e in es]) is False  # equal copies
    assert store.writes == 1
    assert (tmp_path / "checkpoints.json").read_bytes() == content
    assert (tmp_path / "checkpoints.json").stat().st_mtime_ns == mtime
    es[0].offset += 1
    assert store.save(es) is True
    assert store.writes == 2
    loaded = CheckpointStore(tmp_path).load()
    assert loaded is not None
    assert {e.ino: e.offset for e in loaded}[1312] == 778


def test_no_temp_file_left_after_save(tmp_path: Path) -> None:
    CheckpointStore(tmp_path).save(entries())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints.json"]


def test_leftover_tmp_from_crash_does_not_affect_load(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(entries())
    good = (tmp_path / "checkpoints.json").read_bytes()
    (tmp_path / "checkpoints.json.tmp").write_bytes(b'{"version":1,"written_at":1.0,"files":[{"path":"/x","dev"')  # torn
    loaded = CheckpointStore(tmp_path).load()
    assert loaded is not None and sorted(loaded, key=key) == sorted(entries(), key=key)
    # and the next save replaces it cleanly
    es = entries()[:1]
    assert CheckpointStore(tmp_path).save(es) is True
    assert not (tmp_path / "checkpoints.json.tmp").exists()
    assert CheckpointStore(tmp_path).load() == es
    assert (tmp_path / "checkpoints.json").read_bytes() != good


def test_leftover_tmp_without_main_file_is_first_start(tmp_path: Path) -> None:
    (tmp_path / "checkpoints.json.tmp").write_bytes(b'{"version":1,"written_at":1.0,"files":[]}')
    assert CheckpointStore(tmp_path).load() is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"version":1,"written_at":1.0,"files":[{"path":"/x","dev"',  # torn
        b"\x00" * 64,
        b"[]",
        b'{"version":1,"written_at":1.0,"files":[{"path":"/x"}]}',  # entries lack required fields
        b'{"version":"1","written_at":1.0,"files":[]}',
    ],
)
def test_corrupt_main_file_raises_state_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "checkpoints.json"
    path.write_bytes(raw)
    with pytest.raises(StateError) as ei:
        CheckpointStore(tmp_path).load()
    msg = str(ei.value)
    assert str(path) in msg
    assert "not a valid checkpoint file" in msg
    assert "move it away" in msg  # tells the operator what to do


@pytest.mark.parametrize("version", [0, 2, 99])
def test_version_mismatch_raises_state_error(tmp_path: Path, version: int) -> None:
    (tmp_path / "checkpoints.json").write_bytes(b'{"version":%d,"written_at":1.0,"files":[]}' % version)
    with pytest.raises(StateError) as ei:
        CheckpointStore(tmp_path).load()
    msg = str(ei.value)
    assert f"version {version}" in msg and "not supported" in msg


def test_newer_version_with_other_layout_reports_the_version(tmp_path: Path) -> None:
    """A file written by a newer agent may have another layout: the error must say 'version', not 'damage'."""
    (tmp_path / "checkpoints.json").write_bytes(b'{"version":2,"written_at":1.0,"streams":{"a":1}}')
    with pytest.raises(StateError) as ei:
        CheckpointStore(tmp_path).load()
    assert "version 2" in str(ei.value) and "not supported" in str(ei.value)


def test_unreadable_state_raises_state_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoints.json").mkdir()  # reading a directory fails with EISDIR
    with pytest.raises(StateError) as ei:
        CheckpointStore(tmp_path).load()
    assert "cannot read" in str(ei.value)


def test_write_atomic_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    (tmp_path / "f.tmp").write_bytes(b"garbage from a crash, longer than the new content")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert not (tmp_path / "f.tmp").exists()


def test_older_generation_never_overwrites_a_newer_snapshot(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    a, b, c = entries()[:1], entries()[1:2], entries()[2:]
    assert store.save(a, generation=2) is True
    assert store.save(b, generation=1) is False  # a late write of an older snapshot
    assert CheckpointStore(tmp_path).load() == a
    assert store.save(b, generation=2) is True
    assert store.save(c, generation=3) is True
    assert CheckpointStore(tmp_path).load() == c
    assert store.writes == 3
