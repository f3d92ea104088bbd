"""Deterministic, realistic kube-apiserver audit events (``audit.k8s.io/v1``, one compact JSON object a line).

`AuditEventGenerator` imitates what a busy control plane writes to ``--audit-log-path``: mostly small Metadata
events (node lease renewals, kubelet/controller gets and watches, discovery, health probes), Request events that
carry the request body (node/pod status patches, Events, Bindings, TokenRequests, Pods, applied Deployments,
ConfigMaps, Secrets with data, json-patches, DeleteOptions), RequestResponse events of tens of KB whose objects
carry ``metadata.managedFields`` (Pods, Deployments, ConfigMaps, PodLists, a kubectl Table), exec/attach/
portforward connections (code 101), failures (403, 404, 409, 429) and, rarely, one event of several MB.
Fields come in the order the apiserver writes them; Metadata events carry no bodies, Request events at most
``requestObject``, RequestResponse events also ``responseObject``.

Everything is drawn from one ``random.Random(seed)``: the same seed, start time and mix give byte-identical
output, auditIDs included. Each line is an independent request with its own auditID (the two stage events of a
long-running request are not paired); the low 48 bits of an auditID are a bijection of the line's sequence
number, so auditIDs never repeat. ``stageTimestamp`` strictly increases line by line (the order the apiserver
writes in) from ``start_time``; ``requestReceivedTimestamp`` is earlier by the request's latency (minutes for a
finished watch) but never before ``start_time``.

`record` writes a scripted request (`demo.request.ApiRequest`) as the next event of the same stream, and
`person`/`pods_of` name the people and pods of the simulated cluster for such requests: the demo's suspicious
actions (`demo.incidents`) are written that way, so they read like the traffic around them.

Speed: a line is one dict encoded by msgspec; large bodies are templates encoded once, into which per-event
bytes (names, uids, resourceVersions, timestamps) are spliced and embedded as `msgspec.Raw`.
"""

from __future__ import annotations

import base64
import bisect
import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec

from kube_audit_shipper.demo.objects import POD_CONDITIONS, POD_TABLE, deployment_object, fields_set, managed_field, pod_object, status_body, table_row
from kube_audit_shipper.demo.request import Actor, ApiRequest

__all__ = ["DEFAULT_START_TIME", "AuditEventGenerator", "EventMix"]

DEFAULT_START_TIME = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
"""Used when no ``start_time`` is given, so that the output depends on the seed alone."""

_KV, _OS = "v1.31.0", "(linux/amd64) kubernetes/9edcffc"
_M48 = (1 << 48) - 1
_MARK = re.compile(rb'@@(\w+)@@|"##(\w+)##"')  # "@@k@@" inside a JSON string; "##k##" replaces a whole value
_RBAC = 'RBAC: allowed by ClusterRoleBinding "{}" of ClusterRole "{}" to {}'
_DISCOVERY = _RBAC.format("system:discovery", "system:discovery", 'Group "system:authenticated"')
_WATCHQ = "allowWatchBookmarks=true{}&resourceVersion={}&timeout={}m{}s&timeoutSeconds={}&watch=true"
_ALPHA = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of generated Kubernetes name suffixes
_COND = ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
_PUBLIC = ("81.2.69.", "34.118.20.", "52.14.203.", "2.125.160.", "185.199.110.")
_GVS = (
    "apps/v1",
    "batch/v1",
    "discovery.k8s.io/v1",
    "networking.k8s.io/v1",
    "metrics.k8s.io/v1beta1",
    "coordination.k8s.io/v1",
    "policy/v1",
    "rbac.authorization.k8s.io/v1",
    "cert-manager.io/v1",
)
_CONTROLLERS = (
    "endpointslice-controller",
    "replicaset-controller",
    "deployment-controller",
    "namespace-controller",
    "generic-garbage-collector",
    "resourcequota-controller",
    "endpoint-controller",
)
_POD_ACTORS = ("coredns", "prometheus", "argocd-application-controller", "metrics-server")
# app, image, port, namespace, replicas
_APPS = (
    ("checkout-api", "registry.example.com/shop/checkout-api:2.14.1", 8080, "checkout", 6),
    ("payments-worker", "registry.example.com/shop/payments-worker:1.9.0", 9090, "payments", 4),
    ("frontend", "nginx:1.27.2", 80, "default", 4),
    ("redis", "redis:7.4.1", 6379, "checkout", 2),
    ("ingress-nginx-controller", "registry.k8s.io/ingress-nginx/controller:v1.11.3", 443, "ingress-nginx", 3),
    ("prometheus", "quay.io/prometheus/prometheus:v2.55.0", 9090, "monitoring", 2),
    ("coredns", "registry.k8s.io/coredns/coredns:v1.11.3", 53, "kube-system", 2),
    ("argocd-application-controller", "quay.io/argoproj/argocd:v2.13.0", 8082, "argocd", 1),
    ("metrics-server", "registry.k8s.io/metrics-server/metrics-server:v0.7.2", 10250, "kube-system", 1),
)
# weight, actor, verb, group, version, resource ("/..." = non-resource path), subresource, namespace, name, query
# ("W" in the query = a watch; a name then goes into fieldSelector, as client-go sends it)
_META = (
    (30, "kubelet", "update", "coordination.k8s.io", "v1", "leases", "", "kube-node-lease", "{node}", "timeout=10s"),
    (8, "kubelet", "get", "", "v1", "nodes", "", "", "{node}", "resourceVersion=0&timeout=10s"),
    (4, "kubelet", "get", "", "v1", "pods", "", "{ns}", "{pod}", ""),
    (3, "kubelet", "watch", "", "v1", "pods", "", "", "", "W&fieldSelector=spec.nodeName%3D{node}"),
    (4, "kubelet", "watch", "", "v1", "configmaps", "", "{ns}", "kube-root-ca.crt", "W"),
    (4, "kubelet", "create", "", "v1", "serviceaccounts", "token", "{ns}", "{app}", ""),
    (2, "kubelet", "watch", "", "v1", "secrets", "", "{ns}", "{app}-tls", "W"),
    (4, "kcm", "update", "coordination.k8s.io", "v1", "leases", "", "kube-system", "kube-controller-manager", "timeout=5s"),
    (4, "sched", "update", "coordination.k8s.io", "v1", "leases", "", "kube-system", "kube-scheduler", "timeout=5s"),
    (3, "endpointslice-controller", "update", "discovery.k8s.io", "v1", "endpointslices", "", "{ns}", "{app}-{sfx}", ""),
    (2, "endpoint-controller", "update", "", "v1", "endpoints", "", "{ns}", "{app}", ""),
    (3, "replicaset-controller", "get", "apps", "v1", "replicasets", "", "{ns}", "{rs}", ""),
    (2, "deployment-controller", "get", "apps", "v1", "deployments", "", "{ns}", "{app}", ""),
    (2, "generic-garbage-collector", "list", "apps", "v1", "controllerrevisions", "", "", "", "limit=500&resourceVersion=0"),
    (1, "namespace-controller", "get", "", "v1", "namespaces", "", "", "{ns}", ""),
    (3, "resourcequota-controller", "get", "", "", "/apis/{gv}", "", "", "", "timeout=32s"),
    (
        3,
        "kube-proxy",
        "watch",
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "",
        "",
        "",
        "W&labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name",
    ),
    (2, "coredns", "watch", "", "v1", "services", "", "", "", "W"),
    (4, "probe", "get", "", "", "/readyz", "", "", "", ""),
    (2, "probe", "get", "", "", "/livez", "", "", "", ""),
    (3, "human", "get", "", "v1", "pods", "", "{ns}", "{pod}", ""),
    (2, "human", "list", "apps", "v1", "deployments", "", "{ns}", "", "limit=500"),
    (2, "human", "get", "", "v1", "configmaps", "", "{ns}", "{app}-config", ""),
    (3, "prometheus", "list", "", "v1", "endpoints", "", "{ns}", "", "limit=500&resourceVersion=0"),
    (2, "argocd-application-controller", "watch", "apps", "v1", "deployments", "", "", "", "W"),
    (2, "metrics-server", "create", "authorization.k8s.io", "v1", "subjectaccessreviews", "", "", "", ""),
)
# verb -> (success code, failure codes with cumulative probabilities)
_CODES = {
    "get": (200, ((404, 0.5), (403, 0.85), (429, 1))),
    "list": (200, ((403, 0.8), (429, 1))),
    "watch": (200, ((403, 0.8), (429, 1))),
    "create": (201, ((409, 0.6), (403, 0.9), (429, 1))),
    "update": (200, ((409, 0.7), (403, 0.9), (429, 1))),
    "patch": (200, ((409, 0.6), (403, 0.9), (429, 1))),
    "delete": (200, ((404, 0.6), (403, 1))),
}


