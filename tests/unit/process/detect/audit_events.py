"""Realistic audit events for detection tests, shaped as kube-apiserver writes them (audit.k8s.io/v1).

`event(...)` builds one Event dict with the fields in the apiserver's order: the requestURI built from the
objectRef (with the query given), the user and its groups, the authorization annotations, a Status of the right
shape for the code, timestamps a few milliseconds apart. `line(...)` is the same as a compact JSON line.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

KUBECTL = "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc"
HUMAN = ("alice@example.com", ["system:authenticated"])
_counter = itertools.count(1)
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid", 429: "TooManyRequests"}


def audit_id(number: int | None = None) -> str:
    value = next(_counter) if number is None else number
    return f"5b0e4a7c-6f1e-4c9a-9d3b-{value:012x}"


def pod(name: str = "web-0", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A Pod as kubectl sends it, `spec` merged over one nginx container."""
    body: dict[str, Any] = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27.2", "resources": {}}], "restartPolicy": "Always"},
        "status": {},
    }
    body["spec"].update(spec)
    return body


def workload(kind: str, name: str, namespace: str = "default", **pod_spec: Any) -> dict[str, Any]:
    """A Deployment/DaemonSet/... (or CronJob) with a pod template."""
    template = {"metadata": {"labels": {"app": name}}, "spec": pod(name, namespace, **pod_spec)["spec"]}
    group = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "CronJob":
        spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    return {"kind": kind, "apiVersion": group, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def event(
    verb: str,
    resource: str | None = None,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
    group: str = "",
    version: str = "v1",
    path: str | None = None,
    query: str = "",
    user: tuple[str, list[str]] | None = HUMAN,
    impersonated: str | None = None,
    source_ip: str = "10.0.8.15",
    user_agent: str = KUBECTL,
    code: int = 200,
    stage: str = "ResponseComplete",
    level: str | None = None,
    request_object: Any = None,
    response_object: Any = None,
    audit: str | None = None,
    time: str = "2026-11-22T10:00:00.000000Z",
    decision: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    if path is None:
        if resource is None:
            raise ValueError("give a resource or a path")
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        parts = [prefix]
        if namespace and resource != "namespaces":
            parts.append(f"namespaces/{namespace}")
        parts.append(resource)
        if name and verb not in ("list", "watch", "deletecollection") and not (verb == "create" and not subresource):
            parts.append(name)
        if subresource:
            parts.append(subresource)
        path = "/".join(parts)
    uri = f"{path}?{query}" if query else path
    if level is None:
        level = "Request" if request_object is not None else "Metadata"
        if response_object is not None:
            level = "RequestResponse"
    out: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": audit or audit_id(),
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
    }
    if user is not None:
        out["user"] = {"username": user[0], "groups": list(user[1])}
    else:
        out["user"] = {}
    if impersonated:
        out["impersonatedUser"] = {"username": impersonated, "groups": ["system:authenticated"]}
    out["sourceIPs"] = [source_ip]
    out["userAgent"] = user_agent
    if resource is not None:
        ref: dict[str, Any] = {"resource": resource}
        if namespace:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if group:
            ref["apiGroup"] = group
        ref["apiVersion"] = version
        if subresource:
            ref["subresource"] = subresource
        out["objectRef"] = ref
    if code < 400:
        out["responseStatus"] = {"metadata": {}, "code": code}
    else:
        why = _REASONS.get(code, "InternalError")
        out["responseStatus"] = {"metadata": {}, "status": "Failure", "message": f"{resource or path} is {why.lower()}", "reason": why, "code": code}
    if request_object is not None and level in ("Request", "RequestResponse"):
        out["requestObject"] = request_object
    if response_object is not None and level == "RequestResponse":
        out["responseObject"] = response_object
    out["requestReceivedTimestamp"] = time
    out["stageTimestamp"] = time
    allowed = decision or ("forbid" if code == 403 else "allow")
    annotations = {"authorization.k8s.io/decision": allowed}
    if allowed == "allow":
        annotations["authorization.k8s.io/reason"] = reason or 'RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "cluster-admin" to Group "admins"'
    out["annotations"] = annotations
    return out


def line(*args: Any, **kwargs: Any) -> bytes:
    return msgspec.json.encode(event(*args, **kwargs))


def encode(value: dict[str, Any]) -> bytes:
    return msgspec.json.encode(value)
