"""Benchmark: policy evaluation + trimming + redaction + enrichment alone, on a realistic event mix.

Run: `python -m tests.bench.bench_policy [--events N] [--seconds S]` (or `python tests/bench/bench_policy.py`).
Prints events/s and MB/s (of input) for:

* naive: `msgspec.json.decode(line)` + `msgspec.json.encode(obj)` per line (the baseline the agent must beat);
* transform: a GKE/ACK-style policy (get/list/watch at Request, writes at RequestResponse, secrets and configmaps
  at Metadata, noisy system reads dropped) with default enrichment, without and with omitManagedFields;
* each again followed by zstd compression of the output (level 3, 1 MiB chunks), as a sink would do.

The mix, by count: 60% small Metadata-level events (reads, watches, discovery, health checks), 25% writes recorded at
Request with a 1-4 KiB body, 15% RequestResponse writes and lists whose objects carry managedFields (10-60 KiB).
A last section repeats naive vs transform on small Metadata events alone (the worst case for the transform:
nothing to trim, everything to add). It asserts nothing about timings; it only prints them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec
import zstandard

from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.policy.load import parse_policy
from kube_audit_shipper.process.policy.match import CompiledPolicy, compile_policy
from kube_audit_shipper.process.transform import Transform, build_transform

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
  resources: [{group: "", resources: ["endpoints", "services", "services/status"]}]
- level: None
  userGroups: ["system:nodes"]
  verbs: ["get"]
  resources: [{group: "", resources: ["nodes", "nodes/status"]}]
- level: None
  nonResourceURLs: ["/healthz*", "/version", "/readyz*", "/livez*"]
- level: None
  resources: [{group: "", resources: ["events"]}]
- level: Metadata
  resources:
  - {group: "", resources: ["secrets", "configmaps", "serviceaccounts/token"]}
  - {group: authentication.k8s.io, resources: ["tokenreviews"]}
- level: Request
  verbs: ["get", "list", "watch"]
  resources: [{group: ""}, {group: "apps"}, {group: "batch"}, {group: "coordination.k8s.io"}]
- level: RequestResponse
  resources: [{group: ""}, {group: "apps"}, {group: "batch"}, {group: "rbac.authorization.k8s.io"}]
- level: Metadata
"""

NAMESPACES = ["default", "kube-system", "prod", "staging", "monitoring"]
SERVICE_ACCOUNTS = ["coredns", "kube-proxy", "deployment-controller", "replicaset-controller", "argocd"]


def managed_fields(rng: random.Random, entries: int) -> list[dict]:
    return [
        {
            "manager": rng.choice(["kubectl-client-side-apply", "kube-controller-manager", "helm", "kubelet"]),
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-05-01T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {f"f:label-{i}": {} for i in range(rng.randint(5, 20))}},
                "f:spec": {"f:containers": {f'k:{{"name":"c{i}"}}': {".": {}, "f:image": {}} for i in range(8)}},
                "f:status": {"f:conditions": {f'k:{{"type":"T{i}"}}': {".": {}, "f:status": {}} for i in range(10)}},
            },
        }
        for _ in range(entries)
    ]


def pod(rng: random.Random, name: str, namespace: str, with_managed: bool) -> dict:
    metadata: dict = {
        "name": name,
        "namespace": namespace,
        "uid": f"{rng.getrandbits(64):016x}",
        "resourceVersion": str(rng.randint(1, 10**7)),
        "labels": {f"label-{i}": f"value-{i}" for i in range(rng.randint(3, 10))},
        "annotations": {"kubernetes.io/psp": "restricted", "prometheus.io/scrape": "true"},
    }
    if with_managed:
        metadata["managedFields"] = managed_fields(rng, rng.randint(3, 12))
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "containers": [
                {
                    "name": f"c{i}",
                    "image": f"registry.example.com/team/app-{i}:1.{i}.0",
                    "env": [{"name": f"ENV_{j}", "value": "x" * rng.randint(5, 40)} for j in range(rng.randint(2, 10))],
                    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                }
                for i in range(rng.randint(1, 3))
            ],
            "nodeName": f"node-{rng.randint(1, 50)}",
        },
        "status": {"phase": "Running", "conditions": [{"type": f"T{i}", "status": "True"} for i in range(4)]},
    }


