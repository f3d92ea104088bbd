"""Find the files to read: configured globs plus the backups kube-apiserver makes next to them.

kube-apiserver (lumberjack) rotates `<dir>/<name><ext>` by renaming it to
`<dir>/<name>-<2006-01-02T15-04-05.000><ext>` and, with --audit-log-compress, gzips that to `….gz`.
A *family* is one active path plus its backups; inside a family files are read oldest first (by the
timestamp in the name) and the active file last, so events keep file order across rotations.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import re
from dataclasses import dataclass

from kube_audit_shipper.model import FileStat

_TS = r"(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An input the config selects that exists but cannot be read (listed, stat'ed or opened)."""

    path: str
    reason: str  # permission_denied, io_error, other
    error: str  # the system's message

    @staticmethod
    def of(path: str, exc: OSError) -> Unreadable:
        reason = {errno.EACCES: "permission_denied", errno.EPERM: "permission_denied", errno.EIO: "io_error"}.get(exc.errno or 0, "other")
        return Unreadable(path, reason, exc.strerror or str(exc))


@dataclass(frozen=True, slots=True)
class Found:
    stat: FileStat
    family: str  # the active path this file belongs to
    rank: tuple[int, str]  # order inside the family: backups (0, timestamp), the active file (1, "")

    @property
    def path(self) -> str:
        return self.stat.path


def backup_pattern(active_path: str) -> re.Pattern[str]:
    """Regex for the backup names of `active_path`: `<name>-<ts><ext>` and `<name>-<ts><ext>.gz`."""
    base = os.path.basename(active_path)
    name, ext = os.path.splitext(base)
    return re.compile(re.escape(name) + "-" + _TS + re.escape(ext) + r"(?:\.gz)?\Z")


def split_backup(path: str) -> tuple[str, str] | None:
    """If `path` looks like a kube-apiserver backup, return (its active path, timestamp)."""
    d, base = os.path.split(path)
    base = base.removesuffix(".gz")
    m = re.match(r"(?P<name>.+)-" + _TS + r"(?P<ext>\.[^.]*)?\Z", base)
    if not m:
        return None
    return os.path.join(d, m.group("name") + (m.group("ext") or "")), m.group("ts")


def _stat(path: str, problems: list[Unreadable]) -> FileStat | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(Unreadable.of(path, exc))
        return None
    if not os.path.isfile(path):
        return None
    return FileStat(path=path, dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime=st.st_mtime)


def discover(patterns: list[str], exclude: list[str], problems: list[Unreadable] | None = None) -> list[Found]:
    """Every readable file the config selects, with its family and rank; one entry per inode. What exists
    but cannot be listed or stat'ed (typically EACCES: kube-apiserver makes the audit directory 0700)
    is appended to `problems`: the caller reports it, never silently."""
    problems = [] if problems is None else problems
    actives: set[str] = set()
    backups: dict[str, tuple[str, str]] = {}
    for pattern in patterns:
        pattern = os.path.abspath(os.path.expanduser(pattern))
        matched = glob.glob(pattern) if glob.has_magic(pattern) else ([pattern] if os.path.exists(pattern) else [])
        if not glob.has_magic(pattern):
            actives.add(pattern)  # the configured path is the active file, even while it does not exist
        for path in matched:
            split = split_backup(path)
            if split:
                backups[path] = split
            else:
                actives.add(path)
    for active in list(actives):
        d = os.path.dirname(active)
        regex = backup_pattern(active)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        except OSError as exc:  # typically EACCES: kube-apiserver makes the audit directory 0700
            problems.append(Unreadable.of(d, exc))
            continue
        for name in names:
            m = regex.match(name)
            if m:
                backups[os.path.join(d, name)] = (active, m.group("ts"))
    found: dict[tuple[int, int], Found] = {}
    candidates = [(p, p, (1, "")) for p in actives] + [(p, fam, (0, ts)) for p, (fam, ts) in backups.items()]
    for path, family, rank in candidates:
        if any(fnmatch.fnmatch(path, x) or fnmatch.fnmatch(os.path.basename(path), x) for x in exclude):
            continue
        st = _stat(path, problems)
        if st is None:
            continue
        key = (st.dev, st.ino)
        # one inode seen under two names (a hard link, or a rename between listdir and stat): keep the active name
        if key not in found or rank > found[key].rank:
            found[key] = Found(stat=st, family=family, rank=rank)
    return sorted(found.values(), key=lambda f: (f.family, f.rank, f.path))


def watch_dirs(patterns: list[str]) -> set[str]:
    """Directories whose changes matter: the deepest non-glob directory of each pattern."""
    dirs = set()
    for pattern in patterns:
        pattern = os.path.abspath(os.path.expanduser(pattern))
        d = os.path.dirname(pattern)
        while glob.has_magic(d):
            d = os.path.dirname(d)
        dirs.add(d)
    return dirs
