"""Unit tests for kube_audit_shipper.sinks.s3.staging: frames fsynced per batch, rotation by size / age / partition,
torn tails cut at the last whole frame after a crash, the persistent counter, the space bound."""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import msgspec
import pytest
import zstandard

from kube_audit_shipper.sinks.s3 import staging as staging_mod
from kube_audit_shipper.sinks.s3.keys import KeyTemplate
from kube_audit_shipper.sinks.s3.staging import Staging, StagingFullError, valid_prefix
from tests.support.corpus import numbered_lines
from tests.support.wait import until_blocking

MiB = 1 << 20
T0 = datetime(2026, 11, 22, 9, 59, 0, tzinfo=UTC)
TEMPLATE = "audit/dt=%Y-%m-%d/hour=%H/{node}-{first_ts}-{seq}.ndjson"


def frame(lines: list[bytes], codec: str) -> bytes:
    data = b"".join(x + b"\n" for x in lines)
    if codec == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


def decompress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()


def staging(tmp: Path, codec: Literal["zstd", "gzip"] = "zstd", **kw: float) -> Staging:
    keys = KeyTemplate(TEMPLATE + (".zst" if codec == "zstd" else ".gz"), node="cp-1", fields={})
    args = {"max_bytes": 64 * MiB, "object_max_bytes": 5 * MiB, "object_max_age_s": 300.0, **kw}
    return Staging(tmp / "staging", codec=codec, keys=keys, **args)  # type: ignore[arg-type]


def put(st: Staging, payload: bytes, t: datetime = T0) -> None:
    st.append(payload, first_time=t, partition=st.keys.partition(t), values={})


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_frames_concatenate_into_one_valid_object(tmp_path: Path, codec: Literal["zstd", "gzip"]) -> None:
    st = staging(tmp_path, codec)
    lines = numbered_lines(300)
    for i in range(0, 300, 100):
        put(st, frame(lines[i : i + 100], codec))
    assert st.objects == 1 and st.sealed_count == 0
    assert st.seal() and st.sealed_count == 1
    obj = st.next_sealed()
    assert obj is not None and obj.size == obj.data.stat().st_size == st.used_bytes
    assert decompress(obj.data.read_bytes(), codec).splitlines() == lines
    assert obj.key == f"audit/dt=2026-11-22/hour=09/cp-1-20261122T095900Z-{obj.seq}.ndjson" + (".zst" if codec == "zstd" else ".gz")
    meta = json.loads(obj.meta.read_bytes())
    assert meta["v"] == 1 and meta["key"] == obj.key and meta["compression"] == codec
    st.remove(obj)
    assert st.used_bytes == 0 and not obj.data.exists() and not obj.meta.exists() and st.objects == 0


