"""The per-line bridge the pipeline calls: detection, policy trimming, redaction, enrichment.

    line ─ decode (top level only, values kept raw) ─ detect (on the event as recorded)
         ─ policy: evaluate (cached) → drop or trim
         ─ redact (only bodies of affected resources, token-like query parameters) ─ enrich ─ encode

Detection sees every event as kube-apiserver recorded it, before the policy trims or drops it: an event the
policy drops still raises its alert. A failure inside detection never stops the event from shipping.

The output keeps the input's field order and bytes wherever nothing changed: an event the policy keeps as it
was recorded is the input line itself, with the enrichment members spliced in before the closing brace; a
trimmed event is re-encoded from its raw values (bodies are copied, not parsed). With no policy and no
enrichment the output is the input.

Any line that is a JSON object is shipped (or dropped by the policy), whatever its nesting or its values:
decode splits the top level without recursing when msgspec cannot go as deep (event.py), a body that cannot
be stripped of managedFields ships as recorded and one that cannot be redacted is replaced by a marker
(both noted in `annotations["kube-audit-shipper.io/body-not-parsed"]`), and a derived field that cannot be
computed is left out. Only a line that is not a JSON object raises (MalformedEventError); anything else
the caller (process/lines.py) contains to the line.
"""

from __future__ import annotations

import msgspec

from kube_audit_shipper.model import Alert
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.enrich.fields import Enricher
from kube_audit_shipper.process.enrich.redact import Redactor
from kube_audit_shipper.process.policy.config import DECISION_CACHE_SIZE
from kube_audit_shipper.process.policy.event import RecordedEvent, decode_event
from kube_audit_shipper.process.policy.match import CompiledPolicy, DecisionCache
from kube_audit_shipper.process.policy.trim import DROPPED_STAGE, KEPT, trim_event

NO_ALERTS: list[Alert] = []  # shared, never appended to


class ShapeCounts(msgspec.Struct, frozen=True):
    """What a transform counted while shaping (a worker process's, handed to the agent's with each chunk)."""

    matched: dict[str, int]
    drops: dict[str, int]
    stage_drops: dict[str, int]
    withheld: int


