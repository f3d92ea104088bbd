"""The Overview tab: headline figures, trend, who operates, public access, exec, deletions, secrets, detections, CVE."""

from __future__ import annotations

from kube_audit_shipper.report import svg
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.markup import Cell, card, esc, num, number, panel, pct, showing, size, table, text, time_cell
from kube_audit_shipper.report.overview import FAILURES, FORBIDDEN, LAST_SEEN, REQUESTS, UNAUTHORIZED, Change
from kube_audit_shipper.report.request import GROUPS

BARS = 120
TOP_IPS = 50
#: ACK's public-access alert: at least this many requests and more than this share failed (here over the whole report)
ALERT_MIN_REQUESTS, ALERT_FAILED_SHARE = 10, 0.5


def render(a: Aggregator, detection_note: str) -> str:
    # half-width panels in pairs, so that no wide panel leaves a hole beside a half one
    parts = [
        _cards(a),
        '<div class="grid">',
        _trend(a),
        _kinds(a),
        _deletions(a),
        _public(a),
        _sessions(a),
        _secrets(a),
        _detections(a, detection_note),
        _cve(a),
        "</div>",
    ]
    return '<section class="tab" id="overview"><h2>Overview</h2>' + "".join(parts) + "</section>"


def _cards(a: Aggregator) -> str:
    ov = a.overview
    denied = sum(row[0] for key, row in a.codes.rows.items() if key in ("401", "403"))
    public_requests = ov.public.total(REQUESTS)
    hits = f"{num(a.detection.total)}" if a.detection.enabled else "–"
    cards = [
        card("Events", num(a.events), size(a.volume.bytes)),
        card("Requests", num(a.requests), f"{pct(a.failures, a.requests)} failed"),
        card("Denied (401/403)", num(denied), alert=denied > 0),
        card("Public-network requests", num(public_requests), f"{num(len(ov.public) + ov.public.folded)} source IPs"),
        card("Command executions", num(sum(ov.session_types.values())), "exec, attach, port-forward", alert=sum(ov.session_types.values()) > 0),
        card("Deletions", num(ov.deletions.count)),
        card("Secret reads", num(sum(ov.secret_kinds.values())), f"{num(ov.secret_reads.count)} by people or anonymous"),
        card("Detection hits", hits, "" if a.detection.enabled else "detection not run", alert=a.detection.total > 0),
        card("CVE-2020-8554 signals", num(ov.cve.count), alert=ov.cve.count > 0),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _trend(a: Aggregator) -> str:
    events, start, step = a.timeline.resample("events", BARS)
    failed, _, _ = a.timeline.resample("requests/failed", BARS)
    chart = svg.trend([("events", events)], start, step, failed=failed, label="events over time")
    note = f"{num(a.events)} events, {num(a.requests)} requests ({pct(a.failures, a.requests)} failed); one bar = {_duration(step)}"
    if a.untimed:
        note += f"; {num(a.untimed)} events without a readable time are counted but not drawn"
    return panel("Events over time", chart, note=note, wide=True, anchor="events-trend")


def _kinds(a: Aggregator) -> str:
    ov = a.overview
    items = [(group, ov.kinds.get(group, 0)) for group in GROUPS]
    series = []
    start, step = 0, 60
    for group, count in items:
        if count:
            values, start, step = a.timeline.resample("kind/" + group, BARS)
            series.append((group, values))
    body = svg.share(items, label="requests by kind of user") + svg.lines(series, start, step, label="requests by kind of user over time")
    note = "humans: users that are not service accounts, nodes or system: components (RAM users, certificates, OIDC); effective user behind shared admins and impersonation"
    return panel("Operations by kind of user", body, note=note, anchor="user-kinds")


def _public(a: Aggregator) -> str:
    ov = a.overview
    rows = []
    flagged = 0
    for ip, row in ov.public.top(TOP_IPS):
        info = a.ip_info.get(ip)
        failed_share = row[FAILURES] / row[REQUESTS] if row[REQUESTS] else 0.0
        flag = row[REQUESTS] >= ALERT_MIN_REQUESTS and failed_share > ALERT_FAILED_SHARE
        flagged += flag
        risk = (
            Cell('<span class="tag risky">risky</span>' + (f" {esc(info.risk_source)}" if info.risk_source else ""), 1) if info and info.risky else Cell("", 0)
        )
        asn = f"AS{info.asn} {info.as_org}".strip() if info and info.asn is not None else (info.as_org if info else "")
        rate = Cell(esc(pct(row[FAILURES], row[REQUESTS])), failed_share, "num bad" if flag else "num")
        rows.append(
            [
                text(ip, "code"),
                text(info.country if info else ""),
                text(asn),
                risk,
                number(row[REQUESTS]),
                number(row[FAILURES]),
                rate,
                number(row[FORBIDDEN]),
                number(row[UNAUTHORIZED]),
                time_cell(row[LAST_SEEN] or None),
            ]
        )
    headers = ("source IP", "country", "ASN", "risk", "requests", "failed", "failure rate", "403", "401", "last seen")
    tbl = table(headers, rows, empty="no request from a public address", numeric=(4, 5, 6, 7, 8))
    values, start, step = a.timeline.resample("public", BARS)
    failed, _, _ = a.timeline.resample("public/failed", BARS)
    chart = svg.trend([("public requests", values)], start, step, failed=failed, label="public-network requests over time") if any(values) else ""
    note = f"addresses that are not private, loopback, link-local or CGNAT; {flagged} with ≥ {ALERT_MIN_REQUESTS} requests and > 50 % failed (ACK's alert, here over the whole report)"
    if not a.intel:
        note += "; country, ASN and risk need --geoip / --risky"
    return panel("Public-network access", chart + tbl, note=note, wide=True, anchor="public-access")


def _sessions(a: Aggregator) -> str:
    ov = a.overview
    rows = []
    for s in ov.sessions.newest_first():
        user = s.actor if s.actor == s.username or not s.username else f"{s.actor} (as {s.username})"
        rows.append(
            [
                time_cell(s.time),
                text(s.type),
                text(s.namespace),
                text(s.pod),
                text(s.container),
                text(s.command, "code"),
                text(user),
                text(s.ip, "code"),
                Cell(esc(s.code or "–"), s.code, "num bad" if s.code >= 400 else "num"),
                text(s.user_agent),
            ]
        )
    headers = ("time", "type", "namespace", "pod", "container", "command", "effective user", "source IP", "code", "user agent")
    kinds = ", ".join(f"{num(n)} {kind}" for kind, n in ov.session_types.items() if n) or "none"
    note = showing(len(ov.sessions), ov.sessions.count, "sessions") + f" ({kinds}); the command joins every command= parameter"
    return panel(
        "Command executions (exec, attach, port-forward)", table(headers, rows, empty="no exec, attach or port-forward"), note=note, wide=True, anchor="exec"
    )


def changes_table(changes: list[Change], *, detail: str = "", empty: str = "nothing recorded") -> str:
    """A table of deletions, secret reads or RBAC changes (also used by the Who tab)."""
    rows = []
    for c in changes:
        row = [
            time_cell(c.time),
            text(c.verb),
            text(c.resource),
            text(c.namespace),
            text(c.name),
            text(c.actor),
            text(c.kind),
            text(c.ip, "code"),
            Cell(esc(c.code or "–"), c.code, "num bad" if c.code >= 400 else "num"),
        ]
        if detail:
            row.append(text(c.detail))
        rows.append(row)
    headers = ["time", "verb", "resource", "namespace", "name", "user", "kind", "source IP", "code"] + ([detail] if detail else [])
    return table(headers, rows, empty=empty)


def _deletions(a: Aggregator) -> str:
    ov = a.overview
    top = ov.deleted_types.top(15)
    chart = svg.hbars([(name, row[0]) for name, row in top], failed=[row[1] for _, row in top], label="deletions by resource")
    tbl = changes_table(ov.deletions.newest_first(), empty="no deletion")
    return panel("Resource deletions", chart + tbl, note=showing(len(ov.deletions), ov.deletions.count, "deletions"), anchor="deletions")


def _secrets(a: Aggregator) -> str:
    ov = a.overview
    share = svg.share([(group, ov.secret_kinds.get(group, 0)) for group in GROUPS], label="secret reads by kind of user")
    actors = [[text(name), number(row[0]), number(row[1]), number(row[2])] for name, row in ov.secret_actors.top(20)]
    top = table(("user", "reads", "failed", "list/watch"), actors, empty="no secret read", numeric=(1, 2, 3))
    recent = changes_table(ov.secret_reads.newest_first(), detail="scope", empty="no secret read by a person or an anonymous user")
    note = "get, list and watch of secrets; the lower table: reads by people, anonymous and unknown users, " + showing(
        len(ov.secret_reads), ov.secret_reads.count, "reads"
    )
    return panel("Secret access", share + top + recent, note=note, anchor="secrets")


def _detections(a: Aggregator, detection_note: str) -> str:
    hits = a.detection
    if not hits.enabled:
        return panel("Detection hits by rule", f'<p class="empty">{esc(detection_note)}</p>', anchor="detections")
    rows = [
        [
            text(rule),
            Cell(f'<span class="tag {esc(hits.severity.get(rule, ""))}">{esc(hits.severity.get(rule, ""))}</span>', hits.severity.get(rule, "")),
            number(row[0]),
            text(hits.last_time.get(rule, ""), "time"),
        ]
        for rule, row in hits.by_rule.top(100)
    ]
    by_rule = table(("rule", "severity", "hits", "last"), rows, empty="no detection fired", numeric=(2,))
    recent = [[text(alert.time, "time"), text(alert.rule), text(alert.severity), text(alert.summary)] for alert in hits.recent.newest_first()]
    note = showing(len(hits.recent), hits.recent.count, "alerts") + " from the same engine as `kube-audit-shipper detect`"
    if hits.errors:
        note += f"; {num(hits.errors)} line(s) the engine could not evaluate (last: {hits.last_error})"
    return panel("Detection hits by rule", by_rule + table(("time", "rule", "severity", "summary"), recent), note=note, anchor="detections")


def _cve(a: Aggregator) -> str:
    ov = a.overview
    tbl = changes_table(ov.cve.newest_first(), detail="signal", empty="no signal: no Service was given externalIPs and no person wrote services/status")
    note = (
        "CVE-2020-8554 (man in the middle through Service externalIPs or a forged load-balancer address): Services given "
        "spec.externalIPs, and writes to services/status by users who are not control-plane components. Bodies are read "
        "only where the policy recorded them (level Request or above)"
    )
    return panel("CVE-2020-8554 signals", tbl, note=note, wide=True, anchor="cve-2020-8554")


def _duration(seconds: int) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length} {unit}"
    return f"{seconds} s"
