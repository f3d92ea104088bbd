"""Value types that cross stages.

A Chunk is a run of whole lines of one file, [start, end) in that file's content offsets, after
processing: `records` are the events to ship, `ends[i]` the end offset of the input that record i
stands for. Lines that produce no record (dropped by policy, dead-lettered, blank) are folded into
the range of the next record, and the last record's range reaches `end`, so acknowledging every
record of a chunk acknowledges the whole range. A chunk with no records is acknowledged at once.

An Alert is what detection raises: one record, JSON-encoded as it is delivered to alert targets and
printed by `detect --json`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

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
