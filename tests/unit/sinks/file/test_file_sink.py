"""Unit tests for kube_audit_shipper.sinks.file.sink: zstd NDJSON files, rotation, temp names, crash recovery, and the
sink contract (encode -> requests, one-attempt send, classify: ENOSPC is Retry and the retry appends to a
clean end; a permission error is Blocked)."""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import random
import re
import shutil
import subprocess
import time
import types
from pathlib import Path

import pytest
import zstandard

from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.config import BatchConfig, RetryConfig
from kube_audit_shipper.delivery.contract import Blocked, Delivered, Reply, Request, Retry
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.durable import valid_prefix
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.sinks.file import sink as sink_mod
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.sinks.file.sink import FileSink
from tests.support.corpus import DATA
from tests.support.sink_context import context

CTX = context(Path("/var/lib/kube-audit-shipper"), node="n1")  # a file sink keeps nothing in the state directory

CORPUS_DIR = DATA / "real-audit"
MiB = 1 << 20
FINAL_RE = re.compile(r"^audit-(\d{8}T\d{6}\.\d{6})Z-(\d{4})\.ndjson\.zst$")
TMP_RE = re.compile(r"^\.audit-\d{8}T\d{6}\.\d{6}Z-\d{4}\.ndjson\.zst\.tmp$")
ZSTD = shutil.which("zstd")


def corpus_lines() -> list[bytes]:
    files = sorted(CORPUS_DIR.glob("*.jsonl"))
    assert files
    return [line for p in files for line in p.read_bytes().split(b"\n") if line.strip()]


def cfg(path: Path, **kw: object) -> FileSinkConfig:
    return FileSinkConfig(name="archive", path=str(path), **kw)  # type: ignore[arg-type]


def ndjson(batches: list[list[bytes]]) -> bytes:
    return b"".join(b"".join(r + b"\n" for r in batch) for batch in batches)


def zstd_lib_decompress(path: Path) -> bytes:
    with path.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()


def zstd_cli_decompress(path: Path) -> bytes:
    if ZSTD is None:
        pytest.skip("zstd command not installed")
    proc = subprocess.run([ZSTD, "-d", "-c", "-q", str(path)], capture_output=True, check=True, timeout=30)
    return proc.stdout


