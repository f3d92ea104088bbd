"""The spool's segments in memory, and how they are found again when a spool opens.

A `Segment` indexes one segment file: its records (sorted by seq), where each lies, and which are acked.
`recover` reads a spool directory back (format: delivery/spool_format.py): every segment in order, every
record validated; an invalid record followed by a valid one is skipped (warning with segment and offset,
stats["corrupt_records"] += 1 per skipped region); invalid bytes with no valid record after them are a torn
tail, cut off durably (stats["torn_tails_cut"]); the newest segment, if at most a header long and invalid,
was torn while being created and is deleted (also counted in torn_tails_cut); any other invalid header gets
the file renamed to .corrupt (stats["quarantined_segments"]). Acks come from the cursor; fully acked
segments are deleted.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from kube_audit_shipper.delivery.spool_format import SEGMENT_HEADER_SIZE, SEGMENT_NAME, Cursor, decode_cursor, scan_segment, segment_header
from kube_audit_shipper.durable import cut_back, fsync_dir

_log = logging.getLogger(__name__)


class Segment:
    """In-memory index of one segment file: its records (sorted by seq) and which are acked."""

    __slots__ = ("acked", "first_unacked", "n_acked", "number", "path", "seqs", "size", "spans")

    def __init__(self, number: int, path: Path, size: int) -> None:
        self.number, self.path, self.size = number, path, size
        self.seqs: list[int] = []
        self.spans: list[tuple[int, int]] = []  # (offset, length) of each record
        self.acked = bytearray()
        self.n_acked = 0
        self.first_unacked = 0  # every record before this index is acked

    def add(self, seq: int, offset: int, length: int) -> None:
        self.seqs.append(seq)
        self.spans.append((offset, length))
        self.acked.append(0)

    def mark(self, i: int) -> bool:
        if self.acked[i]:
            return False
        self.acked[i] = 1
        self.n_acked += 1
        while self.first_unacked < len(self.seqs) and self.acked[self.first_unacked]:
            self.first_unacked += 1
        return True

    @property
    def done(self) -> bool:
        return self.n_acked == len(self.seqs)


def acked_ranges(segments: Iterable[Segment]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive acked records, as inclusive seq ranges (what the cursor stores)."""
    ranges: list[tuple[int, int]] = []
    extend = False
    for seg in segments:
        for seq, acked in zip(seg.seqs, seg.acked, strict=True):
            if acked and extend:
                ranges[-1] = (ranges[-1][0], seq)
            elif acked:
                ranges.append((seq, seq))
            extend = bool(acked)
    return ranges


def recover(directory: Path, stats: dict[str, int]) -> tuple[dict[int, Segment], int, int]:
    """The live segments of a spool directory by number, the next seq and the next segment number."""
    (directory / "acks.tmp").unlink(missing_ok=True)
    cursor = _load_cursor(directory)
    numbered = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := SEGMENT_NAME.fullmatch(p.name)))
    segments: dict[int, Segment] = {}
    for i, (number, path) in enumerate(numbered):
        seg = _scan(number, path, stats, newest=i == len(numbered) - 1)
        if seg is not None:
            segments[number] = seg
    next_seq, next_segment, ranges = cursor if cursor else (0, 0, [])
    starts = [r[0] for r in ranges]
    for seg in segments.values():
        for i, seq in enumerate(seg.seqs):
            k = bisect.bisect_right(starts, seq) - 1
            if k >= 0 and seq <= ranges[k][1]:
                seg.mark(i)
        if seg.seqs:
            next_seq = max(next_seq, seg.seqs[-1] + 1)
    next_segment = max([next_segment] + [n + 1 for n, _ in numbered])
    for seg in [s for s in segments.values() if s.done]:
        del segments[seg.number]
        seg.path.unlink()
    if len(segments) < len(numbered):  # deleted or renamed some
        fsync_dir(directory)
    return segments, next_seq, next_segment


def _scan(number: int, path: Path, stats: dict[str, int], *, newest: bool) -> Segment | None:
    data = path.read_bytes()
    if data[:SEGMENT_HEADER_SIZE] != segment_header(number):
        if newest and len(data) <= SEGMENT_HEADER_SIZE:
            _log.warning("spool %s: removing segment torn while being created", path)
            path.unlink()
            stats["torn_tails_cut"] += 1
        else:
            _log.warning("spool %s: invalid segment header; renamed to .corrupt, records not replayed", path)
            os.replace(path, path.with_name(path.name + ".corrupt"))
            stats["quarantined_segments"] += 1
        return None
    seg, scan = Segment(number, path, len(data)), scan_segment(data)
    for seq, offset, length in scan.records:
        seg.add(seq, offset, length)
    for offset, length in scan.skipped:
        _log.warning("spool %s: corrupt record at offset %d, skipped %d bytes", path, offset, length)
    stats["corrupt_records"] += len(scan.skipped)
    if scan.torn_at is not None:
        _log.warning("spool %s: cutting torn tail at offset %d (%d bytes)", path, scan.torn_at, len(data) - scan.torn_at)
        cut_back(path, scan.torn_at)
        seg.size = scan.torn_at
        stats["torn_tails_cut"] += 1
    return seg


def _load_cursor(directory: Path) -> Cursor | None:
    try:
        raw = (directory / "acks").read_bytes()
    except FileNotFoundError:
        return None
    cursor = decode_cursor(raw)
    if cursor is None:
        _log.warning("spool %s: invalid ack cursor ignored; all records will be replayed", directory)
    return cursor
