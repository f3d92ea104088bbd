"""The Who tab: top users, service accounts, source IPs and user agents; the RBAC changes timeline."""

from __future__ import annotations

from kube_audit_shipper.report import svg
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.markup import Cell, esc, num, number, panel, pct, showing, table, text
from kube_audit_shipper.report.render_overview import BARS, changes_table
from kube_audit_shipper.report.tables import KeyedTable
from kube_audit_shipper.report.who import FAILURES, REQUESTS, WRITES

TOP = 30


def render(a: Aggregator) -> str:
    who = a.who
    parts = [
        '<div class="grid">',
        _top(who.users, "Top users", "user", "people and other non-system users, by effective user (anonymous and unauthenticated requests too)"),
        _top(who.service_accounts, "Top service accounts", "service account", ""),
        _top(who.source_ips, "Top source IPs", "source IP", "first address of sourceIPs", addresses=a),
        _top(who.user_agents, "Top user agents", "user agent", ""),
        _rbac(a),
        "</div>",
    ]
    return '<section class="tab" id="who"><h2>Who</h2>' + "".join(parts) + "</section>"


def _top(tbl: KeyedTable, title: str, what: str, note: str, addresses: Aggregator | None = None) -> str:
    top = tbl.top(TOP)
    rows = []
    for key, row in top:
        cells = [text(key, "code" if what in ("source IP", "user agent") else "")]
        if addresses is not None:
            info = addresses.ip_info.get(key)
            public = addresses.identity.is_public(key) is True
            where = "public" if public else "internal"
            if info is not None:
                where += f" {info.country}" + (" risky" if info.risky else "")
            cells.append(Cell(esc(where), where, "bad" if info is not None and info.risky else ""))
        cells += [
            number(row[REQUESTS]),
            number(row[FAILURES], cls="num bad" if row[FAILURES] else "num"),
            Cell(esc(pct(row[FAILURES], row[REQUESTS])), row[FAILURES] / row[REQUESTS] if row[REQUESTS] else 0, "num"),
            number(row[WRITES]),
        ]
        rows.append(cells)
    headers = [what] + (["network"] if addresses is not None else []) + ["requests", "failed", "failure rate", "writes"]
    first_numeric = 2 if addresses is not None else 1
    body = table(headers, rows, numeric=tuple(range(first_numeric, first_numeric + 4)))
    distinct = len(tbl) + tbl.folded
    full_note = f"top {min(TOP, len(top))} of {num(distinct)}" + (f"; {note}" if note else "")
    if tbl.folded:
        full_note += f"; the table keeps the {num(tbl.cap)} busiest, so counts are lower bounds"
    return panel(title, body, note=full_note)


def _rbac(a: Aggregator) -> str:
    changes = a.who.rbac
    values, start, step = a.timeline.resample("rbac", BARS)
    chart = svg.trend([("RBAC changes", values)], start, step, label="RBAC changes over time") if any(values) else ""
    tbl = changes_table(changes.newest_first(), detail="grants", empty="no change to roles, cluster roles or bindings")
    note = (
        showing(len(changes), changes.count, "changes")
        + " to roles, cluster roles and their bindings; what a change grants is shown where its body was recorded"
    )
    return panel(f"RBAC changes: {num(changes.count)}", chart + tbl, note=note, wide=True, anchor="rbac")