@dataclass(frozen=True, slots=True)
class EventMix:
    """Shape of the generated traffic.

    ``metadata``, ``request``, ``request_response`` and ``connect`` are relative weights of the event families
    (normalised; connect = exec/attach/portforward, recorded at level Request without a body). ``failure_rate``:
    share of requests that fail (403/404/409/429). ``impersonation_rate`` and ``public_ip_rate``: shares of
    *human* (kubectl) requests sent with ``--as`` and from a public address. ``big_event_probability``: chance
    that a line is one event of about ``big_event_bytes``. ``events_per_second`` sets the mean timestamp spacing.
    """

    metadata: float = 0.83
    request: float = 0.135
    request_response: float = 0.03
    connect: float = 0.005
    failure_rate: float = 0.02
    impersonation_rate: float = 0.1
    public_ip_rate: float = 0.3
    big_event_probability: float = 1 / 200_000
    big_event_bytes: int = 3 * 1024 * 1024
    events_per_second: float = 250.0

    def __post_init__(self) -> None:
        bad = [f.name for f in fields(self) if getattr(self, f.name) < 0]
        bad += [n for n in ("failure_rate", "impersonation_rate", "public_ip_rate", "big_event_probability") if getattr(self, n) > 1]
        if self.metadata + self.request + self.request_response + self.connect <= 0:
            bad.append("metadata/request/request_response/connect (all zero)")
        if self.events_per_second <= 0:
            bad.append("events_per_second")
        if bad:
            raise ValueError(f"invalid EventMix: {', '.join(sorted(set(bad)))}")


class _Tpl:
    """A JSON document encoded once; `render` splices per-event bytes into its markers."""

    __slots__ = ("keys", "parts")

    def __init__(self, obj: object) -> None:
        raw, pos, self.parts, self.keys = msgspec.json.encode(obj), 0, [], []
        for m in _MARK.finditer(raw):
            self.parts.append(raw[pos : m.start()])
            self.keys.append((m.group(1) or m.group(2)).decode())
            pos = m.end()
        self.parts.append(raw[pos:])

    def render(self, vals: dict[str, bytes]) -> bytes:
        out = [self.parts[0]]
        for key, part in zip(self.keys, self.parts[1:], strict=True):
            out += (vals[key], part)
        return b"".join(out)


class _Pod:
    """One pod of the simulated cluster: where it runs, and its values as bytes for the templates."""

    __slots__ = ("app", "fmt", "name", "node", "ns", "rs", "vals")

    def __init__(self, app: int, node: int, vals: dict[str, str]) -> None:
        self.app, self.node, self.ns, self.name, self.rs = app, node, vals["ns"], vals["name"], vals["rs"]
        self.vals = {k: v.encode() for k, v in vals.items()}
        self.fmt = {"node": vals["node"], "ns": self.ns, "pod": self.name, "app": _APPS[app][0], "rs": self.rs, "sfx": vals["sfx"]}


