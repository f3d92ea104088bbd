"""AuditEventGenerator.record: a scripted request becomes the next event of the stream, as kube-apiserver writes it."""

from __future__ import annotations

import json

import pytest

from kube_audit_shipper.demo.events import AuditEventGenerator
from kube_audit_shipper.demo.request import Actor, ApiRequest

ANONYMOUS = Actor({"username": "system:anonymous", "groups": ["system:unauthenticated"]}, ("198.51.100.7",), "curl/8.5.0", "")


def test_a_recorded_request_continues_the_stream_clock_and_ids() -> None:
    gen = AuditEventGenerator(5)
    before = [json.loads(line) for line in gen.lines(10)]
    audit_id, line = gen.record(ApiRequest(gen.person("bob@example.com", "10.8.0.9"), "get", "secrets", namespace="payments", name="db"))
    after = json.loads(next(gen.lines(1)))
    event = json.loads(line)
    assert event["auditID"] == audit_id and audit_id not in {e["auditID"] for e in [*before, after]}
    assert before[-1]["stageTimestamp"] < event["stageTimestamp"] < after["stageTimestamp"]
    assert event["requestReceivedTimestamp"] <= event["stageTimestamp"]
    assert list(event) == [
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "user",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "responseStatus",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "annotations",
    ]
    assert (
        event["annotations"]["authorization.k8s.io/reason"] == 'RBAC: allowed by RoleBinding "developers/payments" of ClusterRole "edit" to Group "developers"'
    )
    assert event["userAgent"].startswith("kubectl/") and event["sourceIPs"] == ["10.8.0.9"]


def test_the_same_seed_and_requests_give_the_same_bytes() -> None:
    def run() -> list[bytes]:
        gen = AuditEventGenerator(8)
        lines = list(gen.lines(5))
        lines.append(gen.record(ApiRequest(ANONYMOUS, "get", "/version"))[1])
        return [*lines, *gen.lines(5)]

    assert run() == run()


def test_a_refused_request_carries_the_status_and_annotations_of_the_apiserver() -> None:
    gen = AuditEventGenerator(1)
    resource = json.loads(gen.record(ApiRequest(ANONYMOUS, "list", "secrets", namespace="kube-system", code=403))[1])
    assert resource["requestURI"] == "/api/v1/namespaces/kube-system/secrets"
    assert resource["responseStatus"] == {
        "metadata": {},
        "status": "Failure",
        "message": 'secrets is forbidden: User "system:anonymous" cannot list resource "secrets" in API group "" in the namespace "kube-system"',
        "reason": "Forbidden",
        "details": {"kind": "secrets"},
        "code": 403,
    }
    assert resource["annotations"] == {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
    path = json.loads(gen.record(ApiRequest(ANONYMOUS, "get", "/apis", code=403))[1])
    assert "objectRef" not in path and path["responseStatus"]["message"] == 'forbidden: User "system:anonymous" cannot get path "/apis"'
    throttled = json.loads(gen.record(ApiRequest(ANONYMOUS, "get", "pods", namespace="default", name="web", code=429))[1])
    assert throttled["responseStatus"] == {"metadata": {}, "code": 429} and "annotations" not in throttled


def test_a_create_is_posted_to_the_collection_a_subresource_to_the_object() -> None:
    gen = AuditEventGenerator(2)
    admin = gen.person("kubernetes-admin", "10.8.0.1")
    body = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x", "namespace": "default"}}
    create = json.loads(gen.record(ApiRequest(admin, "create", "configmaps", namespace="default", name="x", level="Request", request_object=body))[1])
    assert create["requestURI"] == "/api/v1/namespaces/default/configmaps" and create["objectRef"]["name"] == "x"
    assert create["requestObject"] == body and create["responseStatus"]["code"] == 201
    metadata = json.loads(gen.record(ApiRequest(admin, "create", "configmaps", namespace="default", name="y", request_object=body))[1])
    assert "requestObject" not in metadata  # a Metadata event carries no body
    token = json.loads(gen.record(ApiRequest(admin, "create", "serviceaccounts", namespace="ci", name="deployer", subresource="token"))[1])
    assert token["requestURI"] == "/api/v1/namespaces/ci/serviceaccounts/deployer/token"
    for _, line in AuditEventGenerator(4).records(3000):  # the generated traffic's creates too
        event = json.loads(line)
        ref = event.get("objectRef", {})
        if event["verb"] == "create" and "subresource" not in ref and "name" in ref:
            assert not event["requestURI"].split("?")[0].endswith("/" + ref["name"]), event["requestURI"]


def test_people_and_pods_of_the_simulated_cluster() -> None:
    gen = AuditEventGenerator(3)
    assert gen.person("alice@example.com", "10.8.0.2").user["groups"] == ["developers", "system:authenticated"]
    with pytest.raises(KeyError):
        gen.person("mallory@example.com", "10.8.0.2")
    pods = gen.pods_of("checkout-api")
    assert len(pods) == 6 and {ns for ns, _ in pods} == {"checkout"} and all(name.startswith("checkout-api-") for _, name in pods)
    assert gen.pods_of("no-such-app") == []


@pytest.mark.parametrize(
    "fields",
    [
        {"verb": "escalate"},
        {"level": "None"},
        {"stage": "RequestReceived"},
        {"code": 500},
        {"resource": "/version", "name": "x"},
        {"resource": ""},
        {"latency_us": -1},
    ],
)
def test_invalid_requests_are_refused(fields: dict[str, object]) -> None:
    args: dict[str, object] = {"actor": ANONYMOUS, "verb": "get", "resource": "pods"} | fields
    with pytest.raises(ValueError):
        ApiRequest(**args)  # type: ignore[arg-type]


def test_an_actor_needs_a_user_name_and_an_address() -> None:
    with pytest.raises(ValueError):
        Actor({"groups": []}, ("10.0.0.1",), "kubectl", None)
    with pytest.raises(ValueError):
        Actor({"username": "bob"}, (), "kubectl", None)
