"""A model of an audit log directory, changed on disk and in the model in the same step.

The model-based tailer test (tests/torture/test_tailer_model.py) drives a real audit directory the way
kube-apiserver (lumberjack) and a copytruncate log rotator change it, and needs to know afterwards, for
every line ever written, where it was: which file, at which content offsets, under which names, and
how that file left the disk. A `Container` is one file's content over its life (a copytruncate ends
one and starts the next on the same inode; a gzipped backup is a new container holding the same lines
at the same content offsets). Lines are unique events (tests/support/corpus.py `numbered_lines`), so
their bytes identify them in a sink's output.

The agent's checkpoint names files by (dev, inode) plus a BLAKE2b-64 fingerprint of the first
`fp_len` content bytes (docs/ARCHITECTURE.md, checkpoints.json): `Container.holds_head` answers whether
an entry can be this container, without any of the agent's code.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.corpus import numbered_lines

BACKUP_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the time of the first backup; each rotation is a second later


@dataclass(eq=False)
class Line:
    data: bytes  # without its newline
    step: int  # the step in which it became whole (its newline written)

    @property
    def nbytes(self) -> int:
        return len(self.data) + 1


@dataclass(eq=False)
class Container:
    cid: int
    dev: int
    ino: int
    names: list[str]  # every path it had, oldest first
    gz: bool
    born: int  # step
    content: bytearray = field(default_factory=bytearray)  # for gzip: decompressed
    lines: list[tuple[int, int, Line]] = field(default_factory=list)  # (start, end past the newline, line)
    gone: int | None = None  # step it left the disk
    how_gone: str = ""  # "deleted", "truncated" (copytruncate), "gzipped" (replaced by its .gz)

    @property
    def path(self) -> str:
        return self.names[-1]

    @property
    def on_disk(self) -> bool:
        return self.gone is None

    @property
    def whole_len(self) -> int:
        """Content offset past the last whole line (a partial line being written is not counted)."""
        return self.lines[-1][1] if self.lines else 0

    def holds_head(self, fp_len: int, fp: str) -> bool:
        """True if this container's first fp_len content bytes hash to fp (it can be that checkpoint entry)."""
        return len(self.content) >= fp_len and hashlib.blake2b(bytes(self.content[:fp_len]), digest_size=8).hexdigest() == fp


