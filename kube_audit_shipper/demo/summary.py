"""The end of the demo: what was shipped and trimmed, the alerts the agent delivered, and where to look next.

The figures come from the agent itself (`obs.metrics.Snapshot`) and from what it wrote: the alerts are read
back from the `file` alert target's zstd files, so what is shown is what was delivered. Text that comes from
audit events (user names, commands, user agents: an attacker chooses them) is shown with control characters
escaped, so it cannot move the cursor or recolour the terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zstandard

from kube_audit_shipper.demo.incidents import Incident
from kube_audit_shipper.model import Alert, alert_decoder
from kube_audit_shipper.obs.metrics import Snapshot

__all__ = ["Caught", "Shipped", "alert_lines", "caught", "printable", "read_alerts", "shipped_lines"]

GROUP_AT = 4  # a rule with this many alerts or more is shown as one line
_LABEL = 20  # width of the label column (tests and scripts read "  events shipped      N")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def printable(text: str) -> str:
    """``text`` with every non-printable character (ESC, CR, BEL, bidi overrides, ...) shown as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _row(label: str, value: object) -> str:
    return f"  {label:<{_LABEL}}{value}"


def read_alerts(directory: Path) -> list[Alert]:
    """Every alert the file target finished writing to ``directory`` (files in name order, each batch a zstd frame)."""
    alerts = []
    paths = sorted(p for p in directory.glob("*.zst") if not p.name.startswith(".")) if directory.is_dir() else []
    for path in paths:
        for line in _zstd_lines(path):
            try:
                alerts.append(alert_decoder.decode(line))
            except msgspec.DecodeError:  # not an alert record: nothing this demo wrote; shown as missing instead
                continue
    return alerts


def _zstd_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as stream:
        rest = b""
        while chunk := stream.read(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from (line for line in lines if line)
        if rest:
            yield rest


@dataclass(frozen=True)
class Shipped:
    """What the demo measured besides the agent's own figures."""

    written: int
    written_bytes: int
    backups: int
    output_files: int
    output_bytes: int
    elapsed_s: float
    events_dir: Path


def shipped_lines(state: Snapshot, s: Shipped, sink: str) -> list[str]:
    """The shipped summary: events written, read, shipped, dropped and dead-lettered; bytes recorded, shipped, stored."""
    shipped_events, shipped_bytes = state.shipped.get(sink, (0, 0))
    dropped = sum(state.dropped.values())
    ratio = s.written_bytes / s.output_bytes if s.output_bytes else 0.0
    share = shipped_bytes / s.written_bytes if s.written_bytes else 0.0
    return [
        "shipped",
        _row("events written", s.written),
        _row("events read", state.events_read),
        _row("events shipped", shipped_events),
        _row("dead-lettered", sum(state.deadlettered.values())),
        _row("dropped by policy", dropped if dropped else "0 (this demo's policy trims, it drops nothing)"),
        _row(
            "trimmed by policy",
            f"{_size(s.written_bytes)} recorded -> {_size(shipped_bytes)} shipped ({share:.0%}): bodies cut to the policy's levels, "
            "managedFields omitted, enrichment added",
        ),
        _row("rotations", f"{s.backups} (the log renamed and the backup gzipped, as kube-apiserver does)"),
        _row("stored", f"{_size(s.output_bytes)} in {s.output_files} zstd file(s), {ratio:.1f}x smaller than recorded: {s.events_dir}"),
        _row("throughput", f"{shipped_events / s.elapsed_s if s.elapsed_s else 0:,.0f} events/s over {s.elapsed_s:.1f} s"),
    ]


@dataclass(frozen=True)
class Caught:
    """Which rules each incident raised: its expected rules that an alert naming one of its auditIDs came from."""

    incident: Incident
    raised: frozenset[str]

    @property
    def missing(self) -> list[str]:
        return [rule for rule in self.incident.rules if rule not in self.raised]


def caught(alerts: list[Alert], incidents: list[Incident], audit_ids: dict[str, list[str]]) -> list[Caught]:
    """For each incident, the rules among its own that raised an alert on its requests."""
    result = []
    for incident in incidents:
        ids = set(audit_ids.get(incident.title, ()))
        raised = frozenset(a.rule for a in alerts if a.rule in incident.rules and ids.intersection(a.audit_ids))
        result.append(Caught(incident, raised))
    return result


def alert_lines(alerts: list[Alert], raised: int, target: Path, found: list[Caught]) -> list[str]:
    """One line per alert (severity, rule, summary) in event-time order; a rule with many alerts on one line."""
    lines = [f"alerts: {len(alerts)} delivered to the file alert target {target}" + (f" ({raised} raised)" if raised != len(alerts) else "")]
    if not alerts:
        lines.append("  none")
    per_rule = Counter(a.rule for a in alerts)
    rule_width = max((len(r) for r in per_rule), default=0) + 2
    shown: set[str] = set()
    ordered = sorted(alerts, key=lambda a: (a.time, a.rule))
    for alert in ordered:
        if alert.rule in shown:
            continue
        n = per_rule[alert.rule]
        if n >= GROUP_AT:
            shown.add(alert.rule)
            last = [a for a in ordered if a.rule == alert.rule][-1]
            text = f"{n} alerts, the last: {printable(last.summary)}"
        else:
            text = printable(alert.summary)
        lines.append(f"  {alert.severity:<9} {alert.rule:<{rule_width}}{text}")
    if found:
        complete = [c for c in found if not c.missing]
        lines.append(f"  the {len(found)} suspicious actions written among the normal traffic: {len(complete)} raised their alerts")
        lines += [f"  not raised: {', '.join(c.missing)} for {c.incident.title}" for c in found if c.missing]
    return lines
