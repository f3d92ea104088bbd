"""Seam: detection hits by rule, from the same engine as `kube-audit-shipper detect`.

The report does not detect anything itself: it hands every event line in its time window, as recorded and in
file order, to an `AlertSource` (the detection engine of `kube_audit_shipper.process.detect`, wrapped by
`commands/report.py: detection_engine`), and counts the `kube_audit_shipper.model.Alert` records it returns,
per rule, keeping the most recent ones for the page. `finish()` at the end of the input collects what the
engine still holds (aggregates whose window is open). An engine error on one line is counted, and the line
is skipped: it never stops the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kube_audit_shipper.model import SEVERITIES, Alert
from kube_audit_shipper.report.tables import KeyedTable, Recent

RECENT_ALERTS = 300
MAX_RULES = 500


class AlertSource(Protocol):
    """The detection engine as the report drives it."""

    def feed(self, line: bytes) -> Iterable[Alert]:
        """The alerts one event line raises (often none)."""
        ...

    def finish(self) -> Iterable[Alert]:
        """The alerts still pending at the end of the input (open aggregate windows)."""
        ...


class DetectionHits:
    """Alerts per rule (count, most severe severity, last time) and the most recent alerts."""

    def __init__(self, source: AlertSource | None) -> None:
        self.source = source
        self.by_rule = KeyedTable(MAX_RULES, width=1)
        self.severity: dict[str, str] = {}
        self.last_time: dict[str, str] = {}
        self.recent: Recent[Alert] = Recent(RECENT_ALERTS)
        self.errors = 0
        self.last_error = ""

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def feed(self, line: bytes) -> None:
        if self.source is None:
            return
        try:
            alerts = list(self.source.feed(line))
        except Exception as exc:  # noqa: BLE001 - one line the engine cannot take must not stop the report
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        for alert in alerts:
            self._count(alert)

    def finish(self) -> None:
        if self.source is None:
            return
        try:
            alerts = list(self.source.finish())
        except Exception as exc:  # noqa: BLE001 - same containment at the end of the input
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        for alert in alerts:
            self._count(alert)

    def _count(self, alert: Alert) -> None:
        rule = alert.rule
        self.by_rule.add(rule)
        if rule in self.by_rule:
            known = self.severity.get(rule)
            if known is None or SEVERITIES.index(alert.severity) < SEVERITIES.index(known):
                self.severity[rule] = alert.severity
            if alert.time > self.last_time.get(rule, ""):
                self.last_time[rule] = alert.time
            if len(self.severity) > 2 * MAX_RULES:  # rules folded into (other) leave their entries behind
                for name in [name for name in self.severity if name not in self.by_rule]:
                    self.severity.pop(name, None)
                    self.last_time.pop(name, None)
        self.recent.append(alert)

    @property
    def total(self) -> int:
        return self.by_rule.total()