def finished(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def temps(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.startswith("."))


def encode_one(sink: FileSink, records: list[bytes]) -> Request:
    """The file sink encodes a batch as exactly one request covering every record."""
    requests = sink.encode(records)
    assert len(requests) == 1
    (req,) = requests
    assert list(req.indices) == list(range(len(records)))
    return req


async def ship(sink: FileSink, records: list[bytes]) -> None:
    """Encode, send (one attempt) and classify, as the engine does; the write must be Delivered."""
    for req in sink.encode(records):
        reply = await sink.send(req)
        assert isinstance(reply, Reply) and isinstance(sink.classify(req, reply), Delivered)


def frames_of(data: bytes) -> list[bytes]:
    """Split concatenated zstd frames."""
    out = []
    pos = 0
    while pos < len(data):
        dobj = zstandard.ZstdDecompressor().decompressobj()
        dobj.decompress(data[pos:])
        end = len(data) - len(dobj.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


# -- writing ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_finished_file_decompresses_to_exact_ndjson(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = FileSink(cfg(out), CTX)
    lines = corpus_lines()
    batches = [lines[i : i + 37] for i in range(0, len(lines), 37)]
    for b in batches:
        await ship(sink, b)
    # before close: only a hidden temp file
    assert finished(out) == []
    (tmp,) = temps(out)
    assert TMP_RE.match(tmp.name), tmp.name
    await sink.aclose()
    assert temps(out) == []
    (final,) = finished(out)
    assert FINAL_RE.match(final.name), final.name
    assert final.name == tmp.name[1:].removesuffix(".tmp")
    expected = ndjson(batches)
    assert zstd_lib_decompress(final) == expected
    assert zstd_cli_decompress(final) == expected
    assert sink.files_finished == 1
    # one frame per batch, each with a content checksum
    frames = frames_of(final.read_bytes())
    assert len(frames) == len(batches)
    for fr, b in zip(frames, batches):
        assert zstandard.get_frame_parameters(fr).has_checksum
        assert zstandard.ZstdDecompressor().decompress(fr) == ndjson([b])


@pytest.mark.asyncio
async def test_zstd_cli_integrity_check(tmp_path: Path) -> None:
    if ZSTD is None:
        pytest.skip("zstd command not installed")
    sink = FileSink(cfg(tmp_path, compression_level=19), CTX)
    for i in range(5):
        await ship(sink, [b'{"i":%d}' % i])
    await sink.aclose()
    (final,) = finished(tmp_path)
    await asyncio.to_thread(subprocess.run, [ZSTD, "-t", "-q", str(final)], check=True, timeout=30)
    assert zstd_lib_decompress(final) == b"".join(b'{"i":%d}\n' % i for i in range(5))


@pytest.mark.asyncio
async def test_aclose_without_writes_leaves_nothing(tmp_path: Path) -> None:
    sink = FileSink(cfg(tmp_path), CTX)
    await sink.aclose()
    assert list(tmp_path.iterdir()) == []
    assert sink.files_finished == 0


@pytest.mark.asyncio
async def test_rotation_by_size_names_sort_by_time(tmp_path: Path) -> None:
    rnd = random.Random(7)
    sink = FileSink(cfg(tmp_path, rotate_bytes=MiB), CTX)
    batches: list[list[bytes]] = []
    max_payload = 0
    for i in range(70):
        # hardly compressible records, so files reach rotate_bytes quickly
        batch = [b'{"i":%d,"j":%d,"blob":"%s"}' % (i, j, base64.b64encode(rnd.randbytes(3000))) for j in range(20)]
        batches.append(batch)
        req = encode_one(sink, batch)
        max_payload = max(max_payload, len(req.payload))
        await sink.send(req)
    await sink.aclose()
    files = finished(tmp_path)
    assert len(files) >= 3
    assert temps(tmp_path) == []
    assert sink.files_finished == len(files)
    stamps = [FINAL_RE.match(f.name).groups() for f in files]  # type: ignore[union-attr]
    assert stamps == sorted(stamps)
    # sorted by name == written order: the concatenation is exactly what was sent, in order
    assert b"".join(zstd_lib_decompress(f) for f in files) == ndjson(batches)
    for f in files[:-1]:
        size = f.stat().st_size
        assert MiB <= size < MiB + max_payload
    for f in files:
        assert zstd_cli_decompress(f) == zstd_lib_decompress(f)


@pytest.mark.asyncio
async def test_rotation_by_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sink_mod, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    sink = FileSink(cfg(tmp_path, rotate_age_s=60), CTX)
    await ship(sink, [b'{"a":1}'])
    now[0] += 59.9
    await sink.tick(now[0])
    assert finished(tmp_path) == []
    now[0] += 0.1
    await sink.tick(now[0])
    assert len(finished(tmp_path)) == 1 and temps(tmp_path) == []
    await ship(sink, [b'{"a":2}'])
    now[0] += 61
    await ship(sink, [b'{"a":3}'])  # an old file is finished before appending
    await sink.aclose()
    files = finished(tmp_path)
    assert [zstd_lib_decompress(f) for f in files] == [b'{"a":1}\n', b'{"a":2}\n', b'{"a":3}\n']


@pytest.mark.asyncio
async def test_compression_none_writes_plain_ndjson(tmp_path: Path) -> None:
    sink = FileSink(cfg(tmp_path, compression="none"), CTX)
    await ship(sink, [b'{"a":1}', b'{"b":2}'])
    (tmp,) = temps(tmp_path)
    assert tmp.name.endswith(".ndjson.tmp") and tmp.name.startswith(".audit-")
    await sink.aclose()
    (final,) = finished(tmp_path)
    assert final.name.endswith(".ndjson") and not final.name.endswith(".zst")
    assert final.read_bytes() == b'{"a":1}\n{"b":2}\n'


# -- crash recovery --------------------------------------------------------------------------------

TMP_NAME = ".audit-20261122T100000.000000Z-0001.ndjson.zst.tmp"


def good_frames(n: int) -> tuple[list[bytes], list[bytes]]:
    lines = corpus_lines()
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    plains = [b"".join(line + b"\n" for line in lines[i * 3 : i * 3 + 3]) for i in range(n)]
    return [cctx.compress(p) for p in plains], plains


def test_recovery_cuts_a_torn_last_frame_at_every_byte(tmp_path: Path) -> None:
    frames, plains = good_frames(6)
    good, last = b"".join(frames[:5]), frames[5]
    for cut in range(len(last) + 1):
        d = tmp_path / f"c{cut}"
        d.mkdir()
        (d / TMP_NAME).write_bytes(good + last[:cut])
        sink = FileSink(cfg(d), CTX)
        assert temps(d) == [], cut
        (final,) = finished(d)
        assert final.name == TMP_NAME[1:].removesuffix(".tmp")
        if cut == len(last):  # the last frame is whole: nothing to cut
            assert final.read_bytes() == good + last
            assert zstd_lib_decompress(final) == b"".join(plains)
            assert sink.cut_bytes == 0
        else:
            assert final.read_bytes() == good, cut
            assert zstd_lib_decompress(final) == b"".join(plains[:5])
            assert sink.cut_bytes == cut
        assert sink.recovered_bytes == final.stat().st_size
    if ZSTD is not None:
        d = tmp_path / f"c{len(last) // 2}"
        assert zstd_cli_decompress(finished(d)[0]) == b"".join(plains[:5])


@pytest.mark.asyncio
async def test_recovery_after_crash_of_a_real_sink(tmp_path: Path) -> None:
    sink = FileSink(cfg(tmp_path), CTX)
    batches = [[b'{"n":%d}' % (i * 10 + j) for j in range(10)] for i in range(4)]
    for b in batches:
        await ship(sink, b)
    (tmp,) = temps(tmp_path)
    # crash: the process dies mid-append of a fifth batch
    torn = encode_one(sink, [b'{"n":"torn"}'] * 50).payload
    os.close(sink._fd)  # type: ignore[arg-type]
    with tmp.open("ab") as fh:
        fh.write(torn[: len(torn) // 2])
    again = FileSink(cfg(tmp_path), CTX)
    (final,) = finished(tmp_path)
    assert temps(tmp_path) == []
    assert zstd_lib_decompress(final) == ndjson(batches)
    assert zstd_cli_decompress(final) == ndjson(batches)
    # the recovered sink writes new files next to it
    await ship(again, [b'{"after":1}'])
    await again.aclose()
    files = finished(tmp_path)
    assert len(files) == 2
    assert zstd_lib_decompress(files[1]) == b'{"after":1}\n'


@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"\x00" * 100, b"\x28\xb5\x2f\xfd" + b"\xff" * 20, b"x"],
)
def test_recovery_cuts_garbage_after_good_frames(tmp_path: Path, garbage: bytes) -> None:
    frames, plains = good_frames(3)
    (tmp_path / TMP_NAME).write_bytes(b"".join(frames) + garbage)
    sink = FileSink(cfg(tmp_path), CTX)
    (final,) = finished(tmp_path)
    assert final.read_bytes() == b"".join(frames)
    assert sink.cut_bytes == len(garbage)
    assert zstd_lib_decompress(final) == b"".join(plains)


def test_recovery_cuts_a_valid_frame_not_ending_in_newline(tmp_path: Path) -> None:
    frames, _ = good_frames(2)
    odd = zstandard.ZstdCompressor(write_checksum=True).compress(b'{"half":')
    (tmp_path / TMP_NAME).write_bytes(b"".join(frames) + odd)
    FileSink(cfg(tmp_path), CTX)
    (final,) = finished(tmp_path)
    assert final.read_bytes() == b"".join(frames)


def test_recovery_keeps_prefix_before_a_corrupt_frame(tmp_path: Path) -> None:
    frames, plains = good_frames(4)
    bad = bytearray(frames[2])
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / TMP_NAME).write_bytes(frames[0] + frames[1] + bytes(bad) + frames[3])
    FileSink(cfg(tmp_path), CTX)
    (final,) = finished(tmp_path)
    assert final.read_bytes() == frames[0] + frames[1]
    assert zstd_lib_decompress(final) == plains[0] + plains[1]


@pytest.mark.parametrize("content", [b"", b"garbage only", b"\x28\xb5\x2f\xfd"])
def test_recovery_removes_temp_without_any_good_frame(tmp_path: Path, content: bytes) -> None:
    (tmp_path / TMP_NAME).write_bytes(content)
    FileSink(cfg(tmp_path), CTX)
    assert list(tmp_path.iterdir()) == []


def test_recovery_compression_none_keeps_whole_lines(tmp_path: Path) -> None:
    name = ".audit-20261122T100000.000000Z-0001.ndjson.tmp"
    (tmp_path / name).write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    sink = FileSink(cfg(tmp_path, compression="none"), CTX)
    (final,) = finished(tmp_path)
    assert final.name == "audit-20261122T100000.000000Z-0001.ndjson"
    assert final.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert sink.cut_bytes == len(b'{"c":')


def test_recovery_ignores_other_prefixes_and_finished_files(tmp_path: Path) -> None:
    frames, _ = good_frames(1)
    other = tmp_path / ".other-20261122T100000.000000Z-0001.ndjson.zst.tmp"
    other.write_bytes(frames[0] + b"junk")
    done = tmp_path / "audit-20261122T090000.000000Z-0001.ndjson.zst"
    done.write_bytes(frames[0])
    FileSink(cfg(tmp_path), CTX)
    assert other.read_bytes() == frames[0] + b"junk"
    assert done.read_bytes() == frames[0]


def test_valid_prefix_none_and_zstd(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"a\nb\nc")
    assert valid_prefix(p, "none") == 4
    p.write_bytes(b"")
    assert valid_prefix(p, "zstd") == 0
    frames, _ = good_frames(3)
    p.write_bytes(b"".join(frames))
    assert valid_prefix(p, "zstd") == len(b"".join(frames))


# -- write failures --------------------------------------------------------------------------------


class FailingWrite:
    """os.write replacement for the sink's fd: optionally writes `partial` bytes first, then fails once."""

    def __init__(self, fd_getter, partial: int = 0) -> None:  # type: ignore[no-untyped-def]
        self.real = os.write
        self.fd_getter = fd_getter
        self.partial = partial
        self.armed = True
        self.calls = 0

    def __call__(self, fd: int, data) -> int:  # type: ignore[no-untyped-def]
        if fd != self.fd_getter() or not self.armed:
            return self.real(fd, data)
        self.calls += 1
        if self.partial and self.calls == 1:
            return self.real(fd, bytes(data)[: self.partial])
        self.armed = False
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("partial", [0, 1, 50])
@pytest.mark.asyncio
async def test_enospc_is_retry_leaves_no_partial_frame_and_the_retry_appends_to_a_clean_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: int
) -> None:
    sink = FileSink(cfg(tmp_path), CTX)
    first = [b'{"n":%d}' % i for i in range(20)]
    await ship(sink, first)
    (tmp,) = temps(tmp_path)
    size_before = tmp.stat().st_size
    second = [b'{"m":%d,"pad":"%s"}' % (i, b"z" * 40) for i in range(30)]
    req = encode_one(sink, second)
    assert len(req.payload) > partial
    fake = FailingWrite(lambda: sink._fd, partial)
    monkeypatch.setattr(sink_mod.os, "write", fake)
    with pytest.raises(OSError) as ei:
        await sink.send(req)
    assert ei.value.errno == errno.ENOSPC
    assert fake.calls >= 1 and not fake.armed
    outcome = sink.classify(req, ei.value)
    assert isinstance(outcome, Retry), outcome
    assert "ENOSPC" in outcome.reason and str(tmp_path) in outcome.reason
    # the file holds only whole frames: nothing of the failed batch
    assert tmp.stat().st_size == size_before
    assert valid_prefix(tmp, "zstd") == size_before
    reply = await sink.send(req)  # the retry (the fake now passes writes through)
    assert isinstance(sink.classify(req, reply), Delivered)
    await sink.aclose()
    monkeypatch.undo()
    (final,) = finished(tmp_path)
    assert zstd_lib_decompress(final) == ndjson([first, second])
    assert zstd_cli_decompress(final) == ndjson([first, second])


