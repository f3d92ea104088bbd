"""The demo's audit log: a healthy cluster's traffic, with the suspicious actions (`incidents`) written among it.

The background is `AuditEventGenerator` with `DEMO_MIX`: the generated traffic of a control plane at 50 events
per second of event time (leases, watches, status patches, controllers, people running kubectl get and apply,
CI deploying with Helm), where 0.3 % of requests fail, as in a cluster without trouble, and where nobody opens a
shell in a pod or impersonates anyone. The built-in rules see every event; the only alerts are then those of
the incidents, which is what the demo is meant to show. (The generator's default mix has sessions and
impersonation in its traffic, for the benchmarks and tests that want them.)

The incidents are spread evenly over the log, in order; the requests of one incident are ``spacing_s`` apart
in event time (background events are written in between), so the scanner's burst falls well inside the
5-minute window of public-access-failures. A log too short to hold them (fewer lines than the incidents have
requests) has none. The same seed and event count give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

from kube_audit_shipper.demo.events import AuditEventGenerator, EventMix
from kube_audit_shipper.demo.incidents import Incident, incidents

__all__ = ["DEMO_MIX", "Scenario"]

DEMO_MIX = EventMix(connect=0.0, impersonation_rate=0.0, failure_rate=0.003, events_per_second=50.0)


class Scenario:
    """``events`` audit lines, incidents included; `audit_ids` tells which lines are an incident's, once written."""

    def __init__(self, seed: int, events: int) -> None:
        if events < 0:
            raise ValueError("events must be >= 0")
        self.events = events
        self.generator = AuditEventGenerator(seed, mix=DEMO_MIX)
        planned = incidents(self.generator)
        self.required = sum(len(i.requests) for i in planned)  # the fewest events that hold every incident
        self.incidents: list[Incident] = planned if events >= self.required else []
        self.audit_ids: dict[str, list[str]] = {i.title: [] for i in self.incidents}
        self._layout = self._plan()

    def _plan(self) -> tuple[list[int], list[int]]:
        """(background lines before each incident and after the last, background lines between two requests of each)."""
        background = self.events - sum(len(i.requests) for i in self.incidents)
        gaps = sum(len(i.requests) - 1 for i in self.incidents)
        cap = background // (2 * gaps) if gaps else 0  # an incident's pauses take at most half the background
        spacing = [min(cap, round(i.spacing_s * DEMO_MIX.events_per_second)) for i in self.incidents]
        outer = background - sum((len(i.requests) - 1) * s for i, s in zip(self.incidents, spacing, strict=True))
        parts = len(self.incidents) + 1
        chunks = [outer * (j + 1) // parts - outer * j // parts for j in range(parts)]
        return chunks, spacing

    def records(self) -> Iterator[tuple[str, bytes]]:
        """Every line as ``(auditID, line)``, in the order the apiserver writes them."""
        gen = self.generator
        chunks, spacing = self._layout
        for incident, before, pause in zip(self.incidents, chunks, spacing, strict=False):
            yield from gen.records(before)
            for n, request in enumerate(incident.requests):
                if n:
                    yield from gen.records(pause)
                audit_id, line = gen.record(request)
                self.audit_ids[incident.title].append(audit_id)
                yield audit_id, line
        yield from gen.records(chunks[-1])

    def lines(self) -> Iterator[bytes]:
        """Every line, without its auditID."""
        for _, line in self.records():
            yield line