class _Req:
    """One request before it is written out: set by a family method, read by `_finish`."""

    __slots__ = (
        "actor",
        "code",
        "group",
        "latency",
        "name",
        "ns",
        "query",
        "req",
        "resource",
        "resp",
        "stage",
        "status",
        "sub",
        "uid",
        "verb",
        "version",
    )

    def __init__(
        self,
        actor: tuple[Any, ...],
        verb: str,
        group: str,
        resource: str,
        ns: str = "",
        name: str = "",
        sub: str = "",
        query: str = "",
        req: Any = None,
        resp: Any = None,
    ) -> None:
        self.actor, self.verb, self.group, self.resource, self.ns, self.name = actor, verb, group, resource, ns, name
        self.version, self.sub, self.query, self.req, self.resp = "v1", sub, query, req, resp
        self.stage, self.latency, self.uid, self.code = "ResponseComplete", 0, "", _CODES[verb][0]
        self.status: dict[str, Any] | None = None


_EXEC = (("sh", "-c", "ls"), ("/bin/bash",), ("sh",), ("cat", "/etc/resolv.conf"), ("env",))


def _cumulative(pairs: Any) -> tuple[list[float], list[Any]]:
    cum, items, total = [], [], 0.0
    for weight, item in pairs:
        if weight > 0:
            total += weight
            cum.append(total)
            items.append(item)
    return cum, items


