"""A dead-letter store whose state directory refuses writes (full disk) keeps its records and never skips one.

The disk refusing a write is the real system call failing: `append_all` is replaced by one that raises
ENOSPC, exactly as os.write does on a full file system, until "space returns".
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from kube_audit_shipper.deadletter import store as store_mod
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.obs.logs import Scrubber
from kube_audit_shipper.obs.state_writes import StateWrites

MiB = 1 << 20


class Disk:
    """Stands in for the file system's answer to appends: full (ENOSPC) or not."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.refused = 0
        real = store_mod.append_all

        def append_all(fd: int, data: bytes) -> None:
            if self.full:
                self.refused += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, data)

        monkeypatch.setattr(store_mod, "append_all", append_all)


def add(store: DeadLetterStore, i: int) -> None:
    store.add(reason=f"malformed JSON {i}", sink=None, path="/var/log/audit.log", offset=i * 10, length=10, event=b'{"x":%d' % i)


def test_records_refused_by_a_full_disk_are_kept_in_order_and_written_when_space_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(monkeypatch)
    writes = StateWrites()
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024, state_writes=writes)
    add(store, 0)
    store.sync()
    disk.full = True
    for i in range(1, 6):
        add(store, i)  # never raises: the caller (the reader) goes on, and waits on `writable`
    assert not store.writable
    assert disk.refused >= 5
    assert writes.errors["deadletter"] >= 5
    assert "deadletter" in writes.failing() and "No space left on device (ENOSPC)" in writes.failing()["deadletter"]
    with pytest.raises(OSError):
        store.sync()  # so no checkpoint moves past lines whose dead letters are not durable
    assert not store.flush()
    disk.full = False
    assert store.flush()
    assert store.writable
    store.sync()
    assert writes.failing() == {}
    assert [r["reason"] for r in store.iter_records()] == [f"malformed JSON {i}" for i in range(6)]


def test_a_write_cut_short_by_a_full_disk_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # half of the record is written, then the disk is full
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024)
    add(store, 0)
    monkeypatch.setattr(os, "write", write)
    add(store, 1)
    assert not store.writable
    monkeypatch.setattr(os, "write", real_write)
    assert store.flush()
    store.sync()
    lines = b"".join(p.read_bytes() for p in sorted(store.dir.glob("*.ndjson"))).splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["malformed JSON 0", "malformed JSON 1"]


def test_reasons_never_keep_secrets_a_backend_echoed(tmp_path: Path) -> None:
    scrub = Scrubber(["LTAI5tEXAMPLEKEYID", "s3cr3t-Acc3ss-K3y"]).text
    store = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024, scrub=scrub)
    echoed = (
        "sink sls: 401 Unauthorized: request headers were Authorization: LOG LTAI5tEXAMPLEKEYID:c2lnbmF0dXJl, "
        "x-acs-security-token: CAIS1234567890abcdef, AccessKeyId=LTAI5tOTHERKEY; secret s3cr3t-Acc3ss-K3y"
    )
    store.add(reason=echoed, sink="sls", path=None, offset=None, length=None, event=b"{}")
    store.sync()
    [record] = store.iter_records()
    for leaked in ("LTAI5tEXAMPLEKEYID", "c2lnbmF0dXJl", "CAIS1234567890abcdef", "LTAI5tOTHERKEY", "s3cr3t-Acc3ss-K3y"):
        assert leaked not in record["reason"]
    assert record["reason"].startswith("sink sls: 401 Unauthorized")


def test_records_written_before_scrubbing_existed_are_scrubbed_when_listed(tmp_path: Path) -> None:
    (tmp_path / "deadletter").mkdir()
    old = {"v": 1, "time": 1.0, "sink": "loki", "reason": "403: Authorization: Bearer abcdefghijklmnop", "event": "{}"}
    (tmp_path / "deadletter" / f"{1:020d}.ndjson").write_text(json.dumps(old) + "\n")
    [record] = DeadLetterStore(tmp_path, max_bytes=MiB, max_event_bytes=1024).iter_records()
    assert "abcdefghijklmnop" not in record["reason"]


def test_the_store_directory_gets_an_explicit_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = DeadLetterStore(tmp_path / "state", max_bytes=MiB, max_event_bytes=1024)
        add(store, 0)
        store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state" / "deadletter").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    [segment] = (tmp_path / "state" / "deadletter").glob("*.ndjson")
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
