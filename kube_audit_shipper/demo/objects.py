"""Kubernetes object templates for the demo generator: Pods, Deployments, Table rows, Status bodies.

Each builder returns a plain dict whose per-event values are placeholders (``"@@k@@"`` inside a JSON
string, ``"##k##"`` for a whole value) that `kube_audit_shipper.demo.events` fills in; objects carry
``metadata.managedFields`` as the apiserver stores them, so omitManagedFields has real work to do.
"""

from __future__ import annotations

from typing import Any

POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
CONTAINER_ENV = (
    ("LOG_LEVEL", "info"),
    ("LOG_FORMAT", "json"),
    ("GOMAXPROCS", "2"),
    ("HTTP_PORT", "{port}"),
    ("METRICS_PORT", "9102"),
    ("SERVICE_NAME", "{app}"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.monitoring:4317"),
    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
    ("OTEL_TRACES_SAMPLER_ARG", "0.05"),
    ("DB_HOST", "postgres.{app}.svc.cluster.local"),
    ("DB_NAME", "{app}"),
    ("DB_USER", "{app}"),
    ("REDIS_URL", "redis://redis.checkout.svc.cluster.local:6379/0"),
    ("FEATURE_FLAGS", "new-cart,fast-checkout"),
    ("SHUTDOWN_GRACE_PERIOD", "25s"),
    ("HTTP_READ_TIMEOUT", "15s"),
    ("HTTP_WRITE_TIMEOUT", "15s"),
)
CONTAINER_ENV_FIELDS = (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("NODE_NAME", "spec.nodeName"), ("POD_IP", "status.podIP"))


def fields_set(*paths: str) -> dict[str, Any]:
    """A fieldsV1 set from ">"-separated paths; a nested map gets "." (owned as a whole) unless it is a list."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for seg in path.split(">"):
            node = node.setdefault(seg if seg[:2] == "k:" else "f:" + seg, {})

    def dot(node: dict[str, Any], depth: int) -> dict[str, Any]:
        out = {k: dot(node[k], depth + 1) for k in sorted(node)}  # structured-merge-diff writes keys sorted
        return {".": {}} | out if depth > 1 and out and not any(k[:2] == "k:" for k in out) else out

    return dot(root, 0)


def managed_field(manager: str, op: str, api: str, fset: dict[str, Any], sub: str = "") -> dict[str, Any]:
    entry = {"manager": manager, "operation": op, "apiVersion": api, "time": "@@ts@@", "fieldsType": "FieldsV1", "fieldsV1": fset}
    return entry | {"subresource": sub} if sub else entry


def pod_spec(app: str, image: str, port: int, scheduled: bool) -> dict[str, Any]:
    """The spec of an app's pod: the app container with an Envoy sidecar, as a Helm chart would render it."""
    env: list[dict[str, Any]] = [{"name": n, "value": v.format(app=app, port=port)} for n, v in CONTAINER_ENV]
    env += [{"name": n, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": p}}} for n, p in CONTAINER_ENV_FIELDS]
    env.append({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": app + "-credentials", "key": "password"}}})
    probe = {
        "httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    common = {
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    main = {
        "name": app,
        "image": image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "config", "readOnly": True, "mountPath": "/etc/" + app}],
        "livenessProbe": probe,
        "readinessProbe": probe,
    } | common
    envoy = {
        "name": "envoy",
        "image": "envoyproxy/envoy:v1.32.1",
        "args": ["--config-path", "/etc/envoy/envoy.yaml", "--service-cluster", app, "--log-level", "warn"],
        "ports": [{"name": "admin", "containerPort": 9901, "protocol": "TCP"}],
        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "envoy", "readOnly": True, "mountPath": "/etc/envoy"}],
    } | common
    spec = {
        "volumes": [{"name": v, "configMap": {"name": f"{app}-{v}", "defaultMode": 420}} for v in ("config", "envoy")],
        "containers": [main, envoy],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": app,
        "serviceAccount": app,
    }
    return (
        spec
        | ({"nodeName": "@@node@@"} if scheduled else {})
        | {
            "securityContext": {"fsGroup": 2000},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300} for k in ("not-ready", "unreachable")
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        }
    )


def pod_object(app: str, image: str, port: int, *, full: bool, kind: bool = True) -> dict[str, Any]:
    """A Pod as the ReplicaSet controller sends it (``full=False``) or as stored, with status and managedFields."""
    meta: dict[str, Any] = (
        {"name": "@@name@@", "generateName": "@@rs@@-", "namespace": "@@ns@@"}
        | ({"uid": "@@uid@@", "resourceVersion": "@@rv@@", "creationTimestamp": "@@ts@@"} if full else {"creationTimestamp": None})
        | {"labels": {"app": app, "pod-template-hash": "@@hash@@"}}
    )
    if full:
        meta["annotations"] = {
            "cni.projectcalico.org/containerID": "@@cid@@",
            "cni.projectcalico.org/podIP": "@@podip@@/32",
            "cni.projectcalico.org/podIPs": "@@podip@@/32",
        }
    meta["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "@@rs@@", "uid": "@@rsuid@@", "controller": True, "blockOwnerDeletion": True}
    ]
    obj = ({"kind": "Pod", "apiVersion": "v1"} if kind else {}) | {"metadata": meta, "spec": pod_spec(app, image, port, full)}
    if not full:
        return obj | {"status": {}}
    ctr = [
        f'spec>containers>k:{{"name":"{c}"}}>{f}'
        for c in (app, "envoy")
        for f in ("image", "imagePullPolicy", "ports", "resources", "securityContext", "terminationMessagePath", "volumeMounts")
    ]
    ctr += [
        f'spec>containers>k:{{"name":"{app}"}}>env>k:{{"name":"{n}"}}>{f}'
        for n, f in [(n, f) for n, _ in CONTAINER_ENV for f in ("name", "value")]
        + [(n, f) for n in [*dict(CONTAINER_ENV_FIELDS), "DB_PASSWORD"] for f in ("name", "valueFrom")]
    ]
    meta["managedFields"] = [
        managed_field(
            "kube-controller-manager",
            "Update",
            "v1",
            fields_set(
                "metadata>generateName",
                "metadata>labels>app",
                "metadata>labels>pod-template-hash",
                'metadata>ownerReferences>k:{"uid":"@@rsuid@@"}',
                *ctr,
                *(
                    f"spec>{f}"
                    for f in (
                        "dnsPolicy",
                        "enableServiceLinks",
                        "restartPolicy",
                        "schedulerName",
                        "securityContext",
                        "serviceAccount",
                        "terminationGracePeriodSeconds",
                        "volumes",
                    )
                ),
            ),
        ),
        managed_field(
            "calico", "Update", "v1", fields_set(*(f"metadata>annotations>cni.projectcalico.org/{a}" for a in ("containerID", "podIP", "podIPs"))), "status"
        ),
        managed_field(
            "kubelet",
            "Update",
            "v1",
            fields_set(
                *(f'status>conditions>k:{{"type":"{t}"}}>{f}' for t in POD_CONDITIONS for f in ("lastProbeTime", "lastTransitionTime", "status", "type")),
                *(f"status>{f}" for f in ("containerStatuses", "hostIP", "hostIPs", "phase", "podIP", "podIPs", "startTime")),
            ),
            "status",
        ),
    ]
    return obj | {
        "status": {
            "phase": "Running",
            "conditions": [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": "@@ts@@"} for t in POD_CONDITIONS],
            "hostIP": "@@hostip@@",
            "hostIPs": [{"ip": "@@hostip@@"}],
            "podIP": "@@podip@@",
            "podIPs": [{"ip": "@@podip@@"}],
            "startTime": "@@ts@@",
            "containerStatuses": [
                {
                    "name": c,
                    "state": {"running": {"startedAt": "@@ts@@"}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": i,
                    "imageID": i + "@sha256:@@cid@@",
                    "containerID": "containerd://@@cid@@",
                    "started": True,
                }
                for c, i in ((app, image), ("envoy", "envoyproxy/envoy:v1.32.1"))
            ],
            "qosClass": "Burstable",
        }
    }


def deployment_object(app: str, image: str, port: int, replicas: int) -> dict[str, Any]:
    """A Deployment as stored: spec from Helm, a restart from kubectl, status from the controller."""
    spec = [
        f"spec>{f}"
        for f in ("progressDeadlineSeconds", "replicas", "revisionHistoryLimit", "selector", "strategy>rollingUpdate>maxSurge", "template>metadata>labels>app")
    ]
    spec += [f'spec>template>spec>containers>k:{{"name":"{app}"}}>{f}' for f in ("env", "image", "ports", "resources")]
    status = {
        "observedGeneration": 7,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": t, "status": "True", "lastUpdateTime": "@@ts@@", "lastTransitionTime": "@@ts@@", "reason": r, "message": m}
            for t, r, m in (
                ("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                ("Progressing", "NewReplicaSetAvailable", 'ReplicaSet "@@rs@@" has successfully progressed.'),
            )
        ],
    }
    template = {
        "metadata": {"creationTimestamp": None, "labels": {"app": app}, "annotations": {"kubectl.kubernetes.io/restartedAt": "@@ts@@"}},
        "spec": pod_spec(app, image, port, False),
    }
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": app,
            "namespace": "@@ns@@",
            "uid": "@@duid@@",
            "resourceVersion": "@@rv@@",
            "generation": 7,
            "creationTimestamp": "@@ts@@",
            "labels": {"app": app, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"deployment.kubernetes.io/revision": "7", "meta.helm.sh/release-name": app, "meta.helm.sh/release-namespace": "@@ns@@"},
            "managedFields": [
                managed_field("helm", "Update", "apps/v1", fields_set("metadata>annotations>meta.helm.sh/release-name", "metadata>labels>app", *spec)),
                managed_field("kubectl-rollout", "Update", "apps/v1", fields_set("spec>template>metadata>annotations>kubectl.kubernetes.io/restartedAt")),
                managed_field(
                    "kube-controller-manager",
                    "Update",
                    "apps/v1",
                    fields_set("metadata>annotations>deployment.kubernetes.io/revision", *(f"status>{f}" for f in status)),
                    "status",
                ),
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": template,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": status,
    }


def table_row(pod_meta: dict[str, Any]) -> dict[str, Any]:
    """One row of the ``meta.k8s.io/v1`` Table that ``kubectl get pods`` asks for."""
    return {
        "cells": ["@@name@@", "2/2", "Running", 0, "@@age@@", "@@podip@@", "@@node@@", "<none>", "<none>"],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pod_meta},
    }


POD_TABLE = {
    "kind": "Table",
    "apiVersion": "meta.k8s.io/v1",
    "metadata": {"resourceVersion": "@@rv@@"},
    "columnDefinitions": [
        {
            "name": n,
            "type": t,
            "format": "name" if n == "Name" else "",
            "description": d,
            "priority": int(n in ("IP", "Node", "Nominated Node", "Readiness Gates")),
        }
        for n, t, d in (
            ("Name", "string", "Name must be unique within a namespace."),
            ("Ready", "string", "The aggregate readiness state of this pod."),
            ("Status", "string", "The aggregate status of the containers."),
            ("Restarts", "string", "The number of times the containers restarted."),
            ("Age", "string", "CreationTimestamp is a timestamp."),
            ("IP", "string", "IP address allocated to the pod."),
            ("Node", "string", "NodeName is the node the pod is scheduled on."),
            ("Nominated Node", "string", "nominatedNodeName is set on preemption."),
            ("Readiness Gates", "string", "Readiness gates of the pod."),
        )
    ],
    "rows": "##items##",
}


def status_body(code: int, reason: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason} | ({"details": details} if details else {}) | {"code": code}
