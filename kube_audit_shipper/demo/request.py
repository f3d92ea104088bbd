"""One API request as the demo's fake kube-apiserver records it: who sent it and what it asked.

`AuditEventGenerator.record` turns an `ApiRequest` into the next audit event of its stream (same clock,
auditIDs, field order and Status bodies as the generated traffic), so a scripted request (the demo's suspicious
actions) reads exactly like the traffic around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LEVELS", "Actor", "ApiRequest"]

LEVELS = ("Metadata", "Request", "RequestResponse")
_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
_FAILURES = (403, 404, 409, 429)
_SUCCESSES = (101, 200, 201)


@dataclass(frozen=True, slots=True)
class Actor:
    """The client as the event records it.

    ``authz_reason`` is the RBAC reason annotation of an allowed request (``{ns}`` is replaced by the request's
    namespace); None means no authorization annotations at all, as for a request API Priority and Fairness
    rejects before authorization.
    """

    user: dict[str, Any]
    source_ips: tuple[str, ...]
    user_agent: str
    authz_reason: str | None
    impersonated: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.user.get("username"), str) or not self.source_ips:
            raise ValueError("an Actor needs user.username and at least one source IP")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """What the apiserver received and answered.

    ``resource`` is a resource name (``pods``) or, starting with ``/``, a non-resource path (``/version``).
    ``code`` None is the verb's success code; 403, 404, 409 and 429 make the request fail with the Status body
    kube-apiserver returns for them; 101 is an upgraded connection (exec, attach, port-forward).
    ``latency_us`` 0 draws a latency from the stream.
    """

    actor: Actor
    verb: str
    resource: str
    group: str = ""
    version: str = "v1"
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    query: str = ""
    level: str = "Metadata"
    stage: str = "ResponseComplete"
    code: int | None = None
    request_object: Any = None
    response_object: Any = None
    latency_us: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.verb not in _VERBS:
            problems.append(f"verb {self.verb!r}")
        if self.level not in LEVELS:
            problems.append(f"level {self.level!r}")
        if self.stage not in ("ResponseStarted", "ResponseComplete"):
            problems.append(f"stage {self.stage!r}")
        if self.code is not None and self.code not in _FAILURES + _SUCCESSES:
            problems.append(f"code {self.code}")
        if not self.resource or (self.resource[0] == "/" and (self.namespace or self.name or self.subresource)):
            problems.append(f"resource {self.resource!r}")
        if self.latency_us < 0:
            problems.append("latency_us")
        if problems:
            raise ValueError(f"invalid ApiRequest: {', '.join(problems)}")

    @property
    def fails(self) -> bool:
        return self.code in _FAILURES
