"""The per-chunk step as the processing stage runs it, for tests: LineProcessor, then its dead letters written."""

from __future__ import annotations

from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.model import Chunk, Lines
from kube_audit_shipper.process.lines import LineProcessor
from kube_audit_shipper.process.transform import Transform


class ProcessingWithDeadLetters:
    """`process(fid, path, lines)` returns the events Chunk and writes the dead letters, as process/stage.py does."""

    def __init__(self, transform: Transform | None, deadletter: DeadLetterStore) -> None:
        self.processor = LineProcessor(transform)
        self.deadletter = deadletter
        self.alerts: list[Chunk] = []

    def process(self, fid: int, path: str, lines: Lines) -> Chunk:
        done = self.processor.process(fid, lines, path)
        for d in done.dead:
            self.deadletter.add(reason=d.reason, sink=None, path=path, offset=d.offset, length=d.length, event=d.line)
        self.alerts.append(done.alerts)
        return done.events

    def counts(self) -> dict[str, int]:
        return self.processor.counts()