def base_event(rng: random.Random, level: str, verb: str, uri: str, user: dict, object_ref: dict | None) -> dict:
    minute, second = rng.randint(0, 59), rng.randint(0, 58)
    received = f"2024-05-01T10:{minute:02d}:{second:02d}.{rng.randint(0, 499999):06d}Z"
    completed = f"2024-05-01T10:{minute:02d}:{second:02d}.{rng.randint(500000, 999999):06d}Z"
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": f"{rng.getrandbits(128):032x}",
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": verb,
        "user": user,
        "sourceIPs": [rng.choice(["10.0.3.17", "172.20.1.15", "203.0.113.50", "100.64.1.9"])],
        "userAgent": "kube-controller-manager/v1.30.1 (linux/amd64) kubernetes/abc1234/system:serviceaccount",
    }
    if object_ref is not None:
        event["objectRef"] = object_ref
    event["responseStatus"] = {"metadata": {}, "code": rng.choice([200, 200, 200, 201, 403, 404])}
    event["requestReceivedTimestamp"] = received
    event["stageTimestamp"] = completed
    event["annotations"] = {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "system:controller" of ClusterRole "x"',
    }
    return event


def service_account(rng: random.Random) -> dict:
    name = rng.choice(SERVICE_ACCOUNTS)
    return {
        "username": f"system:serviceaccount:kube-system:{name}",
        "uid": f"{rng.getrandbits(64):016x}",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
    }


