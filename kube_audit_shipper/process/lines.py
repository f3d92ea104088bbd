"""The CPU work on one read: each line checked, detected on, transformed; what cannot be shipped set aside.

`LineProcessor.process` turns the Lines of one read into a `Processed`: the events to ship (a Chunk), the
alerts detection raised on them (a Chunk over the same input range), the dead letters to write and the
counts. It does no I/O, so the stage can run it in a worker thread and write the dead letters itself.

A line is an audit event when it is valid UTF-8 and a JSON object, however deeply nested; anything else is
a dead letter with its file and offset. No line can stop the pipeline: an exception the per-line code raises
for one line (a bug, or an input nobody foresaw) is caught for that line alone, which is dead-lettered with
the exception's type and message (bounded) and counted as `deadletter:processing_error`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.model import Alert, Chunk, Lines, alert_encoder
from kube_audit_shipper.process.check import check_event, check_utf8
from kube_audit_shipper.process.transform import NO_ALERTS, ShapeCounts, Transform

log = logging.getLogger(__name__)

#: A dead-letter reason for an unexpected exception keeps this many characters of its message.
MAX_REASON_CHARS = 300
#: At most one log line per this many seconds for unexpected per-line exceptions (each is dead-lettered).
ERROR_LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class DeadLine:
    """A line (or a part of a file) that is no event to ship, with where it was and why."""

    reason: str
    offset: int
    length: int | None
    line: bytes | None
    kind: str  # the counter: malformed, oversize, processing_error, incomplete, unreadable


@dataclass(slots=True)
class Processed:
    events: Chunk
    alerts: Chunk
    dead: list[DeadLine] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class LineProcessor:
    """Stateful only through the transform's counters and detection's windows: one chunk at a time."""

    def __init__(self, transform: Transform | None, *, node: str | None = None, cluster: str | None = None) -> None:
        self.transform = transform
        self.node = node
        self.cluster = cluster
        self._counts: Counter[str] = Counter()  # read, blank, dropped, alerts, deadletter:<kind>
        self._lock = threading.Lock()
        self._error_logged_at = float("-inf")

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def count(self, counts: Counter[str]) -> None:
        with self._lock:
            self._counts.update(counts)

    def count_one(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def process(self, fid: int, lines: Lines, path: str, *, detect_from: int = 0, pending_alerts: list[bytes] | None = None) -> Processed:
        """`detect_from`: lines ending at or before it are not detected on again (restored state has them);
        `pending_alerts`: alerts raised before a restart and not acknowledged then, delivered with this chunk."""
        records: list[bytes] = []
        ends: list[int] = []
        starts: list[int] = []
        alerts: list[bytes] = []
        alert_ends: list[int] = []
        alert_starts: list[int] = []
        dead: list[DeadLine] = []
        counts: Counter[str] = Counter()
        transform = self.transform
        dropped = 0
        for line, end in zip(lines.lines, lines.ends, strict=True):
            if not line or line.isspace():
                counts["blank"] += 1
                continue
            start = end - len(line) - 1
            try:
                if transform is None:
                    check_event(line)
                    out: bytes | None = line
                    raised: list[Alert] = NO_ALERTS
                else:
                    if not line.isascii():
                        check_utf8(line)  # the transform's decoder checks the JSON
                    out, raised = transform.run(line, detect=end > detect_from)
            except MalformedEventError as exc:
                dead.append(DeadLine(exc.reason, start, len(line) + 1, line, "malformed"))
                continue
            except Exception as exc:  # noqa: BLE001  # contained to this line: dead-lettered, counted, the chunk goes on
                self._log_error(path, start, type(exc).__name__)
                dead.append(DeadLine(f"processing failed: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS], start, len(line) + 1, line, "processing_error"))
                continue
            for alert in raised:
                alerts.append(self._encode_alert(alert))
                alert_ends.append(end)
                alert_starts.append(start)
            if out is None:
                dropped += 1
                continue
            records.append(out)
            ends.append(end)
            starts.append(start)
        for offset, length in lines.oversize:
            dead.append(DeadLine(f"line longer than max_line_bytes ({length - 1} bytes)", offset, length, None, "oversize"))
        counts["alerts"] += len(alerts)
        for d in dead:
            counts[f"deadletter:{d.kind}"] += 1
        counts["read"] += len(lines.lines) + len(lines.oversize)
        counts["dropped"] += dropped
        self.count(counts)
        now = time.monotonic()
        if records:
            ends[-1] = lines.end  # the last record also stands for trailing lines that produced none
        return Processed(
            Chunk(fid, lines.start, lines.end, records, ends, now, starts),
            _alerts_chunk(fid, lines, alerts, alert_ends, alert_starts, pending_alerts, now),
            dead,
            counts,
        )

    def detect(self, fid: int, lines: Lines, *, detect_from: int = 0, pending_alerts: list[bytes] | None = None) -> Chunk:
        """Detection alone over one read whose events a worker process shapes (process/workers.py): the alerts,
        exactly as `process` would raise them. A line that is no JSON object raises nothing here (the worker
        dead-letters it)."""
        transform = self.transform
        alerts: list[bytes] = []
        alert_ends: list[int] = []
        alert_starts: list[int] = []
        if transform is not None and transform.detector is not None:
            for line, end in zip(lines.lines, lines.ends, strict=True):
                if end <= detect_from or not line or line.isspace():
                    continue
                try:
                    if not line.isascii():
                        check_utf8(line)  # as `process` does: a line the worker dead-letters raises nothing
                    raised = transform.detect(line)
                except Exception:  # noqa: BLE001  # malformed, or failing: the worker's copy of the line is dead-lettered
                    raised = NO_ALERTS
                for alert in raised:
                    alerts.append(self._encode_alert(alert))
                    alert_ends.append(end)
                    alert_starts.append(end - len(line) - 1)
        if alerts:
            self.count_one("alerts", len(alerts))
        return _alerts_chunk(fid, lines, alerts, alert_ends, alert_starts, pending_alerts, time.monotonic())

    def absorb(self, shaped: Processed, counts: ShapeCounts | None, alerts: Chunk) -> Processed:
        """A worker's result for one read, with the alerts detection raised here: counted as if done here."""
        self.count(shaped.counts)
        if counts is not None and self.transform is not None:
            self.transform.add_counts(counts)
        return Processed(shaped.events, alerts, shaped.dead, shaped.counts)

    def _encode_alert(self, alert: Alert) -> bytes:
        if self.node is not None or self.cluster is not None:
            alert = msgspec.structs.replace(alert, node=alert.node or self.node, cluster=alert.cluster or self.cluster)
        return alert_encoder.encode(alert)

    def _log_error(self, path: str, offset: int, error: str) -> None:
        """One error log a minute at most; the exception's type only: its message may quote the event (a
        Secret's data), which goes to the dead-letter store (mode 0600), never to the logs."""
        now = time.monotonic()
        if now - self._error_logged_at >= ERROR_LOG_INTERVAL_S:
            self._error_logged_at = now
            log.error(
                "a line could not be processed; it is dead-lettered with the reason and the pipeline goes on (logged at most once a minute)",
                extra={"path": path, "offset": offset, "error": error},
            )


def _alerts_chunk(fid: int, lines: Lines, alerts: list[bytes], ends: list[int], starts: list[int], pending_alerts: list[bytes] | None, now: float) -> Chunk:
    """The alerts of one read as a Chunk over the read's range; alerts saved from before a restart ride with it
    (they stand for the whole range: delivered before the checkpoint passes it)."""
    for pending in pending_alerts or ():
        alerts.append(pending)
        ends.append(lines.end)
        starts.append(lines.start)
    if alerts:
        ends[-1] = lines.end
    return Chunk(fid, lines.start, lines.end, alerts, ends, now, starts)