class Transform:
    """Applies policy trimming + enrichment + redaction to one event line. Built once; called per line, hot path.

    `matched[label]` counts events that matched each rule (`rule[i]`, 0-based, or `no-match`); `drops[label]`
    counts the events the policy dropped, by the rule that decided (level None, or an omitted stage);
    `stage_drops[label]` is the part of `drops` due to an omitted stage. With no policy the three are empty.
    """

    def __init__(
        self,
        policy: CompiledPolicy | None,
        enricher: Enricher | None = None,
        redactor: Redactor | None = None,
        *,
        detector: DetectionEngine | None = None,
        decision_cache_size: int = DECISION_CACHE_SIZE,
    ) -> None:
        self.policy = policy
        self.detector = detector
        self.detection_failures = 0  # events detection raised on (the event still ships)
        self._decisions = DecisionCache(policy, decision_cache_size) if policy is not None else None
        labels = policy.labels if policy is not None else ()
        self.matched: dict[str, int] = dict.fromkeys(labels, 0)
        self.drops: dict[str, int] = dict.fromkeys(labels, 0)
        self.stage_drops: dict[str, int] = dict.fromkeys(labels, 0)
        self._enricher = enricher if enricher is not None and enricher.active else None
        self._added_keys = self._enricher.added_keys if self._enricher is not None else frozenset()
        self._redactor = redactor
        self._encoder = msgspec.json.Encoder()
        self._withheld_elsewhere = 0  # counted by worker processes (add_counts)
        self._withheld_taken = 0

    @property
    def withheld_bodies(self) -> int:
        """Bodies redaction replaced by a marker because it could not parse them (see enrich.redact)."""
        return (self._redactor.withheld if self._redactor is not None else 0) + self._withheld_elsewhere

    def take_counts(self) -> ShapeCounts:
        """The counts since the last call, and zero them (a worker process, after each chunk)."""
        withheld = self._redactor.withheld if self._redactor is not None else 0
        counts = ShapeCounts(
            {k: v for k, v in self.matched.items() if v},
            {k: v for k, v in self.drops.items() if v},
            {k: v for k, v in self.stage_drops.items() if v},
            withheld - self._withheld_taken,
        )
        self._withheld_taken = withheld
        for table in (self.matched, self.drops, self.stage_drops):
            for k in table:
                table[k] = 0
        return counts

    def add_counts(self, counts: ShapeCounts) -> None:
        """Counts of a worker process's transform built from the same policy (same rule labels)."""
        for table, delta in ((self.matched, counts.matched), (self.drops, counts.drops), (self.stage_drops, counts.stage_drops)):
            for k, v in delta.items():
                table[k] = table.get(k, 0) + v
        self._withheld_elsewhere += counts.withheld

    def apply(self, line: bytes) -> bytes | None:
        """The output event for one input line, or None when the policy drops it.

        Raises `kube_audit_shipper.errors.MalformedEventError` when the line is not a JSON object.
        """
        return self.process(line)[1]

    def run(self, line: bytes, *, detect: bool = True) -> tuple[bytes | None, list[Alert]]:
        """(the output or None when the policy drops it, the alerts detection raised on the event as recorded).
        `detect=False`: a line detection has already seen (before a restart: its state was restored)."""
        event = decode_event(line)
        alerts = NO_ALERTS
        if detect and self.detector is not None:
            try:
                alerts = self.detector.evaluate(event)
            except Exception:  # noqa: BLE001  # detection never stops an event from shipping; counted
                self.detection_failures += 1
        return self._shape(event, line)[1], alerts

    def detect(self, line: bytes) -> list[Alert]:
        """Detection alone (the line is shaped elsewhere, by a worker process). Raises MalformedEventError for a
        line that is not a JSON object (the worker dead-letters it)."""
        if self.detector is None:
            return NO_ALERTS
        event = decode_event(line)
        try:
            return self.detector.evaluate(event)
        except Exception:  # noqa: BLE001  # detection never stops an event from shipping; counted
            self.detection_failures += 1
            return NO_ALERTS

    def process(self, line: bytes) -> tuple[str | None, bytes | None]:
        """(label of the deciding rule or None without a policy, output or None when dropped); no detection."""
        return self._shape(decode_event(line), line)

    def _shape(self, event: RecordedEvent, line: bytes) -> tuple[str | None, bytes | None]:
        label = None
        if self._decisions is not None:
            decision = self._decisions.evaluate_event(event)
            label = decision.label
            self.matched[label] += 1
            outcome = trim_event(event, decision)
            if outcome != KEPT:
                self.drops[label] += 1
                if outcome == DROPPED_STAGE:
                    self.stage_drops[label] += 1
                return label, None
        if self._redactor is not None:
            self._redactor.apply(event)
        extra = self._enricher.members(event) if self._enricher is not None else b""
        return label, event.encode(self._encoder, line, extra, self._added_keys)


def build_transform(
    policy: CompiledPolicy | None,
    enrich: EnrichConfig,
    *,
    node_name: str,
    detector: DetectionEngine | None = None,
    decision_cache_size: int = DECISION_CACHE_SIZE,
) -> Transform | None:
    """The transform for this configuration, or None when there is nothing to do (ship lines unchanged, no detection).

    `node_name` is the node name enrichment reports (the agent's `node_name`, by default the host name).
    """
    enricher = None
    redactor = None
    if enrich.enabled:
        enricher = Enricher(enrich, node_name)
        if not enricher.active:
            enricher = None
        if enrich.redact.enabled:
            redactor = Redactor(enrich.redact)
            if not redactor.active:
                redactor = None
    if policy is None and enricher is None and redactor is None and detector is None:
        return None
    return Transform(policy, enricher, redactor, detector=detector, decision_cache_size=decision_cache_size)