def small_event(rng: random.Random) -> dict:
    choice = rng.random()
    ns = rng.choice(NAMESPACES)
    if choice < 0.15:
        return base_event(
            rng,
            "Metadata",
            "get",
            rng.choice(["/healthz", "/readyz?verbose", "/version"]),
            {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
            None,
        )
    if choice < 0.3:
        node = f"node-{rng.randint(1, 50)}"
        return base_event(
            rng,
            "Metadata",
            "get",
            f"/api/v1/nodes/{node}",
            {"username": f"system:node:{node}", "groups": ["system:nodes", "system:authenticated"]},
            {"resource": "nodes", "name": node, "apiVersion": "v1"},
        )
    resource = rng.choice(["pods", "configmaps", "endpoints", "services", "secrets", "leases"])
    group = "coordination.k8s.io" if resource == "leases" else ""
    prefix = "/apis/coordination.k8s.io/v1" if group else "/api/v1"
    verb = rng.choice(["get", "list", "watch"])
    name = f"{resource[:-1]}-{rng.randint(1, 500)}"
    uri = f"{prefix}/namespaces/{ns}/{resource}" + (f"/{name}" if verb == "get" else "?watch=true" if verb == "watch" else "")
    ref = {"resource": resource, "namespace": ns, "apiVersion": "v1"}
    if group:
        ref["apiGroup"] = group
    if verb == "get":
        ref["name"] = name
    return base_event(rng, "Metadata", verb, uri, service_account(rng), ref)


def request_event(rng: random.Random) -> dict:
    ns = rng.choice(NAMESPACES)
    name = f"web-{rng.randint(1, 500)}"
    kind = rng.choice(["configmaps", "deployments", "pods"])
    ref = {"resource": kind, "namespace": ns, "name": name, "apiVersion": "v1"}
    prefix = "/api/v1"
    if kind == "deployments":
        ref["apiGroup"], prefix = "apps", "/apis/apps/v1"
    event = base_event(
        rng,
        "Request",
        rng.choice(["update", "patch", "create"]),
        f"{prefix}/namespaces/{ns}/{kind}/{name}",
        service_account(rng),
        ref,
    )
    body = pod(rng, name, ns, with_managed=False)
    event["requestObject"] = body
    return event


def request_response_event(rng: random.Random) -> dict:
    ns = rng.choice(NAMESPACES)
    if rng.random() < 0.3:
        items = [pod(rng, f"web-{i}", ns, with_managed=True) for i in range(rng.randint(2, 4))]
        event = base_event(
            rng,
            "RequestResponse",
            "list",
            f"/api/v1/namespaces/{ns}/pods",
            service_account(rng),
            {"resource": "pods", "namespace": ns, "apiVersion": "v1"},
        )
        event["responseObject"] = {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }
        return event
    name = f"web-{rng.randint(1, 500)}"
    event = base_event(
        rng,
        "RequestResponse",
        "update",
        f"/api/v1/namespaces/{ns}/pods/{name}",
        {"username": "alice@example.com", "groups": ["devs", "system:authenticated"]},
        {"resource": "pods", "namespace": ns, "name": name, "apiVersion": "v1"},
    )
    event["requestObject"] = pod(rng, name, ns, with_managed=True)
    event["responseObject"] = pod(rng, name, ns, with_managed=True)
    return event


def make_mix(count: int, seed: int = 7, *, small_only: bool = False) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        draw = 0.0 if small_only else rng.random()
        maker = small_event if draw < 0.60 else request_event if draw < 0.85 else request_response_event
        lines.append(json.dumps(maker(rng), separators=(",", ":")).encode())
    return lines


def measure(name: str, lines: list[bytes], run: Callable[[list[bytes]], int], seconds: float) -> None:
    total_bytes = sum(len(line) for line in lines)
    run(lines)  # warm-up (decision cache, IP cache)
    rounds = 0
    out_bytes = 0
    start = time.perf_counter()
    while True:
        out_bytes = run(lines)
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    events = rounds * len(lines)
    print(f"{name:<58} {events / elapsed:>10,.0f} events/s {rounds * total_bytes / elapsed / 1e6:>9.1f} MB/s in   out/in {out_bytes / total_bytes:6.1%}")


def naive(lines: list[bytes]) -> int:
    decode, encode = msgspec.json.decode, msgspec.json.encode
    return sum(len(encode(decode(line))) for line in lines)


def compressed(step: Callable[[bytes], bytes | None]) -> Callable[[list[bytes]], int]:
    compressor = zstandard.ZstdCompressor(level=3)

    def run(lines: list[bytes]) -> int:
        chunk: list[bytes] = []
        size = 0
        out = 0
        for line in lines:
            result = step(line)
            if result is not None:
                chunk.append(result)
                size += len(result) + 1
                if size >= 1 << 20:
                    out += len(compressor.compress(b"\n".join(chunk)))
                    chunk, size = [], 0
        if chunk:
            out += len(compressor.compress(b"\n".join(chunk)))
        return out

    return run


def built(policy: CompiledPolicy, enrich: EnrichConfig) -> Transform:
    """The transform the pipeline would build for this policy and enrichment."""
    transform = build_transform(policy, enrich, node_name="node-1")
    assert transform is not None
    return transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    lines = make_mix(args.events)
    total = sum(len(line) for line in lines)
    print(f"mix: {len(lines)} events, {total / 1e6:.1f} MB, mean {total / len(lines):.0f} B/event")
    plain, _ = parse_policy(POLICY)
    with_omf, _ = parse_policy(POLICY.replace("omitStages: [RequestReceived]", "omitStages: [RequestReceived]\nomitManagedFields: true"))
    assert with_omf.omit_managed_fields
    enrich = EnrichConfig(static_fields={"cluster_id": "c-bench", "region": "eu-1"})
    transforms = {
        "transform (policy, enrichment)": built(compile_policy(plain), enrich),
        "transform (policy+omitManagedFields, enrichment)": built(compile_policy(with_omf), enrich),
    }
    policy_only = built(compile_policy(plain), EnrichConfig(enabled=False))

    def plain_run(transform: Transform) -> Callable[[list[bytes]], int]:
        apply = transform.apply
        return lambda batch: sum(len(out) for out in map(apply, batch) if out is not None)

    measure("naive msgspec decode+encode", lines, naive, args.seconds)
    for name, transform in transforms.items():
        measure(name, lines, plain_run(transform), args.seconds)
    decode, encode = msgspec.json.decode, msgspec.json.encode
    measure("naive decode+encode + zstd", lines, compressed(lambda line: encode(decode(line))), args.seconds)
    for name, transform in transforms.items():
        measure(name.replace("transform", "transform + zstd"), lines, compressed(transform.apply), args.seconds)
    small = make_mix(args.events, small_only=True)
    print(f"\nsmall Metadata events only: mean {sum(map(len, small)) / len(small):.0f} B/event")
    measure("naive msgspec decode+encode", small, naive, args.seconds)
    measure("transform (policy, enrichment)", small, plain_run(transforms["transform (policy, enrichment)"]), args.seconds)
    measure("transform (policy only, no enrichment)", small, plain_run(policy_only), args.seconds)


if __name__ == "__main__":
    main()
