"""One request as every section of the report sees it: the event's fields plus who, from where, and when.

Built once per event by `aggregate.Aggregator`, with the agent's own enrichment rules (`process.enrich`):
`kind` is `identity.user_kind` (human, serviceaccount, node, system, anonymous, unknown), `actor` the
`identity.effective_user` (the impersonated user, or for a shared admin identity such as ACK's
`kubernetes-admin` the user its authorization reason names), `public` is `address.is_public_ip` of the first
source IP. `final` is False for the RequestReceived and ResponseStarted stages, which a later stage of the
same request follows: operations are counted at the final stage, so a watch or an exec is one request.
"""

from __future__ import annotations

import functools

from kube_audit_shipper.process.enrich.address import is_public_ip
from kube_audit_shipper.process.enrich.config import DerivedConfig
from kube_audit_shipper.process.enrich.identity import REASON_ANNOTATION, effective_user, user_kind
from kube_audit_shipper.process.enrich.view import api_group
from kube_audit_shipper.report.event import ReportEvent, annotation_map

EARLY_STAGES = frozenset({"RequestReceived", "ResponseStarted"})
KIND_GROUPS = {"human": "humans", "serviceaccount": "service accounts", "system": "system components", "node": "system components"}
GROUPS = ("humans", "service accounts", "system components", "anonymous", "unknown")
_DEFAULTS = DerivedConfig()


class Request:
    __slots__ = (
        "actor",
        "audit_id",
        "bucket",
        "code",
        "event",
        "final",
        "group",
        "ip",
        "kind",
        "name",
        "namespace",
        "public",
        "resource",
        "subresource",
        "time",
        "user_agent",
        "username",
        "verb",
    )

    def __init__(self, event: ReportEvent, time: float | None, bucket: int | None, identity: Identity) -> None:
        self.event = event
        self.time = time
        self.bucket = bucket
        self.verb = event.verb
        self.final = event.stage not in EARLY_STAGES
        self.audit_id = event.auditID
        ref = event.objectRef
        if ref:
            self.resource, self.subresource, self.namespace, self.name = ref.resource, ref.subresource, ref.namespace, ref.name
            self.group = api_group(ref)
        else:
            self.resource = self.subresource = self.namespace = self.name = self.group = ""
        status = event.responseStatus
        self.code = status.code if status else 0
        self.user_agent = event.userAgent
        ips = event.sourceIPs
        self.ip = ips[0] if ips else ""
        self.public = identity.is_public(self.ip) is True if self.ip else False
        self.username, self.kind, self.actor = identity.of(event)

    @property
    def group_label(self) -> str:
        """The Overview's grouping of the user kind: humans, service accounts, system components, anonymous, unknown."""
        return KIND_GROUPS.get(self.kind, self.kind)


class Identity:
    """User kind and effective user, with the enrichment defaults (shared admins, system prefixes)."""

    def __init__(
        self, shared_admin_users: tuple[str, ...] = _DEFAULTS.shared_admin_users, system_prefixes: tuple[str, ...] = _DEFAULTS.system_user_prefixes
    ) -> None:
        self._shared = frozenset(shared_admin_users)
        self._prefixes = tuple(system_prefixes)
        self.is_public = functools.lru_cache(maxsize=4096)(is_public_ip)

    def of(self, event: ReportEvent) -> tuple[str, str, str]:
        """(user name, user kind, effective user) of an event; the name is "" without a user."""
        user = event.user
        kind = user_kind(user, self._prefixes)
        name = user.username if user else ""
        impersonated = event.impersonatedUser
        impersonated_name = (impersonated.username or None) if impersonated else None
        reason = None
        if impersonated_name is None and name in self._shared:
            reason = annotation_map(event).get(REASON_ANNOTATION)
        actor = effective_user(user, impersonated_name, reason, self._shared) or name
        return name, kind, actor
