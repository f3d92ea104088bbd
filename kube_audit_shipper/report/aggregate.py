"""One pass over the event lines: decode the few fields, keep the window, feed every section.

`Aggregator.feed(line)` is the hot path (tens of thousands of lines a second): one msgspec decode into
`event.ReportEvent`, one `request.Request`, and a handful of dict increments per section. Every table is
bounded (`tables`), every trend shares one `timeline.Timeline`, so memory does not grow with the input.
A line that is not a readable event is counted by reason (`event.SKIP_REASONS`) and skipped.

Beside its own sections it hands each line in the window, as recorded, to the detection engine
(`detection.DetectionHits`, the seam to `process.detect`) and, with `--policy`, to `coverage.PolicyCoverage`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kube_audit_shipper.process.policy.report import PolicyReport
from kube_audit_shipper.report.coverage import PolicyCoverage
from kube_audit_shipper.report.detection import AlertSource, DetectionHits
from kube_audit_shipper.report.event import SKIP_REASONS, Clock, decode
from kube_audit_shipper.report.intel import IpInfo, IpIntel
from kube_audit_shipper.report.overview import Overview
from kube_audit_shipper.report.request import Identity, Request
from kube_audit_shipper.report.resources import ResourceOps, resource_type
from kube_audit_shipper.report.tables import KeyedTable
from kube_audit_shipper.report.timeline import Timeline
from kube_audit_shipper.report.volume import Volume
from kube_audit_shipper.report.who import Who
from kube_audit_shipper.report.window import TimeWindow


@dataclass
class LogSummary:
    path: str
    format: str
    size_bytes: int
    lines: int
    error: str = ""


class Aggregator:
    def __init__(
        self,
        window: TimeWindow | None = None,
        *,
        identity: Identity | None = None,
        alerts: AlertSource | None = None,
        coverage: PolicyCoverage | None = None,
        intel: IpIntel | None = None,
    ) -> None:
        self.window = window or TimeWindow()
        self._bounded = self.window.bounded
        self.identity = identity or Identity()
        self.clock = Clock()
        self.timeline = Timeline()
        self.overview = Overview(self.timeline)
        self.who = Who(self.timeline)
        self.resources = ResourceOps(self.timeline)
        self.volume = Volume()
        self.detection = DetectionHits(alerts)
        self.coverage = coverage
        self.intel = intel
        self.ip_info: dict[str, IpInfo] = {}
        self.policy: PolicyReport | None = None
        self.logs: list[LogSummary] = []
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.lines = 0
        self.outside = 0  #: events outside the time window
        self.untimed = 0  #: events in the report without a readable time
        self.events = 0
        self.requests = 0
        self.failures = 0
        self.codes = KeyedTable(200)  #: requests per response code (0: none recorded)
        self.first_s: float | None = None
        self.last_s: float | None = None

    def feed(self, line: bytes) -> None:
        """One line of a log (no line ending)."""
        self.lines += 1
        event = decode(line)
        if isinstance(event, str):
            self.skipped[event] += 1
            if not self._bounded:  # detect and policy check see every line too; with a window, only events known to be in it
                self._pass_on(line)
            return
        ts = self.clock.seconds(event)
        if self._bounded and not self.window.contains(ts):
            self.outside += 1
            return
        self.events += 1
        bucket = None
        if ts is None:
            self.untimed += 1
        else:
            if self.first_s is None or ts < self.first_s:
                self.first_s = ts
            if self.last_s is None or ts > self.last_s:
                self.last_s = ts
            bucket = self.timeline.bucket(ts)
            self.timeline.add("events", bucket)
        r = Request(event, ts, bucket, self.identity)
        self.volume.add(event, len(line), r.username)
        self.overview.add(r)
        if r.final:
            self.requests += 1
            self.codes.add(str(r.code))
            if r.code >= 400:
                self.failures += 1
                if bucket is not None:
                    self.timeline.add("requests/failed", bucket)
            if bucket is not None:
                self.timeline.add("requests", bucket)
            self.who.add(r)
            if r.resource and not r.subresource:
                kind = resource_type(r.resource, r.group)
                if kind is not None:
                    self.resources.add(kind, r.verb, r.namespace, r.name, r.actor, r.code, r.user_agent, ts, bucket)
        self._pass_on(line)

    def _pass_on(self, line: bytes) -> None:
        self.detection.feed(line)
        if self.coverage is not None:
            self.coverage.feed(line)

    def skip(self, reason: str) -> None:
        """A line skipped before decoding (an oversize line the reader did not keep)."""
        self.lines += 1
        self.skipped[reason] += 1

    def add_log(self, summary: LogSummary) -> None:
        self.logs.append(summary)

    def finish(self) -> None:
        """End of input: pending detections, the policy's per-rule figures, IP intelligence for the public addresses."""
        self.detection.finish()
        if self.coverage is not None:
            self.policy = self.coverage.finish([log.path for log in self.logs if not log.error], [f"{log.path}: {log.error}" for log in self.logs if log.error])
        if self.intel is not None:
            for address in self.overview.public.rows:
                try:
                    info = self.intel.lookup(address)
                except Exception:  # noqa: BLE001 - a database that cannot answer for one address leaves that row blank
                    info = None
                if info is not None:
                    self.ip_info[address] = info

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())
