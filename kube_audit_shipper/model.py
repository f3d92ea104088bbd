"""Value types that cross stages.

A Chunk is a run of whole lines of one file, [start, end) in that file's content offsets, after
processing: `records` are the events to ship, `ends[i]` the end offset of the input that record i
stands for. Lines that produce no record (dropped by policy, dead-lettered, blank) are folded into
the range of the next record, and the last record's range reaches `end`, so acknowledging every
record of a chunk acknowledges the whole range. A chunk with no records is acknowledged at once.

An Alert is what detection raises: one record, JSON-encoded as it is delivered to alert targets and
printed by `detect --json`. Alerts travel in a Chunk of their own, over the same input range as the
events they were raised on, so a file's checkpoint never passes an event before its alerts are delivered.

A file is known by FileStat (what discovery saw) and a Fingerprint of its first bytes; Lines are what the
reader hands on from one read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

FP_BYTES = 1024  # a fingerprint covers the first min(size, 1 KiB) content bytes


@dataclass(frozen=True, slots=True)
class FileStat:
    """What discovery learned of one file on disk."""

    path: str
    dev: int
    ino: int
    size: int
    mtime: float


@dataclass(slots=True)
class Fingerprint:
    """BLAKE2b-64 of a file's first `length` content bytes (decompressed for gzip)."""

    length: int
    digest: str

    @classmethod
    def of(cls, head: bytes) -> Fingerprint:
        head = head[:FP_BYTES]
        return cls(len(head), _digest(head))

    @property
    def full(self) -> bool:
        return self.length >= FP_BYTES

    def matches(self, head: bytes) -> bool:
        """True if `head` (the file's current first bytes) starts with the fingerprinted bytes."""
        return len(head) >= self.length and _digest(head[: self.length]) == self.digest

    def distinctive(self, head: bytes) -> bool:
        """Strong enough to identify content across inodes: 1 KiB, or at least one whole line."""
        return self.full or (self.length > 0 and b"\n" in head[: self.length])


def _digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=8).hexdigest()


@dataclass(slots=True)
class Lines:
    """The whole lines of one read of one file (content offsets: decompressed for gzip)."""

    start: int  # offset of the first byte covered
    end: int  # offset just past the last whole line
    lines: list[bytes] = field(default_factory=list)  # without the newline
    ends: list[int] = field(default_factory=list)  # end offset (past the newline) of each line
    oversize: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of skipped long lines
    raw_bytes: int = 0  # bytes read from disk for this call (compressed for gzip)
    eof: bool = False  # no more data right now
    gzip_incomplete: bool = False  # gzip stream ends without its trailer (still being written?)


Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")  # most severe first


class AlertWindow(msgspec.Struct, kw_only=True, frozen=True):
    """The event-time window an aggregate alert counted over (RFC 3339 UTC, and its length)."""

    start: str
    end: str
    seconds: float


class Alert(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One detection. `time` is the event time (RFC 3339 UTC) of the event that raised it (for an
    aggregate: the event that crossed the threshold). `id` is stable for the same detection: the rule
    plus the auditID, or plus the group and window start for an aggregate; targets deduplicate on it.
    `fields` hold the rule's output fields (namespace, pod, command, source IP, ...); `count` and
    `window` are set for aggregates only."""

    rule: str
    severity: Severity
    time: str
    summary: str
    audit_ids: list[str]
    fields: dict[str, Any] = {}
    tags: list[str] = []
    id: str = ""
    group: str | None = None
    count: int | None = None
    window: AlertWindow | None = None
    node: str | None = None
    cluster: str | None = None


alert_encoder = msgspec.json.Encoder()
alert_decoder = msgspec.json.Decoder(Alert)


class Chunk:
    __slots__ = ("end", "ends", "fid", "last_line_end", "nbytes", "read_at", "records", "start", "starts")

    def __init__(self, fid: int, start: int, end: int, records: list[bytes], ends: list[int], read_at: float, starts: list[int] | None = None) -> None:
        self.fid = fid
        self.start = start
        self.end = end
        self.records = records
        self.ends = ends
        self.starts = starts  # offset of the line each record came from (for dead-letter locations)
        self.last_line_end = ends[-1] if ends else end  # ends[-1] may be extended over trailing dropped lines
        self.nbytes = sum(map(len, records)) + len(records)
        self.read_at = read_at

    def location(self, i: int) -> tuple[int, int]:
        """(offset, length) of the input line record i came from."""
        start = self.starts[i] if self.starts is not None else (self.start if i == 0 else self.ends[i - 1])
        end = self.ends[i] if i < len(self.ends) - 1 else self.last_line_end
        return start, end - start

    def range_of(self, i: int, j: int) -> tuple[int, int]:
        """Input range covered by records[i:j]."""
        return (self.start if i == 0 else self.ends[i - 1], self.ends[j - 1])

    def __repr__(self) -> str:
        return f"Chunk(fid={self.fid}, [{self.start}, {self.end}), {len(self.records)} records)"
