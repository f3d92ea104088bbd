"""The Resource operations tab: per category the verbs with success rate and trend; per type the details."""

from __future__ import annotations

from kube_audit_shipper.report import svg
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.markup import Cell, esc, num, number, panel, pct, showing, table, text, time_cell
from kube_audit_shipper.report.resources import CATEGORIES, COLUMNS, RESOURCE_TYPES, VERBS, TypeStats

SPARK_BARS = 40
TOP_NAMESPACES = 15


def render(a: Aggregator) -> str:
    parts = ['<div class="grid">']
    parts.extend(_category(a, category) for category in CATEGORIES)
    parts.append(_details(a))
    parts.append("</div>")
    return '<section class="tab" id="resources"><h2>Resource operations</h2>' + "".join(parts) + "</section>"


def _verb_rows(requests: list[int], failures: list[int], sparks: list[str] | None = None) -> list[list[Cell]]:
    rows = []
    for i, verb in enumerate(COLUMNS):
        n, bad = requests[i], failures[i]
        ok_share = (n - bad) / n if n else 0.0
        row = [
            text(verb),
            number(n),
            number(bad, cls="num bad" if bad else "num"),
            Cell(esc(pct(n - bad, n)), ok_share if n else -1, "num"),
        ]
        if sparks is not None:
            row.append(Cell(sparks[i], None))
        rows.append(row)
    return rows


def _category(a: Aggregator, category: str) -> str:
    requests, failures = a.resources.category_totals(category)
    sparks = []
    for verb in COLUMNS:
        if verb in VERBS:
            values, _, _ = a.timeline.resample(f"{category}/{verb}", SPARK_BARS)
            sparks.append(svg.spark(values, label=f"{category} {verb} over time"))
        else:
            sparks.append("")
    types = ", ".join(name for name, (cat, _) in RESOURCE_TYPES.items() if cat == category)
    tbl = table(("verb", "requests", "failed", "success rate", "trend"), _verb_rows(requests, failures, sparks), numeric=(1, 2, 3))
    return panel(f"{category.capitalize()}: {num(sum(requests))} requests", tbl, note=types, anchor=f"category-{category.replace(' ', '-')}")


def _details(a: Aggregator) -> str:
    blocks = []
    idle = []
    for name, stats in a.resources.types.items():
        if not stats.total:
            idle.append(name)
            continue
        blocks.append(_type(name, stats))
    body = "".join(blocks) or '<p class="empty">no request on these resource types</p>'
    if idle:
        body += f'<p class="note">no request: {esc(", ".join(idle))}</p>'
    note = (
        "requests on the objects themselves (subresources such as pods/exec or deployments/scale are counted elsewhere); writes: create, update, patch, delete"
    )
    return panel("Per resource type", body, note=note, wide=True, anchor="resource-details")


def _type(name: str, stats: TypeStats) -> str:
    failed = sum(stats.failures)
    summary = f"{name} ({stats.category}): {num(stats.total)} requests, {pct(stats.total - failed, stats.total)} succeeded, {num(stats.writes.count)} writes"
    verbs = table(("verb", "requests", "failed", "success rate"), _verb_rows(stats.requests, stats.failures), numeric=(1, 2, 3))
    top = stats.namespaces.top(TOP_NAMESPACES)
    items = [(ns, row[0]) for ns, row in top]
    rest = stats.namespaces.rest(top)
    if rest[0]:
        items.append(("(other)", rest[0]))
    chart = svg.hbars(items, label=f"{name} requests by namespace")
    writes = [
        [
            time_cell(op.time),
            text(op.verb),
            text(op.namespace),
            text(op.name),
            text(op.user),
            Cell(esc(op.code or "–"), op.code, "num bad" if op.code >= 400 else "num"),
            text(op.user_agent),
        ]
        for op in stats.writes.newest_first()
    ]
    ops = table(("time", "verb", "namespace", "name", "user", "code", "user agent"), writes, empty="no write")
    return (
        f"<details><summary>{esc(summary)}</summary>"
        f'<div class="grid"><div><h4>Requests per verb</h4>{verbs}</div><div><h4>Namespaces</h4>{chart}</div></div>'
        f"<h4>{esc(showing(len(stats.writes), stats.writes.count, 'writes').capitalize())}</h4>{ops}</details>"
    )