def _uuid(x: int) -> str:
    """A version-4 UUID string from 128 bits (the version and variant bits lie above the low 48)."""
    h = f"{x & ~(0xF << 76) & ~(0x3 << 62) | (0x4 << 76) | (0x2 << 62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class AuditEventGenerator:
    """Deterministic stream of realistic audit events (see the module docstring).

    ``seed`` fixes everything; timestamps start at ``start_time`` (timezone-aware, default `DEFAULT_START_TIME`);
    ``mix`` shapes the traffic. One generator is one stream: not for concurrent use from several threads.
    """

    def __init__(self, seed: int = 0, *, start_time: datetime | None = None, mix: EventMix | None = None) -> None:
        start = DEFAULT_START_TIME if start_time is None else start_time
        if start.tzinfo is None:
            raise ValueError("start_time must be timezone-aware")
        since = start - datetime(1970, 1, 1, tzinfo=UTC)
        self.seed, self.mix = seed, EventMix() if mix is None else mix
        self._rng = rng = random.Random(seed)
        self._rand, self._encode = rng.random, msgspec.json.Encoder().encode
        self._start = self._now = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
        self._gap = 1_000_000 / self.mix.events_per_second
        self._seq, self._salt, self._rv = 0, rng.getrandbits(48), 4_000_000 + rng.randrange(1_000_000)
        self._ts_cache: tuple[int, str] = (-1, "")
        self._uids: dict[tuple[str, ...], str] = {}
        m = self.mix
        self._families = _cumulative(
            ((m.metadata, self._metadata), (m.request, self._request), (m.request_response, self._request_response), (m.connect, self._connect))
        )
        self._meta = _cumulative((row[0], row) for row in _META)
        self._requests = _cumulative(
            (
                (22, self._q_node_status),
                (14, self._q_lease),
                (18, self._q_event),
                (12, self._q_pod_status),
                (6, self._q_binding),
                (8, self._q_token),
                (5, self._q_pod_create),
                (3, self._q_apply),
                (4, self._q_configmap),
                (3, self._q_secret),
                (4, self._q_kubectl),
            )
        )
        self._rrs = _cumulative(
            ((4, self._rr_pod_create), (3, self._rr_deployment), (2, self._rr_get), (5, self._rr_list), (2, self._rr_table), (1, self._rr_configmap))
        )
        self._build_cluster(rng)

    def line(self) -> bytes:
        """The next event as one compact JSON line, without the trailing newline."""
        return self._next()[1]

    def event(self) -> dict[str, Any]:
        """The next event as a fresh dict (the decoded `line`)."""
        event: dict[str, Any] = msgspec.json.decode(self._next()[1])
        return event

    def records(self, n: int) -> Iterator[tuple[str, bytes]]:
        """The next ``n`` events as ``(auditID, line)`` pairs."""
        for _ in range(n):
            yield self._next()

    def lines(self, n: int) -> Iterator[bytes]:
        """The next ``n`` lines (no trailing newlines)."""
        for _ in range(n):
            yield self._next()[1]

    def record(self, request: ApiRequest) -> tuple[str, bytes]:
        """``request`` as the next event of the stream: ``(auditID, line)``, with the stream's clock and auditIDs."""
        audit_id = self._advance()
        a = request.actor
        r = _Req(
            (a.user, a.impersonated, list(a.source_ips), a.user_agent, a.authz_reason),
            request.verb,
            request.group,
            request.resource,
            request.namespace,
            request.name,
            request.subresource,
            request.query,
            request.request_object,
            request.response_object,
        )
        r.version, r.stage, r.latency = request.version, request.stage, request.latency_us
        if request.fails:
            assert request.code is not None
            self._failed(r, request.code)
        elif request.code is not None:
            r.code = request.code
        return audit_id, self._finish(audit_id, request.level, r)

    def person(self, username: str, source_ip: str) -> Actor:
        """A person of the simulated cluster (``kubernetes-admin``, ``alice@example.com``, ``bob@example.com``),
        with the kubectl and RBAC grant the generated traffic gives them, sending from ``source_ip``."""
        for user, agent, reason in self._humans:
            if user["username"] == username:
                return Actor(user, (source_ip,), agent, reason)
        raise KeyError(username)

    def pods_of(self, app: str) -> list[tuple[str, str]]:
        """``(namespace, name)`` of the pods of one app of the simulated cluster (``checkout-api``, ``redis``, ...)."""
        return [(p.ns, p.name) for p in self._pods if p.fmt["app"] == app]

    def write_bytes(self, approx_bytes: int) -> Iterator[bytes]:
        """Lines until, counting one newline each, they add up to at least ``approx_bytes`` (for benchmarks)."""
        total = 0
        while total < approx_bytes:
            line = self._next()[1]
            total += len(line) + 1
            yield line

    # ---- one event -----------------------------------------------------------------------------------------------
    def _advance(self) -> str:
        """Move the clock and resourceVersion on by one request; the request's auditID."""
        rnd = self._rand
        self._now += 1 + int(-math.log(1.0 - rnd()) * self._gap)
        self._rv += 1 + int(rnd() * 40)
        x = (self._seq ^ self._salt) & _M48  # a bijection of the sequence number on 48 bits: no repeats
        self._seq += 1
        x = ((x ^ (x >> 23)) * 0x9E3779B97F4B) & _M48
        x = ((x ^ (x >> 19)) * 0xBF58476D1CE5) & _M48
        return _uuid(self._rng.getrandbits(80) << 48 | x ^ (x >> 21))

    def _next(self) -> tuple[str, bytes]:
        rnd, mix = self._rand, self.mix
        audit_id = self._advance()
        pod = self._pods[int(rnd() * len(self._pods))]
        if mix.big_event_probability and rnd() < mix.big_event_probability:
            level, r = self._big(pod)
        else:
            level, r = self._pick(self._families)(pod)
            if r.code != 101 and rnd() < mix.failure_rate:
                self._fail(r)
        return audit_id, self._finish(audit_id, level, r)

    def _finish(self, audit_id: str, level: str, r: _Req) -> bytes:
        user, imp, ips, ua, reason = r.actor
        if r.resource[0] == "/":
            uri, ref = r.resource + ("?" + r.query if r.query else ""), None
        else:
            ref, parts = {"resource": r.resource}, [f"/apis/{r.group}/{r.version}" if r.group else "/api/v1"]
            if r.ns:
                ref["namespace"] = r.ns
                parts.append("/namespaces/" + r.ns)
            parts.append("/" + r.resource)
            if r.name:
                ref["name"] = r.name
                if r.verb not in ("list", "watch") and (r.verb != "create" or r.sub):  # a create is POSTed to the collection
                    parts.append("/" + r.name)
            if r.uid:  # back-filled from the body of an update, as the apiserver does
                ref["uid"] = r.uid
            if r.group:
                ref["apiGroup"] = r.group
            ref["apiVersion"] = r.version
            if r.uid:
                ref["resourceVersion"] = str(self._rv - 1)
            if r.sub:
                ref["subresource"] = r.sub
                parts.append("/" + r.sub)
            uri = "".join(parts) + ("?" + r.query if r.query else "")
        ev = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": level,
            "auditID": audit_id,
            "stage": r.stage,
            "requestURI": uri,
            "verb": r.verb,
            "user": user,
        }
        if imp:
            ev["impersonatedUser"] = imp
        ev["sourceIPs"], ev["userAgent"] = ips, ua
        if ref:
            ev["objectRef"] = ref
        ev["responseStatus"] = r.status or {"metadata": {}, "code": r.code}
        if level != "Metadata" and r.req is not None:
            ev["requestObject"] = r.req
        if level == "RequestResponse" and r.resp is not None:
            ev["responseObject"] = r.resp
        latency = r.latency or 150 + int(-math.log(1.0 - self._rand()) * 2500)
        ev["requestReceivedTimestamp"] = self._ts(max(self._start, self._now - latency))
        ev["stageTimestamp"] = self._ts(self._now)
        if reason is not None:  # None: rejected before authorization (429 from API Priority and Fairness)
            ev["annotations"] = {
                "authorization.k8s.io/decision": "forbid" if r.code == 403 else "allow",
                "authorization.k8s.io/reason": reason.format(ns=r.ns) if "{" in reason else reason,
            }
        return self._encode(ev)

    def _fail(self, r: _Req) -> None:
        """Turn ``r`` into a failed request: a code fitting its verb, and the Status the apiserver returns."""
        x = self._rand()
        code = next(c for c, p in _CODES[r.verb][1] if x < p)
        if code in (404, 409) and (not r.name or r.resource[0] == "/" or (r.verb == "create" and r.sub)):
            code = 403
        self._failed(r, code)

    def _failed(self, r: _Req, code: int) -> None:
        """``r`` answered with ``code`` (403, 404, 409 or 429) and the Status the apiserver returns with it."""
        r.code, r.stage, r.latency = code, "ResponseComplete", 0
        if code in (403, 429):  # rejected before the body was read: nothing to back-fill objectRef from
            r.uid = ""
        if code == 429:  # API Priority and Fairness rejects before authorization, in plain text
            r.actor, r.req, r.resp = (*r.actor[:4], None), None, None
            return
        gres = f"{r.resource}.{r.group}" if r.group else r.resource
        named = f'{gres} "{r.name}"' if r.name and r.verb not in ("list", "watch") else gres
        details = {k: v for k, v in (("name", r.name), ("group", r.group), ("kind", r.resource)) if v}
        if code == 403:
            who = (r.actor[1] or r.actor[0])["username"]
            if r.resource[0] == "/":
                msg, details = f'forbidden: User "{who}" cannot {r.verb} path "{r.resource}"', {}
            else:
                scope = f' in the namespace "{r.ns}"' if r.ns else " at the cluster scope"
                msg = (
                    f'{named} is forbidden: User "{who}" cannot {r.verb} resource "{r.resource}{"/" + r.sub if r.sub else ""}" in API group "{r.group}"{scope}'
                )
            r.status, r.actor, r.req = status_body(403, "Forbidden", msg, details), (*r.actor[:4], ""), None
        elif code == 404:
            r.status = status_body(404, "NotFound", f"{named} not found", details)
        elif r.verb == "create":
            r.status = status_body(409, "AlreadyExists", f"{named} already exists", details)
        else:
            r.status = status_body(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {named}: the object has been modified; please apply your changes to the latest version and try again",
                details,
            )
        r.resp = {"kind": "Status", "apiVersion": "v1"} | r.status

    # ---- event families ------------------------------------------------------------------------------------------
    def _metadata(self, p: _Pod) -> tuple[str, _Req]:
        rnd = self._rand
        _, actor, verb, group, version, resource, sub, ns, name, query = self._pick(self._meta)
        if "{" in ns + name + resource:
            fmt = p.fmt if "{gv}" not in resource else p.fmt | {"gv": self._choice(_GVS)}
            ns, name, resource = ns.format_map(fmt), name.format_map(fmt), resource.format_map(fmt)
        r = _Req(self._actor(actor, p), verb, group, resource, ns, name, sub)
        r.version = version
        if resource.startswith("/apis"):
            r.actor = (*r.actor[:4], _DISCOVERY)
        if query[:1] == "W":
            ws = 300 + int(rnd() * 300)
            sel = (f"&fieldSelector=metadata.name%3D{name}" if name else "") + query[1:].format_map(p.fmt)
            r.query = _WATCHQ.format(sel, self._rv - 1 - int(rnd() * 5000), ws // 60, ws % 60, ws)
            if rnd() < 0.5:
                r.stage, r.latency = "ResponseStarted", 2_000 + int(rnd() * 30_000)
            else:
                r.latency = ws * 1_000_000 + int(rnd() * 1_000_000)
        else:
            r.query = query
        if verb == "update":
            r.uid = self._uid(resource, ns, name)
        return "Metadata", r

    def _request(self, p: _Pod) -> tuple[str, _Req]:
        return "Request", self._pick(self._requests)(p)

    def _request_response(self, p: _Pod) -> tuple[str, _Req]:
        r = self._pick(self._rrs)(p)
        r.latency = 2_000 + int(self._rand() * 40_000)
        return "RequestResponse", r

    def _connect(self, p: _Pod) -> tuple[str, _Req]:
        """``kubectl exec``/``attach``/``port-forward``: a connect subresource answered with 101 (no body)."""
        rnd, app = self._rand, _APPS[p.app][0]
        x, query = rnd(), ""
        sub = "exec" if x < 0.7 else "attach" if x < 0.85 else "portforward"
        if sub == "exec":
            cmd = self._choice(_EXEC)
            query = (
                "&".join("command=" + quote(c, safe="") for c in cmd)
                + f"&container={app}&"
                + ("stderr=true&stdout=true" if cmd == ("env",) else "stdin=true&stdout=true&tty=true")
            )
        elif sub == "attach":
            query = f"container={app}&stderr=true&stdin=true&stdout=true&tty=true"
        r = _Req(self._human(p), "get" if rnd() < 0.6 else "create", "", "pods", p.ns, p.name, sub, query)
        r.code = 101
        if rnd() < 0.8:
            r.stage, r.latency = "ResponseStarted", 20_000 + int(rnd() * 80_000)
        else:
            r.latency = 2_000_000 + int(rnd() * 600_000_000)
        return "Request", r

    # ---- Request level: the body as the client sent it -----------------------------------------------------------
    def _q_node_status(self, p: _Pod) -> _Req:
        t = self._sec(self._now)
        body = {"status": {"$setElementOrder/conditions": [{"type": c} for c in _COND], "conditions": [{"lastHeartbeatTime": t, "type": c} for c in _COND]}}
        return _Req(self._actor("kubelet", p), "patch", "", "nodes", "", p.fmt["node"], "status", "timeout=10s", body)

    def _q_lease(self, p: _Pod) -> _Req:
        node = p.fmt["node"]
        r = _Req(self._actor("kubelet", p), "update", "coordination.k8s.io", "leases", "kube-node-lease", node, query="timeout=10s")
        r.uid = self._uid("leases", "kube-node-lease", node)
        r.req = {
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                "name": node,
                "namespace": "kube-node-lease",
                "uid": r.uid,
                "resourceVersion": str(self._rv - 1),
                "creationTimestamp": self._sec(self._start - 9 * 86_400_000_000),
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": self._uid("nodes", "", node)}],
                "managedFields": [
                    {
                        "manager": "kubelet",
                        "operation": "Update",
                        "apiVersion": "coordination.k8s.io/v1",
                        "time": self._sec(self._now - 10_000_000),
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields_set("metadata>ownerReferences", "spec>holderIdentity", "spec>leaseDurationSeconds", "spec>renewTime"),
                    }
                ],
            },
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": self._ts(self._now - 900)},
        }
        return r

    def _q_event(self, p: _Pod) -> _Req:
        app, image, *_ = _APPS[p.app]
        t, node = self._sec(self._now), p.fmt["node"]
        name = f"{p.name}.{self._rng.getrandbits(64):x}"
        reason, typ, msg = self._choice(
            (
                ("Pulled", "Normal", f'Container image "{image}" already present on machine'),
                ("Started", "Normal", f"Started container {app}"),
                ("Killing", "Normal", f"Stopping container {app}"),
                ("Unhealthy", "Warning", "Readiness probe failed: HTTP probe failed with statuscode: 503"),
                ("BackOff", "Warning", f"Back-off restarting failed container {app} in pod {p.name}_{p.ns}"),
            )
        )
        body = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": p.ns, "creationTimestamp": None},
            "involvedObject": {
                "kind": "Pod",
                "namespace": p.ns,
                "name": p.name,
                "uid": p.fmt["uid"],
                "apiVersion": "v1",
                "resourceVersion": str(self._rv - 1 - int(self._rand() * 900)),
                "fieldPath": f"spec.containers{{{app}}}",
            },
            "reason": reason,
            "message": msg,
            "source": {"component": "kubelet", "host": node},
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
            "type": typ,
            "eventTime": None,
            "reportingComponent": "kubelet",
            "reportingInstance": node,
        }
        return _Req(self._actor("kubelet", p), "create", "", "events", p.ns, name, req=body)

    def _q_pod_status(self, p: _Pod) -> _Req:
        app, image, *_ = _APPS[p.app]
        t, cid = self._sec(self._now), p.fmt["cid"]
        body = {
            "metadata": {"uid": p.fmt["uid"]},
            "status": {
                "$setElementOrder/conditions": [{"type": c} for c in POD_CONDITIONS],
                "conditions": [{"lastTransitionTime": t, "status": "True", "type": c} for c in ("Ready", "ContainersReady")],
                "containerStatuses": [
                    {
                        "containerID": "containerd://" + cid,
                        "image": image,
                        "imageID": f"{image}@sha256:{cid}",
                        "lastState": {},
                        "name": app,
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": t}},
                    }
                ],
            },
        }
        return _Req(self._actor("kubelet", p), "patch", "", "pods", p.ns, p.name, "status", req=body)

    def _q_binding(self, p: _Pod) -> _Req:
        body = {
            "kind": "Binding",
            "apiVersion": "v1",
            "metadata": {"name": p.name, "namespace": p.ns, "uid": p.fmt["uid"], "creationTimestamp": None},
            "target": {"kind": "Node", "name": p.fmt["node"]},
        }
        return _Req(self._actor("sched", p), "create", "", "pods", p.ns, p.name, "binding", req=body)

    def _q_token(self, p: _Pod) -> _Req:
        body = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {
                "audiences": ["https://kubernetes.default.svc.cluster.local"],
                "expirationSeconds": 3607,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": p.name, "uid": p.fmt["uid"]},
            },
            "status": {"token": "", "expirationTimestamp": None},
        }
        return _Req(self._actor("kubelet", p), "create", "", "serviceaccounts", p.ns, p.fmt["app"], "token", req=body)

    def _q_pod_create(self, p: _Pod) -> _Req:
        body = msgspec.Raw(self._tpl[p.app]["pod_req"].render(p.vals))
        return _Req(self._actor("replicaset-controller", p), "create", "", "pods", p.ns, p.name, req=body)

    def _q_apply(self, p: _Pod) -> _Req:
        app, image, *_ = _APPS[p.app]
        body = {
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": self._applied[p.app]}},
            "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": app}, {"name": "envoy"}], "containers": [{"image": image, "name": app}]}}},
        }
        return _Req(self._human(p), "patch", "apps", "deployments", p.ns, app, query="fieldManager=kubectl-client-side-apply&fieldValidation=Strict", req=body)

    def _q_configmap(self, p: _Pod) -> _Req:
        app = p.fmt["app"]
        name = app + "-config"
        uid = self._uid("configmaps", p.ns, name)
        body = {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": p.ns,
                "uid": uid,
                "resourceVersion": str(self._rv - 1),
                "creationTimestamp": self._sec(self._start - 30 * 3_600_000_000),
                "labels": {"app": app},
            },
            "data": {"LOG_LEVEL": self._choice(("info", "debug")), "config.yaml": self._config_yaml[p.app]},
        }
        r = _Req(self._actor("argocd-application-controller", p), "update", "", "configmaps", p.ns, name, req=body)
        r.uid = uid
        return r

    def _q_secret(self, p: _Pod) -> _Req:
        """A Helm release Secret or an Opaque one: either way, data the agent must treat as secret."""
        rnd, rng, app = self._rand, self._rng, p.fmt["app"]
        if rnd() < 0.5:
            n = 2 + int(rnd() * 40)
            name, stype = f"sh.helm.release.v1.{app}.v{n}", "helm.sh/release.v1"
            labels = {"name": app, "owner": "helm", "status": "deployed", "version": str(n)}
            data = {"release": base64.b64encode(rng.randbytes(2_000 + int(rnd() * 4_000))).decode()}
        else:
            name, stype, labels = app + "-credentials", "Opaque", {"app": app}
            data = {"password": base64.b64encode(rng.randbytes(24)).decode(), "username": base64.b64encode(app.encode()).decode()}
        body = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": p.ns, "creationTimestamp": None, "labels": labels},
            "data": data,
            "type": stype,
        }
        return _Req(self._human(p, ci=True), "create", "", "secrets", p.ns, name, req=body)

    def _q_kubectl(self, p: _Pod) -> _Req:
        """A json-patch (the body is a JSON array) or a delete with DeleteOptions."""
        if self._rand() < 0.4:
            body: object = [
                {"op": "add", "path": "/metadata/labels/debug", "value": "true"},
                {"op": "add", "path": "/metadata/annotations/owner", "value": "team-" + p.ns},
            ]
            return _Req(self._human(p), "patch", "", "pods", p.ns, p.name, req=body)
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        return _Req(self._human(p), "delete", "", "pods", p.ns, p.name, req=body)

    # ---- RequestResponse level: objects with managedFields -------------------------------------------------------
    def _render(self, p: _Pod, tpl: str) -> bytes:
        created = self._now - (3_600 + int(self._rand() * 20 * 86_400)) * 1_000_000
        return self._tpl[p.app][tpl].render(
            p.vals | {"rv": str(self._rv).encode(), "ts": self._sec(created).encode(), "age": f"{(self._now - created) // 86_400_000_000}d".encode()}
        )

    def _rr_pod_create(self, p: _Pod) -> _Req:
        r = self._q_pod_create(p)
        r.resp = msgspec.Raw(self._render(p, "pod"))
        return r

    def _rr_deployment(self, p: _Pod) -> _Req:
        r = _Req(
            self._actor("deployment-controller", p),
            "update",
            "apps",
            "deployments",
            p.ns,
            p.fmt["app"],
            "status",
            req=msgspec.Raw(self._render(p, "deploy")),
            resp=msgspec.Raw(self._render(p, "deploy")),
        )
        r.uid = p.fmt["duid"]
        return r

    def _rr_get(self, p: _Pod) -> _Req:
        return _Req(self._human(p), "get", "apps", "deployments", p.ns, p.fmt["app"], resp=msgspec.Raw(self._render(p, "deploy")))

    def _rr_list(self, p: _Pod, kind: str = "list", pods: list[_Pod] | None = None) -> _Req:
        """A PodList (or, for ``kind="table"``, the Table kubectl asks for) of the pods in ``p``'s namespace."""
        items = b",".join(self._render(q, "row" if kind == "table" else "item") for q in pods or self._by_ns[p.ns])
        resp = msgspec.Raw(self._tpl[p.app][kind].render({"rv": str(self._rv).encode(), "items": b"[" + items + b"]"}))
        if pods:
            return _Req(self._actor("prometheus", p), "list", "", "pods", query="limit=500&resourceVersion=0", resp=resp)
        return _Req(self._human(p), "list", "", "pods", p.ns, query="limit=500", resp=resp)

    def _rr_table(self, p: _Pod) -> _Req:
        return self._rr_list(p, "table")

    def _rr_configmap(self, p: _Pod) -> _Req:
        r = self._q_configmap(p)
        cm, r.verb, r.actor, r.uid = r.req, "patch", self._human(p), ""
        r.req = {"data": {"LOG_LEVEL": "debug"}}
        r.resp = cm | {
            "metadata": cm["metadata"]
            | {
                "managedFields": [
                    managed_field("argocd-controller", "Apply", "v1", fields_set("data>config.yaml", "metadata>labels>app"))
                    | {"time": cm["metadata"]["creationTimestamp"]},
                    managed_field("kubectl-patch", "Update", "v1", fields_set("data>LOG_LEVEL")) | {"time": self._sec(self._now)},
                ]
            },
            "data": cm["data"] | {"LOG_LEVEL": "debug"},
        }
        return r

    def _big(self, p: _Pod) -> tuple[str, _Req]:
        """One event of about ``mix.big_event_bytes``: a huge ConfigMap (Request) or PodList (RequestResponse)."""
        size = self.mix.big_event_bytes
        if self._rand() < 0.5:
            panel = (
                '{{"id":{},"type":"timeseries","title":"{} latency","targets":[{{"expr":'
                '"histogram_quantile(0.{}, '
                'sum(rate(apiserver_request_duration_seconds_bucket{{verb=\\"{}\\"}}[5m])) by (le))"}}]}}'
            )
            parts: list[Any] = []
            total = 0
            while total < size:
                parts.append(panel.format(len(parts), self._choice(_CONTROLLERS), 50 + int(self._rand() * 49), self._choice(tuple(_CODES))))
                total += len(parts[-1]) + 1
            body = {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {
                    "name": "grafana-dashboards-apiserver",
                    "namespace": "monitoring",
                    "creationTimestamp": None,
                    "labels": {"grafana_dashboard": "1"},
                },
                "data": {"apiserver.json": '{"panels":[' + ",".join(parts) + "]}"},
            }
            return "Request", _Req(self._human(p, ci=True), "create", "", "configmaps", "monitoring", "grafana-dashboards-apiserver", req=body)
        one = len(self._render(p, "item")) + 1
        return "RequestResponse", self._rr_list(p, pods=[self._choice(self._pods) for _ in range(max(1, size // one))])

    # ---- the cluster ---------------------------------------------------------------------------------------------
    def _build_cluster(self, rng: random.Random) -> None:
        """Nodes, pods, the identities that talk to the apiserver, and the encoded object templates."""

        def sfx(n: int) -> str:
            return "".join(rng.choice(_ALPHA) for _ in range(n))

        def sa(ns: str, name: str, pod: str = "", node: str = "", pod_uid: str = "") -> dict[str, Any]:
            user: dict[str, Any] = {
                "username": f"system:serviceaccount:{ns}:{name}",
                "uid": _uuid(rng.getrandbits(128)),
                "groups": ["system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"],
            }
            if pod:  # a pod's bound token carries where it came from
                user["extra"] = {
                    f"authentication.kubernetes.io/{k}": [v]
                    for k, v in (
                        ("credential-id", "JTI=" + _uuid(rng.getrandbits(128))),
                        ("node-name", node),
                        ("node-uid", self._uid("nodes", "", node)),
                        ("pod-name", pod),
                        ("pod-uid", pod_uid or _uuid(rng.getrandbits(128))),
                    )
                }
            return user

        def actor(key: str, user: dict[str, Any], ip: str, ua: str, binding: str, role: str, subject: str) -> None:
            self._actors.setdefault(key, []).append((user, None, [ip], ua, _RBAC.format(binding, role, subject)))

        self._actors: dict[str, list[tuple[Any, ...]]] = {}
        self._pods: list[_Pod] = []
        self._by_ns: dict[str, list[_Pod]] = {}
        self._tpl: list[dict[str, _Tpl]] = []
        self._applied: list[str] = []
        self._config_yaml: list[str] = []
        nodes = []
        for i in range(12):
            b = rng.randrange(2, 254)
            name, ip = f"ip-10-0-{i + 1}-{b}.eu-west-1.compute.internal", f"10.0.{i + 1}.{b}"
            nodes.append((name, ip))
            self._actors.setdefault("kubelet", []).append(
                ({"username": "system:node:" + name, "groups": ["system:nodes", "system:authenticated"]}, None, [ip], f"kubelet/{_KV} {_OS}", "")
            )  # Node authorizer
            actor(
                "kube-proxy",
                sa("kube-system", "kube-proxy", "kube-proxy-" + sfx(5), name),
                ip,
                f"kube-proxy/{_KV} {_OS}",
                "kubeadm:node-proxier",
                "system:node-proxier",
                'ServiceAccount "kube-proxy/kube-system"',
            )
        for key, who in (("kcm", "kube-controller-manager"), ("sched", "kube-scheduler")):
            actor(
                key,
                {"username": "system:" + who, "groups": ["system:authenticated"]},
                "172.16.0.10",
                f"{who}/{_KV} {_OS}/leader-election",
                "system:" + who,
                "system:" + who,
                f'User "system:{who}"',
            )
        for c in _CONTROLLERS:
            actor(
                c,
                sa("kube-system", c),
                "172.16.0.10",
                f"kube-controller-manager/{_KV} {_OS}/system:serviceaccount:kube-system:{c}",
                "system:controller:" + c,
                "system:controller:" + c,
                f'ServiceAccount "{c}/kube-system"',
            )
        actor(
            "probe",
            {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
            "172.16.0.10",
            "kube-probe/1.31",
            "system:public-info-viewer",
            "system:public-info-viewer",
            'Group "system:unauthenticated"',
        )
        dev = 'RBAC: allowed by RoleBinding "developers/{ns}" of ClusterRole "edit" to Group "developers"'
        self._humans = [
            (
                {"username": "kubernetes-admin", "groups": ["system:authenticated"]},
                f"kubectl/{_KV} {_OS}",
                _RBAC.format("cluster-admin", "cluster-admin", 'User "kubernetes-admin"'),
            )
        ] + [
            ({"username": f"{n}@example.com", "groups": ["developers", "system:authenticated"]}, f"kubectl/{v} ({os}) kubernetes/{git}", dev)
            for n, v, os, git in (("alice", _KV, "darwin/arm64", "9edcffc"), ("bob", "v1.30.4", "linux/amd64", "a51b3b7"))
        ]
        self._ci = (sa("ci", "deployer"), "Helm/3.16.2", _RBAC.format("ci-deployer", "cluster-admin", 'ServiceAccount "deployer/ci"'))
        for a, (app, image, port, ns, replicas) in enumerate(_APPS):
            rs, rsuid, duid, eps = f"{app}-{sfx(10)}", _uuid(rng.getrandbits(128)), _uuid(rng.getrandbits(128)), sfx(5)
            for _ in range(replicas):
                node = rng.randrange(len(nodes))
                vals = {
                    "name": f"{rs}-{sfx(5)}",
                    "ns": ns,
                    "uid": _uuid(rng.getrandbits(128)),
                    "rs": rs,
                    "rsuid": rsuid,
                    "hash": rs.rsplit("-", 1)[1],
                    "node": nodes[node][0],
                    "hostip": nodes[node][1],
                    "podip": f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    "cid": f"{rng.getrandbits(256):064x}",
                    "duid": duid,
                    "sfx": eps,
                }
                pod = _Pod(a, node, vals)
                pod.fmt |= {"uid": vals["uid"], "cid": vals["cid"], "duid": duid}
                self._pods.append(pod)
                self._by_ns.setdefault(ns, []).append(pod)
                if app in _POD_ACTORS:
                    actor(
                        app,
                        sa(ns, app, pod.name, vals["node"], vals["uid"]),
                        vals["podip"],
                        f"{app}/{image.rsplit(':', 1)[1]} {_OS}",
                        app,
                        app,
                        f'ServiceAccount "{app}/{ns}"',
                    )
            full = pod_object(app, image, port, full=True)
            self._tpl.append(
                {
                    "pod_req": _Tpl(pod_object(app, image, port, full=False)),
                    "pod": _Tpl(full),
                    "item": _Tpl(pod_object(app, image, port, full=True, kind=False)),
                    "deploy": _Tpl(deployment_object(app, image, port, replicas)),
                    "row": _Tpl(table_row(full["metadata"])),
                    "table": _Tpl(POD_TABLE),
                    "list": _Tpl({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "@@rv@@"}, "items": "##items##"}),
                }
            )
            self._applied.append(
                msgspec.json.encode(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"annotations": {}, "name": app, "namespace": ns},
                        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": image, "name": app}]}}},
                    }
                ).decode()
                + "\n"
            )
            self._config_yaml.append(
                f"server:\n  port: {port}\n  name: {app}\nmetrics:\n  enabled: true\nupstreams:\n"
                + "".join(f"  - name: {u}\n    url: http://{u}.{ns}.svc:8080\n    timeout: 5s\n" for u in ("orders", "inventory", "users", "pricing"))
            )

    # ---- helpers -------------------------------------------------------------------------------------------------
    def _actor(self, name: str, p: _Pod) -> tuple[Any, ...]:
        if name == "human":
            return self._human(p)
        pool = self._actors[name]
        return pool[p.node] if name in ("kubelet", "kube-proxy") else self._choice(pool)

    def _human(self, p: _Pod, *, ci: bool = False) -> tuple[Any, ...]:
        """A person (kubectl) or the CI deployer (Helm): private or public source, people sometimes impersonating."""
        rnd, mix = self._rand, self.mix
        user, ua, reason = self._ci if ci else self._choice(self._humans)
        imp = None
        if rnd() < mix.public_ip_rate:
            ips = [f"{self._choice(_PUBLIC)}{1 + int(rnd() * 254)}"]
            if rnd() < 0.3:  # through a load balancer: X-Forwarded-For first, then the peer
                ips.append(f"10.0.0.{2 + int(rnd() * 28)}")
        else:
            ips = [f"10.8.{int(rnd() * 4)}.{2 + int(rnd() * 253)}"]
        if not ci and user["username"] != "kubernetes-admin" and rnd() < mix.impersonation_rate:
            imp, user = {"username": user["username"], "groups": user["groups"]}, self._humans[0][0]
        return user, imp, ips, ua, reason

    def _choice(self, seq: tuple[Any, ...] | list[Any]) -> Any:
        return seq[int(self._rand() * len(seq))]

    def _pick(self, table: tuple[list[float], list[Any]]) -> Any:
        cum, items = table
        return items[bisect.bisect_right(cum, self._rand() * cum[-1])]

    def _uid(self, *key: str) -> str:
        """A stable uid for a named object, drawn when the object is first seen."""
        uid = self._uids.get(key)
        if uid is None:
            uid = self._uids[key] = _uuid(self._rng.getrandbits(128))
        return uid

    def _ts(self, us: int) -> str:
        """RFC 3339 with microseconds, as the apiserver writes MicroTime."""
        s, frac = divmod(us, 1_000_000)
        if s != self._ts_cache[0]:
            self._ts_cache = (s, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)))
        return f"{self._ts_cache[1]}.{frac:06d}Z"

    @staticmethod
    def _sec(us: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))
