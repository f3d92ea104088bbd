"""The Who page: top users, service accounts, source IPs and user agents, and the RBAC changes timeline.

Users are keyed by the effective user (the person behind a shared admin identity or an impersonation),
service accounts by their `system:serviceaccount:<ns>:<name>` name; system components and nodes are in the
Overview's user-kind split, not here. RBAC changes are the writes to roles, cluster roles and their bindings,
with what each grants when the body was recorded (`bodies.rbac_detail`).
"""

from __future__ import annotations

from kube_audit_shipper.report import bodies
from kube_audit_shipper.report.overview import Change
from kube_audit_shipper.report.request import Request
from kube_audit_shipper.report.resources import RBAC_GROUP, WRITE_VERBS
from kube_audit_shipper.report.tables import KeyedTable, Recent, clip
from kube_audit_shipper.report.timeline import Timeline

RBAC_RESOURCES = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
RECENT_RBAC = 300
#: table columns
REQUESTS, FAILURES, WRITES = range(3)


class Who:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.users = KeyedTable(2000, width=3)
        self.service_accounts = KeyedTable(2000, width=3)
        self.source_ips = KeyedTable(5000, width=3)
        self.user_agents = KeyedTable(1000, width=3)
        self.rbac: Recent[Change] = Recent(RECENT_RBAC)

    def add(self, r: Request) -> None:
        """One request at its final stage."""
        failed = 1 if r.code >= 400 else 0
        write = 1 if r.verb in WRITE_VERBS else 0
        kind = r.kind
        if kind == "human":
            table: KeyedTable | None = self.users
            key = r.actor
        elif kind == "serviceaccount":
            table, key = self.service_accounts, r.username
        elif kind in ("anonymous", "unknown"):
            table, key = self.users, r.actor or f"({kind})"
        else:
            table, key = None, ""
        for table_, key_ in ((table, key), (self.source_ips, r.ip or "(none)"), (self.user_agents, r.user_agent or "(none)")):
            if table_ is not None:
                row = table_.row(key_)
                row[REQUESTS] += 1
                row[FAILURES] += failed
                row[WRITES] += write
        if write and r.resource in RBAC_RESOURCES and (r.group in ("", RBAC_GROUP)):
            self._rbac(r)

    def _rbac(self, r: Request) -> None:
        detail = bodies.rbac_detail(r.resource, bodies.parse(r.event.requestObject)) if not r.subresource else ""
        resource = r.resource + ("/" + r.subresource if r.subresource else "")
        self.rbac.append(Change(r.time, r.verb, resource, clip(r.namespace), clip(r.name), clip(r.actor), r.kind, clip(r.ip, 64), r.code, detail))
        if r.bucket is not None:
            self.timeline.add("rbac", r.bucket)
