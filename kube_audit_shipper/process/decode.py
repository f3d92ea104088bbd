"""Turn the lines of one read into the records to ship: check, transform, dead-letter what is bad.

Runs in the reader's thread, once per chunk. A line is an audit event when it is valid UTF-8 and a
JSON object, however deeply nested (a line msgspec cannot check for depth is checked by the policy
package's iterative scanner); anything else goes to the dead-letter store with file and offset, never
stops the reader. With no transform configured the record is the line's bytes, unchanged.

No line can stop the pipeline: an exception the per-line code raises for one line (a bug, or an input
nobody foresaw) is caught for that line alone, which is dead-lettered with the exception's type and
message (bounded) and counted as `deadletter:processing_error`; the other lines of the chunk go on.
Only the dead-letter store's own I/O errors propagate: they are about the state directory, not the line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Protocol

import msgspec

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.jsonscan import check_object
from kube_audit_shipper.model import Chunk
from kube_audit_shipper.source.reader import Lines

log = logging.getLogger(__name__)

#: A dead-letter reason for an unexpected exception keeps this many characters of its message.
MAX_REASON_CHARS = 300
#: At most one log line per this many seconds for unexpected per-line exceptions (each is dead-lettered).
ERROR_LOG_INTERVAL_S = 60.0


class Transform(Protocol):
    def apply(self, line: bytes) -> bytes | None: ...


class _AnyObject(msgspec.Struct):
    """Decoding into a field-less Struct checks JSON syntax and that the top level is an object,
    without building any Python objects for the fields."""


_check_object = msgspec.json.Decoder(_AnyObject).decode


def check_utf8(line: bytes) -> None:
    """Raise MalformedEventError unless a non-ASCII line is valid UTF-8 (callers test isascii() first:
    C speed, no copy, and true for almost every audit line)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"invalid UTF-8 at byte {exc.start}") from None


def check_event(line: bytes) -> None:
    """Raise MalformedEventError unless `line` is valid UTF-8 holding one JSON object."""
    if not line.isascii():
        check_utf8(line)
    try:
        try:
            _check_object(line)
        except RecursionError:  # nested deeper than msgspec goes: the iterative check
            check_object(line)
    except msgspec.ValidationError:
        raise MalformedEventError("not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise MalformedEventError(f"malformed JSON: {exc}") from None


class LineProcessor:
    def __init__(self, transform: Transform | None, deadletter: DeadLetterStore) -> None:
        self.transform = transform
        self.deadletter = deadletter
        self._counts: Counter[str] = Counter()  # read, blank, dropped, deadletter:<kind>
        self._lock = threading.Lock()
        self._error_logged_at = float("-inf")

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def process(self, fid: int, path: str, lines: Lines) -> Chunk:
        records: list[bytes] = []
        ends: list[int] = []
        starts: list[int] = []
        counts: Counter[str] = Counter()
        transform = self.transform
        dropped = 0
        for line, end in zip(lines.lines, lines.ends, strict=True):
            if not line or line.isspace():
                counts["blank"] += 1
                continue
            try:
                if transform is None:
                    check_event(line)
                    out: bytes | None = line
                else:
                    if not line.isascii():
                        check_utf8(line)  # the transform's decoder checks the JSON
                    out = transform.apply(line)
            except MalformedEventError as exc:
                self._dead(path, end - len(line) - 1, len(line) + 1, exc.reason, line, counts)
                continue
            except Exception as exc:  # noqa: BLE001  # contained to this line: dead-lettered, counted, the chunk goes on
                reason = f"processing failed: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
                self._log_error(path, end - len(line) - 1, type(exc).__name__)
                self._dead(path, end - len(line) - 1, len(line) + 1, reason, line, counts, kind="processing_error")
                continue
            if out is None:
                dropped += 1
                continue
            records.append(out)
            ends.append(end)
            starts.append(end - len(line) - 1)
        for offset, length in lines.oversize:
            self._dead(path, offset, length, f"line longer than max_line_bytes ({length - 1} bytes)", None, counts, kind="oversize")
        counts["read"] += len(lines.lines) + len(lines.oversize)
        counts["dropped"] += dropped
        with self._lock:
            self._counts.update(counts)
        chunk = Chunk(fid, lines.start, lines.end, records, ends, time.monotonic(), starts)
        if records:
            ends[-1] = lines.end  # the last record also stands for trailing lines that produced none
        return chunk

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

    def _dead(self, path: str, offset: int, length: int, reason: str, line: bytes | None, counts: Counter[str], kind: str = "malformed") -> None:
        counts[f"deadletter:{kind}"] += 1
        self.deadletter.add(reason=reason, sink=None, path=path, offset=offset, length=length, event=line)
