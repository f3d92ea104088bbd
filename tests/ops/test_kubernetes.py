"""packaging/kubernetes: every manifest validated offline against the Kubernetes JSON schemas that the
kubernetes-validate package ships (strict: unknown fields are errors), for the oldest and newest
Kubernetes versions it knows; then what the schemas cannot see: references between the objects,
the DaemonSet's security and scheduling, and the agent config and policy in the ConfigMap, loaded
by the agent's own loaders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

import kube_audit_shipper
from kube_audit_shipper.config import load as load_config
from kube_audit_shipper.process.policy.load import load_policy

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "packaging" / "kubernetes"
NAMESPACE = "kube-audit-shipper"
# Kubernetes versions validated against: the oldest still in wide use that the package has, and its newest.
VERSIONS = [v for v in ("1.28.0",) if v in all_versions()] + [all_versions()[-1]]


def manifests() -> dict[str, dict[str, Any]]:
    """kind/name → object, from every YAML file but kustomization.yaml."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            key = f"{doc['kind']}/{doc['metadata']['name']}"
            assert key not in out, f"{key} defined twice"
            doc["__file__"] = path.name
            out[key] = doc
    return out


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__file__"}


def _pod(m: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return m["DaemonSet/kube-audit-shipper"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _container(m: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = _pod(m)["containers"]
    return c  # type: ignore[no-any-return]


def test_the_expected_objects_exist() -> None:
    assert set(manifests()) == {
        "Namespace/kube-audit-shipper",
        "ServiceAccount/kube-audit-shipper",
        "PriorityClass/kube-audit-shipper",
        "ConfigMap/kube-audit-shipper",
        "Secret/kube-audit-shipper-credentials",
        "DaemonSet/kube-audit-shipper",
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    for key, doc in manifests().items():
        try:
            kubernetes_validate.validate(_plain(doc), version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['__file__']}: {key} against Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")


def test_the_schema_check_rejects_mistakes() -> None:
    """The validation above is not a YAML parse: a misspelled field, a wrong type and a missing
    required field are all rejected."""
    ds = _plain(manifests()["DaemonSet/kube-audit-shipper"])
    version = VERSIONS[-1]
    typo = copy.deepcopy(ds)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    wrong_type = copy.deepcopy(ds)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9880"
    missing = copy.deepcopy(ds)
    del missing["spec"]["selector"]
    for bad in (typo, wrong_type, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, version, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files - {"secret.example.yaml"}
    assert len(k["resources"]) == len(set(k["resources"]))


def test_references_between_objects_resolve() -> None:
    m = manifests()
    for key, doc in m.items():
        if doc["kind"] not in ("Namespace", "PriorityClass"):
            assert doc["metadata"]["namespace"] == NAMESPACE, key
    ds = m["DaemonSet/kube-audit-shipper"]
    pod = _pod(m)
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert f"ServiceAccount/{pod['serviceAccountName']}" in m
    assert f"PriorityClass/{pod['priorityClassName']}" in m
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert f"ConfigMap/{volumes['config']['configMap']['name']}" in m
    secret = m[f"Secret/{volumes['credentials']['secret']['secretName']}"]
    c = _container(m)
    assert {vm["name"] for vm in c["volumeMounts"]} == set(volumes)
    # the config's ${file:} secret paths are keys of the Secret, under the Secret's mount
    mounts = {vm["name"]: vm["mountPath"] for vm in c["volumeMounts"]}
    config_text = m["ConfigMap/kube-audit-shipper"]["data"]["config.yaml"]
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for key in secret_keys:
        assert f"${{file:{mounts['credentials']}/{key}}}" in config_text


def test_daemonset_runs_on_control_plane_nodes_only() -> None:
    pod = _pod(manifests())
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    tolerated = {(t["key"], t.get("effect")) for t in pod["tolerations"] if t["operator"] == "Exists"}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated
    assert ("node-role.kubernetes.io/master", "NoSchedule") in tolerated


def test_daemonset_security() -> None:
    m = manifests()
    pod, c = _pod(m), _container(m)
    assert pod["automountServiceAccountToken"] is False
    assert m["ServiceAccount/kube-audit-shipper"]["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}  # uid 0 without a single capability: see daemonset.yaml
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {vm["name"]: vm for vm in c["volumeMounts"]}
    assert volumes["audit-log"]["hostPath"] == {"path": "/var/log/kubernetes/audit", "type": "Directory"}
    assert mounts["audit-log"]["readOnly"] is True
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/kube-audit-shipper"
    assert mounts["state"]["mountPath"] == "/var/lib/kube-audit-shipper" and not mounts["state"].get("readOnly")
    assert mounts["config"]["readOnly"] is True and mounts["credentials"]["readOnly"] is True
    assert volumes["credentials"]["secret"]["defaultMode"] == 0o400
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    writable = {volumes[n]["hostPath"]["path"] for n, vm in mounts.items() if "hostPath" in volumes[n] and not vm.get("readOnly")}
    assert writable == {"/var/lib/kube-audit-shipper", "/var/log/kube-audit-shipper"} and writable < host_paths
    ns = m["Namespace/kube-audit-shipper"]["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath needs it


def test_probes_resources_and_ports_match_the_config(tmp_path: Path) -> None:
    m = manifests()
    pod, c = _pod(m), _container(m)
    cfg = _load_configmap_config(tmp_path)
    addr = cfg.metrics.address()
    assert addr is not None and addr[0] == "0.0.0.0"  # reachable at the pod IP by the kubelet and Prometheus
    (port,) = c["ports"]
    assert port["containerPort"] == addr[1] and port["name"] == "metrics"
    assert pod["containers"][0]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    ann = m["DaemonSet/kube-audit-shipper"]["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(addr[1]) and ann["prometheus.io/path"] == "/metrics"
    res = c["resources"]
    assert set(res) == {"requests", "limits"} and {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
    limit_mi = int(res["limits"]["memory"].removesuffix("Mi"))
    assert limit_mi * (1 << 20) >= 4 * cfg.memory_limit_bytes
    assert pod["terminationGracePeriodSeconds"] > cfg.shutdown_timeout_s
    assert c["args"][-2:] == ["-c", "/etc/kube-audit-shipper/config.yaml"]
    assert {vm["mountPath"] for vm in c["volumeMounts"] if vm["name"] == "config"} == {"/etc/kube-audit-shipper"}
    assert c["env"][0] == {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}


def test_image_tag_is_the_agent_version() -> None:
    c = _container(manifests())
    assert c["image"] == f"kube-audit-shipper:{kube_audit_shipper.__version__}"


def _load_configmap_config(tmp_path: Path) -> Any:
    """The ConfigMap's config.yaml through the agent's own loader, with the mounts' paths moved
    under tmp_path (policy file, Secret key) and NODE_NAME set as the downward API sets it."""
    m = manifests()
    data = m["ConfigMap/kube-audit-shipper"]["data"]
    secret = m["Secret/kube-audit-shipper-credentials"]["stringData"]
    mounts = {vm["name"]: vm["mountPath"] for vm in _container(m)["volumeMounts"]}
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "secrets").mkdir(exist_ok=True)
    for k, v in data.items():
        (tmp_path / "config" / k).write_text(v)
    for k, v in secret.items():
        (tmp_path / "secrets" / k).write_text(v)
    text = data["config.yaml"].replace(mounts["credentials"], str(tmp_path / "secrets")).replace(mounts["config"], str(tmp_path / "config"))
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(text)
    return load_config(cfg_file, env={"NODE_NAME": "cp-1"})


def test_configmap_config_and_policy_load_with_the_agents_loaders(tmp_path: Path) -> None:
    cfg = _load_configmap_config(tmp_path)
    assert cfg.node == "cp-1"
    assert cfg.state_dir == "/var/lib/kube-audit-shipper"
    assert cfg.input.paths == ["/var/log/kubernetes/audit/audit.log"]
    assert (
        cfg.enrich.redact.mode == "hash" and cfg.enrich.redact.hash_key == manifests()["Secret/kube-audit-shipper-credentials"]["stringData"]["redact-hash-key"]
    )
    assert cfg.policy.file == str(tmp_path / "config" / "audit-policy.yaml")
    policy, warnings = load_policy(cfg.policy.file)
    assert policy.policy.rules and not warnings
    # the file sink writes where the archive hostPath is mounted
    c = _container(manifests())
    archive = next(vm["mountPath"] for vm in c["volumeMounts"] if vm["name"] == "archive")
    assert [(type(s).__name__, s.path) for s in cfg.sinks] == [("FileSinkConfig", archive)]


def test_configmap_policy_is_the_repositorys_sample_policy() -> None:
    cm = manifests()["ConfigMap/kube-audit-shipper"]["data"]["audit-policy.yaml"]
    assert yaml.safe_load(cm) == yaml.safe_load((REPO / "config" / "policy" / "audit-policy.yaml").read_text())
