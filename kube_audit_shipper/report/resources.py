"""Resource operations, as ACK's "Resource Operation Overview" and "Resource Operation Details" show them.

Four categories of resource types (the ones ACK's reports follow), each type identified by its resource name
and API groups (`""` is the core group; an event without any group, as old or hand-written events have, is
taken by name). Only requests on the object itself count here: `pods/exec`, `pods/binding` or
`deployments/scale` are other operations (exec sessions are in the Overview; every subresource is in the
volume tables). Per type: requests per verb with failures (code >= 400), per category and verb a trend, the
namespace distribution (bounded), and the most recent writes.
"""

from __future__ import annotations

from typing import NamedTuple

from kube_audit_shipper.report.tables import KeyedTable, Recent
from kube_audit_shipper.report.timeline import Timeline

COMPUTE, NETWORK, STORAGE, ACCESS = "compute", "network", "storage", "access control"
CATEGORIES = (COMPUTE, NETWORK, STORAGE, ACCESS)
RBAC_GROUP = "rbac.authorization.k8s.io"
#: resource -> (category, API groups it is served under)
RESOURCE_TYPES: dict[str, tuple[str, frozenset[str]]] = {
    "deployments": (COMPUTE, frozenset({"apps", "extensions"})),
    "statefulsets": (COMPUTE, frozenset({"apps"})),
    "daemonsets": (COMPUTE, frozenset({"apps", "extensions"})),
    "jobs": (COMPUTE, frozenset({"batch"})),
    "cronjobs": (COMPUTE, frozenset({"batch"})),
    "pods": (COMPUTE, frozenset({""})),
    "services": (NETWORK, frozenset({""})),
    "ingresses": (NETWORK, frozenset({"networking.k8s.io", "extensions"})),
    "configmaps": (STORAGE, frozenset({""})),
    "secrets": (STORAGE, frozenset({""})),
    "persistentvolumeclaims": (STORAGE, frozenset({""})),
    "roles": (ACCESS, frozenset({RBAC_GROUP})),
    "clusterroles": (ACCESS, frozenset({RBAC_GROUP})),
    "rolebindings": (ACCESS, frozenset({RBAC_GROUP})),
    "clusterrolebindings": (ACCESS, frozenset({RBAC_GROUP})),
}
#: The verbs the tables show, in this order; `list`/`watch` are counted as reads beside them.
VERBS = ("create", "update", "patch", "delete", "get")
READ_VERBS = ("list", "watch")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
COLUMNS = (*VERBS, "list/watch")
VERB_COLUMNS = {verb: i for i, verb in enumerate(COLUMNS)}
VERB_COLUMNS.update({"list": VERB_COLUMNS["list/watch"], "watch": VERB_COLUMNS["list/watch"], "deletecollection": VERB_COLUMNS["delete"]})
MAX_NAMESPACES = 200
RECENT_WRITES = 50


def resource_type(resource: str, group: str) -> str | None:
    """The tracked type of a request on `resource` in API `group`, None when it is not one of the four categories."""
    known = RESOURCE_TYPES.get(resource)
    if known is None or (group and group not in known[1]):
        return None
    return resource


class Operation(NamedTuple):
    """One write, as listed under its resource type."""

    time: float | None
    verb: str
    namespace: str
    name: str
    user: str
    code: int
    user_agent: str


class TypeStats:
    """Counters of one resource type."""

    __slots__ = ("category", "failures", "namespaces", "requests", "writes")

    def __init__(self, category: str) -> None:
        self.category = category
        self.requests = [0] * len(COLUMNS)
        self.failures = [0] * len(self.requests)
        self.namespaces = KeyedTable(MAX_NAMESPACES, width=2)  # [requests, writes]
        self.writes: Recent[Operation] = Recent(RECENT_WRITES)

    @property
    def total(self) -> int:
        return sum(self.requests)


class ResourceOps:
    """Operations on the tracked resource types; `add` once per request (final stage)."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.types = {name: TypeStats(category) for name, (category, _) in RESOURCE_TYPES.items()}

    def add(self, kind: str, verb: str, namespace: str, name: str, user: str, code: int, user_agent: str, ts: float | None, bucket: int | None) -> None:
        """One request on tracked type `kind` (see `resource_type`)."""
        column = VERB_COLUMNS.get(verb)
        if column is None:
            return
        stats = self.types[kind]
        stats.requests[column] += 1
        failed = code >= 400
        if failed:
            stats.failures[column] += 1
        write = verb in WRITE_VERBS
        row = stats.namespaces.row(namespace or "(cluster)")
        row[0] += 1
        if write:
            row[1] += 1
            stats.writes.append(Operation(ts, verb, namespace, name, user, code, user_agent))
        if bucket is not None and column < len(VERBS):
            series = f"{stats.category}/{VERBS[column]}"
            self.timeline.add(series, bucket)
            if failed:
                self.timeline.add(series + "/failed", bucket)

    def category_totals(self, category: str) -> tuple[list[int], list[int]]:
        """(requests, failures) per verb column over the category's types."""
        requests = [0] * len(COLUMNS)
        failures = list(requests)
        for stats in self.types.values():
            if stats.category == category:
                for i, (n, f) in enumerate(zip(stats.requests, stats.failures, strict=True)):
                    requests[i] += n
                    failures[i] += f
        return requests, failures
