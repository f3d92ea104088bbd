"""The demo's suspicious actions, recorded as kube-apiserver records them, and the built-in rules each one raises.

Four things happen among the normal traffic of the demo cluster:

1. alice@example.com, a developer, opens a shell in a checkout-api pod (``kubectl exec -it``, over WebSocket, so
   verb ``get``) whose first command prints the pod's service-account token and the passwords in its
   environment. The session is still open when the demo ends: only its ``ResponseStarted`` stage is recorded.
2. bob@example.com reads the payments database credentials (``kubectl get secret -o yaml``).
3. A scanner at a public address (a Tor exit) probes the API anonymously: ``/version`` and ``/healthz``
   answer, then twelve requests for discovery, secrets, pods, nodes and RBAC objects are refused (403) within a
   few seconds.
4. The shared admin kubeconfig (``kubernetes-admin``), used from another public address, binds cluster-admin
   to kube-system's ``default`` service account (``kubectl create clusterrolebinding``).

Each request is an `ApiRequest` turned into an event by `AuditEventGenerator.record`, so its auditID, timestamps,
field order, Status body and authorization annotations are those of the traffic around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote_plus

from kube_audit_shipper.demo.events import AuditEventGenerator
from kube_audit_shipper.demo.request import Actor, ApiRequest

__all__ = ["SCANNER_IP", "Incident", "incidents"]

SCANNER_IP = "185.220.101.47"
ADMIN_IP = "185.220.101.52"
_SCANNER_AGENT = "python-requests/2.32.3"
_PUBLIC_INFO = 'RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole "system:public-info-viewer" to Group "system:unauthenticated"'
_EXEC_ARGV = ("sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token; env | grep -i pass; exec sh")
# what the scanner asks for: (verb, resource or path, API group, namespace); the first two are answered
_PROBES = (
    ("get", "/version", "", ""),
    ("get", "/healthz", "", ""),
    ("get", "/api", "", ""),
    ("get", "/apis", "", ""),
    ("list", "secrets", "", ""),
    ("list", "pods", "", ""),
    ("list", "namespaces", "", ""),
    ("list", "nodes", "", ""),
    ("list", "configmaps", "", "kube-system"),
    ("list", "clusterrolebindings", "rbac.authorization.k8s.io", ""),
    ("list", "deployments", "apps", ""),
    ("list", "serviceaccounts", "", "kube-system"),
    ("get", "/metrics", "", ""),
    ("list", "secrets", "", "kube-system"),
)
_ANSWERED = 2


@dataclass(frozen=True, slots=True)
class Incident:
    """One suspicious action: its requests, the built-in rules it raises, and the pace of its requests.

    ``spacing_s`` is the time between two of its requests (the scanner's pace); a single request has 0.
    """

    title: str
    rules: tuple[str, ...]
    requests: tuple[ApiRequest, ...]
    spacing_s: float = 0.0


def _go_query(pairs: list[tuple[str, str]]) -> str:
    """A query string as Go's ``url.Values.Encode`` writes it (client-go): keys sorted, values in order, spaces as +."""
    order = sorted({key for key, _ in pairs})
    return "&".join(f"{quote_plus(key, safe='')}={quote_plus(value, safe='')}" for key in order for k, value in pairs if k == key)


def _exec(gen: AuditEventGenerator) -> Incident:
    namespace, pod = gen.pods_of("checkout-api")[0]
    query = _go_query([*(("command", part) for part in _EXEC_ARGV), ("container", "checkout-api"), ("stdin", "true"), ("stdout", "true"), ("tty", "true")])
    request = ApiRequest(
        gen.person("alice@example.com", "10.8.1.23"),
        "get",
        "pods",
        namespace=namespace,
        name=pod,
        subresource="exec",
        query=query,
        level="Request",
        stage="ResponseStarted",
        code=101,
        latency_us=41_000,
    )
    return Incident("a shell in a checkout-api pod that prints its service-account token", ("exec-into-container",), (request,))


def _secret_read(gen: AuditEventGenerator) -> Incident:
    request = ApiRequest(gen.person("bob@example.com", "10.8.2.41"), "get", "secrets", namespace="payments", name="payments-worker-credentials")
    return Incident("the payments database credentials read with kubectl", ("secret-read-by-human",), (request,))


def _scan() -> Incident:
    anonymous = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
    requests = []
    for i, (verb, resource, group, namespace) in enumerate(_PROBES):
        answered = i < _ANSWERED
        actor = Actor(anonymous, (SCANNER_IP,), _SCANNER_AGENT, _PUBLIC_INFO if answered else "")
        requests.append(ApiRequest(actor, verb, resource, group=group, namespace=namespace, code=None if answered else 403))
    return Incident(
        f"an anonymous scan from {SCANNER_IP}: {len(_PROBES) - _ANSWERED} of {len(_PROBES)} requests refused",
        ("public-access-failures", "forbidden-burst"),
        tuple(requests),
        spacing_s=0.25,
    )


def _cluster_admin_binding(gen: AuditEventGenerator) -> Incident:
    name = "node-maintenance"
    body = {
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": name, "creationTimestamp": None},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    }
    request = ApiRequest(
        gen.person("kubernetes-admin", ADMIN_IP),
        "create",
        "clusterrolebindings",
        group="rbac.authorization.k8s.io",
        name=name,
        query="fieldManager=kubectl-create&fieldValidation=Strict",
        level="Request",
        request_object=body,
    )
    return Incident(f"cluster-admin bound to kube-system's default service account from {ADMIN_IP}", ("cluster-admin-binding",), (request,))


def incidents(gen: AuditEventGenerator) -> list[Incident]:
    """The four suspicious actions, in the order they happen, aimed at the cluster ``gen`` simulates."""
    return [_exec(gen), _secret_read(gen), _scan(), _cluster_admin_binding(gen)]