def test_rotation_by_size_age_and_forward_partition(tmp_path: Path) -> None:
    st = staging(tmp_path, object_max_age_s=0.3)
    put(st, os.urandom(5 * MiB))  # staging takes bytes as they are: one batch fills an object
    assert st.sealed_count == 1  # sealed at object_max_bytes, right after the append
    put(st, frame([b'{"a":1}'], "zstd"), T0)
    put(st, frame([b'{"a":2}'], "zstd"), T0 - timedelta(minutes=5))  # late event, earlier partition: stays
    assert st.objects == 2 and st.sealed_count == 1
    put(st, frame([b'{"a":3}'], "zstd"), T0 + timedelta(minutes=1))  # 10:00: the hour partition moved on
    assert st.sealed_count == 2
    assert st.seconds_to_seal() is not None
    until_blocking(lambda: st.seconds_to_seal() == 0, what="the open object reaching object_max_age_s")
    assert st.seal_if_old() and st.sealed_count == 3
    keys = [o.key for o in st._sealed]
    assert [k.split("/")[2] for k in keys] == ["hour=09", "hour=09", "hour=10"]
    numbers = [o.number for o in st._sealed]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_crash_recovery_cuts_the_torn_tail_and_keeps_every_whole_frame(tmp_path: Path, codec: Literal["zstd", "gzip"]) -> None:
    st = staging(tmp_path, codec)
    lines = numbered_lines(200)
    put(st, frame(lines[:100], codec))
    put(st, frame(lines[100:], codec))
    obj = st._current
    assert obj is not None
    good = obj.data.stat().st_size
    torn = frame(numbered_lines(50, start=500), codec)
    with obj.data.open("ab") as fh:  # a crash in the middle of the third batch's write
        fh.write(torn[: len(torn) // 2])
    st.close()  # the process dies: nothing else runs

    again = staging(tmp_path, codec)
    assert again.recovered_objects == 1 and again.cut_bytes == len(torn) // 2
    rec = again.next_sealed()
    assert rec is not None and rec.recovered and rec.key == obj.key and rec.size == good == again.used_bytes
    assert decompress(rec.data.read_bytes(), codec).splitlines() == lines
    assert valid_prefix(rec.data, codec) == good


def test_a_frame_that_is_whole_but_corrupt_is_cut_with_everything_after_it(tmp_path: Path) -> None:
    st = staging(tmp_path)
    put(st, frame([b'{"a":1}'], "zstd"))
    second = bytearray(frame([b'{"a":2}'] * 50, "zstd"))
    second[len(second) // 2] ^= 0xFF  # bit rot inside the second frame: its checksum fails
    put(st, bytes(second))
    put(st, frame([b'{"a":3}'], "zstd"))
    path = st._current.data  # type: ignore[union-attr]
    st.close()
    first = len(frame([b'{"a":1}'], "zstd"))
    assert valid_prefix(path, "zstd") == first


def test_empty_and_orphan_files_are_cleaned_up(tmp_path: Path) -> None:
    st = staging(tmp_path)
    put(st, b"\x28\xb5\x2f\xfd")  # only a torn zstd magic number
    st.close()
    again = staging(tmp_path)
    assert again.objects == 0 and again.used_bytes == 0
    assert sorted(p.name for p in again.dir.iterdir()) == ["seq"]


def test_counter_survives_restarts_and_is_never_reused(tmp_path: Path) -> None:
    seen = set()
    for _ in range(3):
        st = staging(tmp_path)
        put(st, frame([b'{"a":1}'], "zstd"))
        st.seal()
        obj = st.next_sealed()
        assert obj is not None
        seen.add(obj.number)
        st.remove(obj)  # uploaded: nothing staged is left to tell the number
        st.close()
    assert sorted(seen) == [1, 2, 3]
    assert (tmp_path / "staging" / "seq").read_text().strip() == "4"


def test_the_space_bound_refuses_a_batch_and_removal_frees_it(tmp_path: Path) -> None:
    st = staging(tmp_path, max_bytes=11 * MiB, object_max_bytes=5 * MiB)
    chunk = os.urandom(3 * MiB)
    put(st, chunk)
    put(st, chunk)  # 6 MiB: the first object is sealed
    put(st, chunk)  # 9 MiB
    with pytest.raises(StagingFullError, match="bytes staged"):
        put(st, chunk)  # 12 MiB > 11 MiB
    first = st.next_sealed()
    assert first is not None
    st.remove(first)
    put(st, chunk)  # room again
    assert st.used_bytes == 2 * len(chunk)  # the removed object held two batches


def test_a_batch_larger_than_the_bound_is_taken_when_nothing_is_staged(tmp_path: Path) -> None:
    st = staging(tmp_path, max_bytes=1 * MiB, object_max_bytes=5 * MiB)
    put(st, os.urandom(2 * MiB))  # never a deadlock on one oversize batch
    assert st.used_bytes == 2 * MiB


def test_a_failed_write_leaves_a_clean_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = staging(tmp_path)
    put(st, frame([b'{"a":1}'], "zstd"))
    size = st.used_bytes
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        put(st, frame([b'{"a":2}'], "zstd"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert st.used_bytes == size and st._current is not None and st._current.data.stat().st_size == size
    put(st, frame([b'{"a":3}'], "zstd"))
    st.seal()
    obj = st.next_sealed()
    assert obj is not None and decompress(obj.data.read_bytes(), "zstd") == b'{"a":1}\n{"a":3}\n'


def test_rekey_gives_a_new_unique_key_and_keeps_the_data(tmp_path: Path) -> None:
    st = staging(tmp_path)
    put(st, frame([b'{"a":1}'], "zstd"))
    st.seal()
    obj = st.next_sealed()
    assert obj is not None
    old_key, old_number = obj.key, obj.number
    st.rekey(obj)
    assert obj.key != old_key and obj.number == old_number and obj.seq.startswith("000002-")
    assert msgspec.json.decode(obj.meta.read_bytes())["key"] == obj.key
    st.close()
    assert staging(tmp_path).next_sealed().key == obj.key  # type: ignore[union-attr]


def test_only_the_object_being_filled_is_scanned_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = staging(tmp_path)
    put(st, frame(numbered_lines(100), "zstd"))
    st.seal()  # sealed: its meta records the final size
    put(st, frame(numbered_lines(100, start=100), "zstd"))  # being filled when the process dies
    st.close()
    scanned: list[Path] = []
    real = staging_mod.valid_prefix

    def spy(path: Path, codec: Literal["zstd", "gzip"]) -> int:
        scanned.append(path)
        return real(path, codec)

    monkeypatch.setattr(staging_mod, "valid_prefix", spy)
    again = staging(tmp_path)
    assert again.recovered_objects == 2 and [p.name for p in scanned] == ["000000000002.data"]
    again.close()
    scanned.clear()
    assert staging(tmp_path).recovered_objects == 2 and scanned == []  # scanned once, then marked sealed
