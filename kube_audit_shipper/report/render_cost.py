"""The Cost and policy tab: volume by verb, resource, level, stage and user; the policy's coverage; the input."""

from __future__ import annotations

from kube_audit_shipper.process.policy.report import PolicyReport, RuleStats
from kube_audit_shipper.report import svg
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.event import SKIP_REASONS
from kube_audit_shipper.report.markup import Cell, card, esc, num, number, panel, pct, size, table, text
from kube_audit_shipper.report.tables import KeyedTable
from kube_audit_shipper.report.volume import BYTES, EVENTS


def render(a: Aggregator) -> str:
    v = a.volume
    parts = [
        '<div class="grid">',
        _volume(v.by_level, "By level", "level", v.bytes, chart=True),
        _volume(v.by_verb, "By verb", "verb", v.bytes, chart=True),
        _volume(v.by_resource, "By resource", "resource", v.bytes, top=40, wide=True),
        _volume(v.by_user, "By user", "user", v.bytes, top=30),
        _volume(v.by_stage, "By stage", "stage", v.bytes, chart=True),
        _policy(a.policy),
        _input(a),
        "</div>",
    ]
    return '<section class="tab" id="cost"><h2>Cost and policy</h2>' + "".join(parts) + "</section>"


def _volume(tbl: KeyedTable, title: str, what: str, total_bytes: int, *, top: int = 20, chart: bool = False, wide: bool = False) -> str:
    rows_top = tbl.top(top, column=BYTES)
    rows = [
        [
            text(key, "code" if what == "resource" else ""),
            number(row[EVENTS]),
            number(row[BYTES], size(row[BYTES])),
            Cell(esc(pct(row[BYTES], total_bytes)), row[BYTES], "num"),
            number(row[BYTES] / row[EVENTS] if row[EVENTS] else 0, size(row[BYTES] / row[EVENTS] if row[EVENTS] else 0)),
        ]
        for key, row in rows_top
    ]
    rest = tbl.rest(rows_top)
    if rest[EVENTS]:
        rows.append(
            [
                text("(all others)"),
                number(rest[EVENTS]),
                number(rest[BYTES], size(rest[BYTES])),
                Cell(esc(pct(rest[BYTES], total_bytes)), rest[BYTES], "num"),
                number(0, ""),
            ]
        )
    body = table((what, "events", "bytes", "share of bytes", "bytes per event"), rows, numeric=(1, 2, 3, 4))
    if chart:
        body = svg.hbars([(key, row[BYTES]) for key, row in rows_top[:10]], label=f"bytes by {what}", shown=size) + body
    return panel(f"Volume {title.lower()}", body, note="every event line in the window, as recorded (before any policy)", wide=wide)


def _policy(report: PolicyReport | None) -> str:
    if report is None:
        return panel(
            "Policy coverage",
            '<p class="empty">run with --policy FILE (an audit.k8s.io Policy, as kube-apiserver reads it) to see what it would keep, rule by rule</p>',
            wide=True,
            anchor="policy",
        )
    total = report.total()
    saving = total.saving_percent
    cards = "".join(
        [
            card("Events kept", num(total.events_after), f"of {num(total.matched)}"),
            card("Bytes kept", size(total.bytes_after), f"of {size(total.bytes_before)}"),
            card("Saving", "–" if saving is None else f"{saving:.1f}%"),
        ]
    )
    rows = [_rule_row(stats) for stats in [*report.rules, report.no_match]]
    tbl = table(
        ("rule", "level", "matched", "kept", "dropped (level None)", "dropped (stage)", "bytes before", "bytes after", "saving", "notes"),
        rows,
        numeric=(2, 3, 4, 5, 6, 7, 8),
    )
    notes = [f"policy {report.policy_path}: {len(report.rules)} rules; the figures of `kube-audit-shipper policy check` for these events"]
    notes += [f"warning: {warning}" for warning in report.warnings]
    if report.malformed:
        notes.append(f"{num(report.malformed)} line(s) the policy could not read")
    return panel("Policy coverage", f'<div class="cards">{cards}</div>{tbl}', note="; ".join(notes), wide=True, anchor="policy")


def _rule_row(stats: RuleStats) -> list[Cell]:
    notes = []
    if stats.unreachable:
        notes.append("unreachable")
    elif stats.never_matched and stats.label != "no-match":
        notes.append("never matched")
    saving = stats.saving_percent
    return [
        text(stats.label),
        text(stats.level),
        number(stats.matched),
        number(stats.events_after),
        number(stats.dropped_level),
        number(stats.dropped_stage),
        number(stats.bytes_before, size(stats.bytes_before)),
        number(stats.bytes_after, size(stats.bytes_after)),
        Cell(esc("–" if saving is None else f"{saving:.1f}%"), saving if saving is not None else -1, "num"),
        text(", ".join(notes)),
    ]


def _input(a: Aggregator) -> str:
    logs = [
        [text(log.path, "code"), text(log.format), number(log.size_bytes, size(log.size_bytes)), number(log.lines), text(log.error, "bad" if log.error else "")]
        for log in a.logs
    ]
    body = table(("log", "format", "size", "lines", "error"), logs, empty="no log read", numeric=(2, 3))
    skipped = ", ".join(f"{num(a.skipped[reason])} {reason}" for reason in SKIP_REASONS if a.skipped[reason]) or "none"
    facts = [f"{num(a.lines)} lines read", f"{num(a.events)} events in the report", f"skipped lines: {skipped}"]
    if a.window.bounded:
        facts.append(f"{num(a.outside)} events outside the time window")
    if a.untimed:
        facts.append(f"{num(a.untimed)} events without a readable time")
    return panel("Input", body, note="; ".join(facts), wide=True, anchor="input")
