"""The Overview page's figures, as ACK's "Audit Center Overview" has them.

Operations by kind of user; public-network access per source IP (requests, failures, 403s and 401s, last
seen); command executions (exec, attach, port-forward: one per request, whatever stages were recorded, with
the full command from every `command=` parameter via `process.enrich.session`); resource deletions; secret
access; CVE-2020-8554 signals (a Service given `spec.externalIPs`; a write to `services/status` by a user who
is not a control-plane component). Every list keeps the most recent entries and counts them all.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from kube_audit_shipper.process.enrich.session import pod_session
from kube_audit_shipper.process.enrich.view import AuditEventView
from kube_audit_shipper.report import bodies
from kube_audit_shipper.report.request import GROUPS, Request
from kube_audit_shipper.report.tables import KeyedTable, Recent, SeenIds, clip
from kube_audit_shipper.report.timeline import Timeline

SESSION_TYPES = ("exec", "attach", "portforward")
RECENT = 300
MAX_KEYS = 2000
#: public IP table columns
REQUESTS, FAILURES, FORBIDDEN, UNAUTHORIZED, LAST_SEEN = range(5)
SYSTEM_KINDS = frozenset({"system", "node"})
SECRET_READS = frozenset({"get", "list", "watch"})


class Session(NamedTuple):
    time: float | None
    type: str
    namespace: str
    pod: str
    container: str
    command: str
    actor: str
    username: str
    ip: str
    code: int
    user_agent: str


class Change(NamedTuple):
    """A deletion, a secret access or an RBAC change: who did what to which object."""

    time: float | None
    verb: str
    resource: str
    namespace: str
    name: str
    actor: str
    kind: str
    ip: str
    code: int
    detail: str


class Overview:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.kinds = dict.fromkeys(GROUPS, 0)
        self.public = KeyedTable(5 * MAX_KEYS // 2, width=5, max_columns=(LAST_SEEN,))
        self.sessions: Recent[Session] = Recent(RECENT)
        self.session_types = dict.fromkeys(SESSION_TYPES, 0)
        self.session_actors = KeyedTable(MAX_KEYS)
        self._seen_sessions = SeenIds(16384)
        self.deletions: Recent[Change] = Recent(RECENT)
        self.deleted_types = KeyedTable(500, width=2)  # [requests, failures]
        self.secret_kinds = dict.fromkeys(GROUPS, 0)
        self.secret_actors = KeyedTable(MAX_KEYS, width=3)  # [requests, failures, list/watch]
        self.secret_reads: Recent[Change] = Recent(RECENT)  # by humans, anonymous and unknown users
        self.cve: Recent[Change] = Recent(RECENT)

    def add(self, r: Request) -> None:
        """One event; operations are counted at the final stage, sessions at their first recorded stage."""
        if r.subresource in SESSION_TYPES and r.resource == "pods":
            self._session(r)
        if not r.final:
            return
        group = r.group_label
        self.kinds[group] = self.kinds.get(group, 0) + 1
        b = r.bucket
        if b is not None:
            self.timeline.add("kind/" + group, b)
        failed = r.code >= 400
        if r.public:
            row = self.public.row(r.ip)
            row[REQUESTS] += 1
            if failed:
                row[FAILURES] += 1
                if r.code == 403:
                    row[FORBIDDEN] += 1
                elif r.code == 401:
                    row[UNAUTHORIZED] += 1
            if r.time is not None and r.time > row[LAST_SEEN]:
                row[LAST_SEEN] = int(r.time)
            if b is not None:
                self.timeline.add("public", b)
                if failed:
                    self.timeline.add("public/failed", b)
        verb = r.verb
        if verb == "delete" or verb == "deletecollection":
            self._deletion(r, failed)
        if r.resource == "secrets" and verb in SECRET_READS and not r.subresource and r.group == "":
            self._secret(r, failed)
        elif r.resource == "services" and r.group == "" and verb in ("create", "update", "patch"):
            self._cve(r)

    def _session(self, r: Request) -> None:
        if not self._seen_sessions.first_time(r.audit_id):
            return
        session = pod_session(cast(AuditEventView, r.event))  # it reads objectRef and requestURI only
        if session is None:
            return
        kind = str(session.get("type", r.subresource))
        self.session_types[kind] = self.session_types.get(kind, 0) + 1
        self.session_actors.add(r.actor or "(unknown)")
        ports = session.get("ports")
        command = session.get("command_line") or ("ports " + ", ".join(str(port) for port in ports) if isinstance(ports, list) else "")
        self.sessions.append(
            Session(
                r.time,
                kind,
                str(session.get("namespace", "")),
                str(session.get("pod", "")),
                str(session.get("container", "")),
                clip(str(command), 1000),
                clip(r.actor),
                clip(r.username),
                r.ip,
                r.code,
                clip(r.user_agent),
            )
        )
        if r.bucket is not None:
            self.timeline.add("sessions", r.bucket)

    def _change(self, r: Request, detail: str = "") -> Change:
        resource = r.resource + ("/" + r.subresource if r.subresource else "")
        return Change(r.time, r.verb, clip(resource), clip(r.namespace), clip(r.name), clip(r.actor), r.kind, clip(r.ip, 64), r.code, detail)

    def _deletion(self, r: Request, failed: bool) -> None:
        row = self.deleted_types.row(r.resource + ("/" + r.subresource if r.subresource else "") or "(non-resource)")
        row[0] += 1
        if failed:
            row[1] += 1
        self.deletions.append(self._change(r))
        if r.bucket is not None:
            self.timeline.add("deletions", r.bucket)

    def _secret(self, r: Request, failed: bool) -> None:
        group = r.group_label
        self.secret_kinds[group] = self.secret_kinds.get(group, 0) + 1
        row = self.secret_actors.row(r.actor or "(unknown)")
        row[0] += 1
        if failed:
            row[1] += 1
        if r.verb != "get":
            row[2] += 1
        if r.kind not in SYSTEM_KINDS and r.kind != "serviceaccount":
            scope = "" if r.namespace or r.verb == "get" else "all namespaces"
            self.secret_reads.append(self._change(r, scope))
        if r.bucket is not None:
            self.timeline.add("secrets", r.bucket)

    def _cve(self, r: Request) -> None:
        if not r.subresource:
            body = bodies.parse(r.event.requestObject)
            ips = bodies.external_ips(body)
            if ips:
                self.cve.append(self._change(r, clip("spec.externalIPs: " + ", ".join(ips), bodies.MAX_DETAIL_CHARS)))
        elif r.subresource == "status" and r.kind not in SYSTEM_KINDS:
            body = bodies.parse(r.event.requestObject)
            ips = bodies.load_balancer_ips(body)
            detail = "status.loadBalancer.ingress: " + ", ".join(ips) if ips else "services/status written (no load-balancer address in the recorded body)"
            self.cve.append(self._change(r, clip(detail, bodies.MAX_DETAIL_CHARS)))
