"""Value types that cross stages.

A Chunk is a run of whole lines of one file, [start, end) in that file's content offsets, after
processing: `records` are the events to ship, `ends[i]` the end offset of the input that record i
stands for. Lines that produce no record (dropped by policy, dead-lettered, blank) are folded into
the range of the next record, and the last record's range reaches `end`, so acknowledging every
record of a chunk acknowledges the whole range. A chunk with no records is acknowledged at once.
"""

from __future__ import annotations


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