class AuditDir:
    """The audit directory of one example: `audit.log` and its backups, on disk and modelled.

    Writes go to the active file only, as kube-apiserver's do. Every method keeps the model equal to the
    disk; `check_disk` verifies it (a broken model would make every verdict meaningless)."""

    def __init__(self, directory: Path, *, prefix: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.active_path = self.dir / "audit.log"
        self.prefix = prefix
        self.step = 0
        self.step_times: dict[int, float] = {0: time.time()}  # wall clock at the start of each step (log times compare to it)
        self.containers: list[Container] = []
        self.lines: list[Line] = []
        self.places: dict[bytes, list[tuple[Container, int, int]]] = {}  # line bytes -> where it was
        self.pending: tuple[bytes, int] | None = None  # a line being written: (its bytes, how many are on disk)
        self.rotations = 0
        self.copies = 0  # copytruncate copies (audit.log.1, .2, ...: names the agent does not read)
        self.written_lines = 0
        self.active = self._create(self.active_path)

    def next_step(self) -> None:
        self.step += 1
        self.step_times[self.step] = time.time()

    # -- building blocks -------------------------------------------------------------------------
    def _create(self, path: Path, *, gz: bool = False) -> Container:
        with open(path, "xb"):
            pass
        st = os.stat(path)
        c = Container(cid=len(self.containers), dev=st.st_dev, ino=st.st_ino, names=[str(path)], gz=gz, born=self.step)
        self.containers.append(c)
        return c

    def _append(self, data: bytes) -> None:
        with open(self.active_path, "ab") as fh:
            fh.write(data)
        self.active.content += data

    def _next_lines(self, n: int) -> list[bytes]:
        out = numbered_lines(n, start=self.written_lines, prefix=self.prefix)
        self.written_lines += n
        return out

    def _whole(self, data: bytes, start: int) -> None:
        line = Line(data, self.step)
        end = start + len(data) + 1
        self.active.lines.append((start, end, line))
        self.lines.append(line)
        self.places.setdefault(data, []).append((self.active, start, end))

    def _backup_name(self) -> Path:
        stamp = (BACKUP_EPOCH + dt.timedelta(seconds=self.rotations)).strftime("%Y-%m-%dT%H-%M-%S") + ".000"
        self.rotations += 1
        return self.dir / f"audit-{stamp}.log"

    # -- what kube-apiserver does ----------------------------------------------------------------
    def write_lines(self, n: int) -> None:
        """Finish a partial line if one is being written, then append n whole lines (one write)."""
        data = b""
        if self.pending is not None:
            line, done = self.pending
            start = self.active.whole_len
            data += line[done:] + b"\n"
            self._whole(line, start)
            self.pending = None
        start = self.active.whole_len
        for line in self._next_lines(n):
            self._whole(line, start)
            start += len(line) + 1
            data += line + b"\n"
        self._append(data)

    def write_partial(self, fraction: float) -> None:
        """Write the first part of a new line (after finishing any partial one); a later write completes it."""
        if self.pending is not None:
            self.write_lines(0)
        [line] = self._next_lines(1)
        done = max(1, min(len(line) - 1, int(len(line) * fraction)))
        self.pending = (line, done)
        self._append(line[:done])

    def finish_line(self) -> None:
        if self.pending is not None:
            self.write_lines(0)

    def rotate(self) -> Path:
        """Rename audit.log to audit-<timestamp>.log and start a new empty audit.log, as lumberjack does
        (it writes whole lines: a line being written is finished first)."""
        self.finish_line()
        backup = self._backup_name()
        os.rename(self.active_path, backup)
        self.active.names.append(str(backup))
        self.active = self._create(self.active_path)
        return backup

    def plain_backups(self) -> list[Container]:
        return sorted((c for c in self.backups() if not c.gz), key=lambda c: c.path)

    def backups(self) -> list[Container]:
        """Backups on disk, oldest first (by the timestamp in the name, which sorts as text)."""
        return sorted((c for c in self.containers if c.on_disk and c is not self.active and "/audit-" in c.path), key=lambda c: c.path)

    def gzip_backup(self, plain: Container, parts: int) -> Path:
        """Compress a backup as lumberjack does: write `<name>.gz` (in `parts` writes, so the agent may see
        it half written), then remove the plain file."""
        target = Path(plain.path + ".gz")
        packed = gzip.compress(bytes(plain.content), mtime=0)
        g = self._create(target, gz=True)
        cut = [len(packed) * i // parts for i in range(parts + 1)]
        with open(target, "ab") as fh:
            for a, b in zip(cut, cut[1:], strict=False):
                fh.write(packed[a:b])
                fh.flush()
        g.content = bytearray(plain.content)
        g.lines = list(plain.lines)
        for start, end, line in g.lines:
            self.places[line.data].append((g, start, end))
        os.unlink(plain.path)
        plain.gone, plain.how_gone = self.step, "gzipped"
        return target

    def delete_oldest_backup(self) -> Container:
        """What --audit-log-maxbackup does: remove the oldest backup (plain or gzipped)."""
        oldest = self.backups()[0]
        os.unlink(oldest.path)
        oldest.gone, oldest.how_gone = self.step, "deleted"
        return oldest

    # -- what a copytruncate rotator does --------------------------------------------------------
    def copytruncate(self) -> Path:
        """Copy audit.log to audit.log.<n> (a name the agent does not read) and truncate audit.log to 0:
        the lines the agent had not read yet are only in the copy, which is inherent to copytruncate."""
        self.finish_line()
        self.copies += 1
        copy = self.dir / f"audit.log.{self.copies}"
        copy.write_bytes(bytes(self.active.content))
        os.truncate(self.active_path, 0)
        old = self.active
        old.gone, old.how_gone = self.step, "truncated"
        st = os.stat(self.active_path)
        new = Container(cid=len(self.containers), dev=st.st_dev, ino=st.st_ino, names=[str(self.active_path)], gz=False, born=self.step)
        self.containers.append(new)
        self.active = new
        return copy

    # -- queries ---------------------------------------------------------------------------------
    def on_disk(self) -> list[Container]:
        """Files on disk the agent is to read (the active file and the backups)."""
        return [c for c in self.containers if c.on_disk]

    def check_disk(self) -> None:
        """The model matches the directory: same files, identities and contents."""
        names = {c.path: c for c in self.on_disk()}
        actual = {str(p) for p in self.dir.iterdir() if not p.name.startswith("audit.log.")}
        assert actual == set(names), f"model and disk differ: on disk only {sorted(actual - set(names))}, model only {sorted(set(names) - actual)}"
        for path, c in names.items():
            st = os.stat(path)
            assert (st.st_dev, st.st_ino) == (c.dev, c.ino), f"{path}: identity differs from the model"
            raw = Path(path).read_bytes()
            assert (gzip.decompress(raw) if c.gz else raw) == bytes(c.content), f"{path}: content differs from the model"