@pytest.mark.asyncio
async def test_enospc_on_first_write_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FileSink(cfg(tmp_path), CTX)
    fake = FailingWrite(lambda: sink._fd)
    monkeypatch.setattr(sink_mod.os, "write", fake)
    req = encode_one(sink, [b'{"x":1}'])
    with pytest.raises(OSError) as ei:
        await sink.send(req)
    assert isinstance(sink.classify(req, ei.value), Retry)
    (tmp,) = temps(tmp_path)
    assert tmp.stat().st_size == 0
    await sink.send(req)
    await sink.aclose()
    monkeypatch.undo()
    (final,) = finished(tmp_path)
    assert zstd_lib_decompress(final) == b'{"x":1}\n'


@pytest.mark.asyncio
async def test_enospc_on_fsync_is_cut_back_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write went through but the fsync reports ENOSPC (delayed allocation): the frame is taken out."""
    sink = FileSink(cfg(tmp_path), CTX)
    await ship(sink, [b'{"k":1}'])
    (tmp,) = temps(tmp_path)
    size_before = tmp.stat().st_size
    real_fsync = os.fsync
    armed = [True]

    def fsync(fd: int) -> None:
        if armed[0] and fd == sink._fd:
            armed[0] = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(sink_mod.os, "fsync", fsync)
    req = encode_one(sink, [b'{"k":2}'])
    with pytest.raises(OSError) as ei:
        await sink.send(req)
    assert isinstance(sink.classify(req, ei.value), Retry)
    assert tmp.stat().st_size == size_before
    await sink.send(req)
    await sink.aclose()
    monkeypatch.undo()
    (final,) = finished(tmp_path)
    assert zstd_lib_decompress(final) == b'{"k":1}\n{"k":2}\n'


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (errno.ENOSPC, Retry),
        (errno.EDQUOT, Retry),
        (errno.EIO, Retry),
        (errno.EINTR, Retry),
        (errno.EACCES, Blocked),
        (errno.EROFS, Blocked),
        (errno.ENOENT, Blocked),
    ],
)
def test_classify_os_errors(tmp_path: Path, err: int, kind: type) -> None:
    sink = FileSink(cfg(tmp_path), CTX)
    req = encode_one(sink, [b'{"a":1}'])
    outcome = sink.classify(req, OSError(err, os.strerror(err)))
    assert isinstance(outcome, kind), outcome
    assert errno.errorcode[err] in outcome.reason and str(tmp_path) in outcome.reason


def test_classify_reply_and_other_exceptions(tmp_path: Path) -> None:
    sink = FileSink(cfg(tmp_path), CTX)
    req = encode_one(sink, [b'{"a":1}'])
    assert isinstance(sink.classify(req, Reply(200, {}, b"")), Delivered)
    other = sink.classify(req, RuntimeError("boom"))
    assert isinstance(other, Retry) and "RuntimeError" in other.reason
    assert sink.split(req, [b'{"a":1}']) == []  # a local file has no request size limit
    assert sink.max_concurrency == 1


def test_encode_is_one_checksummed_frame(tmp_path: Path) -> None:
    sink = FileSink(cfg(tmp_path, compression_level=1), CTX)
    req = encode_one(sink, [b"a", b"b"])
    assert req.raw_bytes == 4
    assert zstandard.get_frame_parameters(req.payload).has_checksum
    assert zstandard.ZstdDecompressor().decompress(req.payload) == b"a\nb\n"
    plain = encode_one(FileSink(cfg(tmp_path / "p", compression="none"), CTX), [b"a", b"b"])
    assert plain.payload == b"a\nb\n" and plain.raw_bytes == 4


@pytest.mark.asyncio
async def test_engine_retries_enospc_and_each_batch_lands_once_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real SinkRunner: the disk is full for a while (some writes partial); the runner
    retries; the file ends up with every batch exactly once, whole frames, in order, all acknowledged."""
    out, state = tmp_path / "out", tmp_path / "state"
    sink = FileSink(cfg(out), CTX)
    rnd = random.Random(5)
    real_write = os.write
    failures = {"left": 6, "short": False}

    def write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        """The disk fills: sometimes a short write first, then ENOSPC on the next call."""
        if fd != sink._fd or failures["left"] == 0:
            return real_write(fd, data)
        if failures["short"]:
            failures["short"] = False
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if rnd.random() < 0.5:
            return real_write(fd, data)
        n = rnd.choice([0, 1, len(data) // 2])
        if n:
            failures["short"] = True
            return real_write(fd, bytes(data)[:n])
        failures["left"] -= 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sink_mod.os, "write", write)
    lines = corpus_lines()[:120]
    ends, pos = [], 0
    for line in lines:
        pos += len(line) + 1
        ends.append(pos)
    chunks = [Chunk(1, 0 if i == 0 else ends[i - 1], ends[i + 9], list(lines[i : i + 10]), ends[i : i + 10], time.monotonic()) for i in range(0, 120, 10)]
    ledger = Ledger(["archive"])
    ledger.open(1, 0)
    dl = DeadLetterStore(state, max_bytes=MiB, max_event_bytes=MiB)
    try:
        runner = SinkRunner(
            sink,
            batch=BatchConfig(max_events=10, max_bytes=MiB, max_wait_ms=3_600_000),
            retry=RetryConfig(initial_ms=1, max_ms=5),
            concurrency=4,
            ledger=ledger,
            deadletter=dl,
        )
        task = asyncio.get_running_loop().create_task(runner.run())
        for c in chunks:
            runner.queue.put_nowait(c)
        await runner.stop()
        await asyncio.wait_for(task, 10)
        await asyncio.wait_for(runner.finish(None), 10)
        await sink.aclose()
    finally:
        dl.close()
    monkeypatch.undo()
    assert failures["left"] == 0 and runner.retries == 6
    assert runner.last_error is not None and "ENOSPC" in runner.last_error
    assert ledger.offset(1) == ends[-1]
    (final,) = finished(out)
    assert zstd_lib_decompress(final) == b"".join(line + b"\n" for line in lines)
    assert len(frames_of(final.read_bytes())) == len(chunks)
