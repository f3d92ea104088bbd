"""The benchmark's input: an audit log written and rotated as kube-apiserver does, deterministic given the seed.

Events come from one of the input mixes of `tests.bench.mixes` (by default the demo's `AuditEventGenerator`: the
size and level mix of a real control plane) and are written through the demo's `RotatingAuditWriter` (lumberjack's
rotation: ``audit-<UTC timestamp>.log`` backups). The rotation clock is fixed too (one minute per rotation from the
generator's start time), so the same mix, seed and size give the same file names and bytes; `AuditLog.digest`
(BLAKE2b of every byte, in file order) shows it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from kube_audit_shipper.demo.apiserver import OversizeLineError, RotatingAuditWriter, list_backups
from kube_audit_shipper.demo.events import DEFAULT_START_TIME
from tests.bench.mixes import DEFAULT_MIX, mix_lines


@dataclass(slots=True)
class AuditLog:
    path: Path  # the active file (--audit-log-path)
    mix: str = DEFAULT_MIX
    events: int = 0
    bytes: int = 0
    rotations: int = 0
    dropped: int = 0  # events longer than the rotation size, dropped as the apiserver drops them
    digest: str = ""
    files: list[Path] = field(default_factory=list)  # oldest backup first, the active file last

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "mix": self.mix,
            "files": len(self.files),
            "events": self.events,
            "bytes": self.bytes,
            "mean_event_bytes": round(self.bytes / self.events, 1) if self.events else 0,
            "rotations": self.rotations,
            "dropped_oversize": self.dropped,
            "blake2b": self.digest,
        }


def rotation_clock(start: datetime = DEFAULT_START_TIME) -> Callable[[], datetime]:
    """A clock for `RotatingAuditWriter` that advances one minute per call: deterministic backup names."""
    calls = 0

    def now() -> datetime:
        nonlocal calls
        calls += 1
        return start + timedelta(minutes=calls)

    return now


def write_backlog(path: Path, *, size_bytes: int, seed: int, rotate_bytes: int, mix: str = DEFAULT_MIX) -> AuditLog:
    """Write about `size_bytes` of events of `mix` to `path`, rotating at `rotate_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log = AuditLog(path, mix)
    digest = hashlib.blake2b(digest_size=16)
    with RotatingAuditWriter(path, max_bytes=rotate_bytes, clock=rotation_clock()) as writer:
        write, update = writer.write, digest.update
        for line in _up_to(mix_lines(mix, seed), size_bytes):
            try:
                write(line)
            except OversizeLineError:
                log.dropped += 1
                continue
            update(line)
            update(b"\n")
            log.events += 1
            log.bytes += len(line) + 1
        log.rotations = writer.rotations
    log.digest = digest.hexdigest()
    log.files = [*list_backups(path), path]
    assert sum(os.path.getsize(p) for p in log.files) == log.bytes
    return log


def _up_to(lines: Iterator[bytes], size_bytes: int) -> Iterator[bytes]:
    """Lines until, counting one newline each, they add up to at least `size_bytes`."""
    total = 0
    for line in lines:
        if total >= size_bytes:
            return
        total += len(line) + 1
        yield line


def iter_lines(files: list[Path], chunk: int = 1 << 20) -> Iterator[bytes]:
    """Every line of `files` in order, without newlines (for checks run by the benchmark, not for timing)."""
    for p in files:
        with open(p, "rb") as fh:
            rest = b""
            while data := fh.read(chunk):
                data = rest + data
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield from data[: cut - 1].split(b"\n")
                rest = data[cut:]
            if rest:
                yield rest
