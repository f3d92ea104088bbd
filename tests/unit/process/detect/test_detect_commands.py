"""`detect` over recorded logs (plain and gzip, in order; table and JSON), and `rules list|lint`."""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import msgspec
import pytest
import zstandard

from kube_audit_shipper.commands import detect, rules
from kube_audit_shipper.model import alert_decoder, alert_encoder
from kube_audit_shipper.process.detect.build import build_engine
from kube_audit_shipper.process.detect.config import DetectConfig
from tests.support.corpus import POLICIES, REAL_AUDIT, corpus_lines
from tests.unit.process.detect.audit_events import line, pod

SIGMA = Path(__file__).resolve().parents[4] / "tests" / "data" / "sigma"


def parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def call(module: object, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = module.run(parse(module, argv), out, err)  # type: ignore[attr-defined]
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def logs(tmp_path: Path) -> list[Path]:
    """The real corpus split in two: a rotated, gzipped backup then the active file."""
    lines = list(corpus_lines())
    backup = tmp_path / "audit-2026-11-22T10-00-00.000.log.gz"
    with gzip.open(backup, "wb") as handle:
        handle.write(b"\n".join(lines[:150]) + b"\n")
    active = tmp_path / "audit.log"
    active.write_bytes(b"\n".join(lines[150:]) + b"\n\nnot json\n")
    return [backup, active]


def test_detect_json_is_the_engine_s_alerts_in_file_order(logs: list[Path]):
    code, out, err = call(detect, ["--json", *map(str, logs)])
    assert code == 0 and err == ""
    printed = [alert_decoder.decode(raw) for raw in out.splitlines()]
    engine, _ = build_engine(DetectConfig())
    expected = [alert for raw in corpus_lines() for alert in engine.evaluate_line(raw)]
    assert printed == expected and len(printed) > 50
    assert out.splitlines()[0] == alert_encoder.encode(expected[0]).decode()


def test_detect_reads_the_file_sink_s_zstd_output_as_report_does(logs: list[Path], tmp_path: Path):
    """The README's promise: detect takes the file sink's .ndjson.zst too (it read it as plain text: no alerts)."""
    lines = list(corpus_lines())
    shipped = tmp_path / "archive-1.ndjson.zst"
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    shipped.write_bytes(b"".join(compressor.compress(b"\n".join(part) + b"\n") for part in (lines[:100], lines[100:])))  # one frame per batch
    _, plain, _ = call(detect, ["--json", *map(str, logs)])
    code, out, err = call(detect, ["--json", str(shipped)])
    assert code == 0 and err == "" and out == plain


def test_detect_table(logs: list[Path]):
    code, out, _ = call(detect, [str(path) for path in logs])
    assert code == 0
    assert out.splitlines()[0].split() == ["TIME", "SEVERITY", "RULE", "SUMMARY"]
    assert "exec-into-container" in out and "minikube-user ran `bash`" in out
    assert out.splitlines()[-1].startswith(f"{len(out.splitlines()) - 2} alert(s) from 330 event(s), 1 line(s) not audit events")


def test_detect_with_rule_files_and_without_the_pack(tmp_path: Path):
    log = tmp_path / "audit.log"
    log.write_bytes(line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id") + b"\n")
    code, out, _ = call(detect, ["--json", "--no-builtin", "--rules", str(SIGMA / "kubernetes_audit_exec_into_container.yml"), str(log)])
    assert code == 0
    assert [msgspec.json.decode(raw)["rule"] for raw in out.splitlines()] == ["a1b0ca4e-7835-413e-8471-3ff2b8a66be6"]


def test_detect_exit_codes(tmp_path: Path):
    log = tmp_path / "audit.log"
    log.write_bytes(line("get", "pods", namespace="default", name="w") + b"\n")
    code, out, err = call(detect, [str(tmp_path / "missing.log"), str(log)])
    assert code == 1 and "missing.log" in err and "0 alert(s) from 1 event(s)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {id: x, severity: loud, match: {field: verb, equals: get}}\n")
    code, out, err = call(detect, ["--rules", str(bad), str(log)])
    assert code == 2 and f"{bad}: rules[0].severity: expected one of" in err and out == ""


def test_detect_reads_identity_settings_from_the_agent_config(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path}\nsinks: [{{name: f, type: file, path: {tmp_path}}}]\nenrich: {{derived: {{shared_admin_users: [ops-admin]}}}}\n")
    log = tmp_path / "audit.log"
    reason = 'RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "cluster-admin" to User "carol"'
    log.write_bytes(
        line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id", user=("ops-admin", ["system:masters"]), reason=reason)
        + b"\n"
    )
    code, out, _ = call(detect, ["--json", "-c", str(config), str(log)])
    assert code == 0 and msgspec.json.decode(out)["fields"]["user"] == "carol"


def test_rules_list(tmp_path: Path):
    code, out, _ = call(rules, ["list", "--rules", str(SIGMA / "kubernetes_audit_events_deleted.yml")])
    assert code == 0
    rows = {row.split()[0]: row.split() for row in out.splitlines()[1:-1]}
    assert rows["exec-into-container"][:5] == ["exec-into-container", "high", "yes", "rule", "T1609,execution"]
    assert rows["exec-into-container"][5] == "builtin:sessions.yaml"
    assert rows["public-access-failures"][3] == "aggregate"
    assert rows["3132570d-cab2-4561-9ea6-1743644b2290"][3] == "sigma"
    assert out.splitlines()[-1] == "26 rule(s), 26 enabled"
    code, out, _ = call(rules, ["list", "--json"])
    listed = msgspec.json.decode(out)
    assert len(listed) == 25 and {"id", "severity", "enabled", "kind", "tags", "source", "title"} == set(listed[0])


def test_rules_lint_reports_every_error(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - {id: a, severity: loud, match: {field: verb, equals: get}}\n  - {id: b, severity: low, match: {field: 'objectRef.nope', exists: true}}\n"
    )
    code, out, _ = call(rules, ["lint", "--rules", str(bad)])
    assert code == 2
    assert f"{bad}: rules[0].severity" in out and f"{bad}: rules[1].match.field: objectRef has no field 'nope'" in out
    assert out.startswith("2 error(s):")


def test_rules_lint_reports_sigma_problems_and_passes(tmp_path: Path):
    code, out, _ = call(rules, ["lint", "--rules", str(SIGMA / "kubernetes_audit_hostpath_mount.yml")])
    assert code == 0 and "field 'hostPath' cannot exist in audit events" in out and out.endswith("26 rule(s) valid\n")
    unsupported = tmp_path / "keywords.yml"
    unsupported.write_text("title: k\nid: k-1\nlogsource: {product: kubernetes, service: audit}\ndetection: {kw: [evil], condition: kw}\n")
    code, out, _ = call(rules, ["lint", "--strict", "--rules", str(unsupported)])
    assert code == 1 and "keyword selections" in out


METADATA_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{group: "", resources: [events]}]
  - level: Request
    users: [lint-user]
    resources: [{group: rbac.authorization.k8s.io}]
  - level: Metadata
"""


def test_rules_lint_against_a_policy(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(METADATA_POLICY)
    code, out, _ = call(rules, ["lint", "--policy", str(policy)])
    assert code == 0
    findings = {row.split(":")[0].strip(): row for row in out.splitlines() if row.startswith("  ")}
    assert findings["privileged-pod"] == (
        "  privileged-pod: cannot fire: needs Request (reads @containers[*].securityContext.privileged); rule[2] records it at Metadata: "
        "create/patch/update cronjobs, daemonsets, deployments, jobs, pods, replicasets, replicationcontrollers, statefulsets in default, kube-system "
        "by a person, a service account"
    )
    assert out.startswith(f"against the audit Policy {policy}: 9 of 25 rule(s) starved")
    assert findings["audit-events-deleted"].startswith("  audit-events-deleted: cannot fire: needs Metadata")
    assert "rule[0] records it at None" in findings["audit-events-deleted"]
    # RBAC bodies are recorded for the person but not for service accounts
    assert findings["cluster-admin-binding"].startswith("  cluster-admin-binding: misses some")
    assert "by a service account" in findings["cluster-admin-binding"] and "by a person" not in findings["cluster-admin-binding"]
    assert "exec-into-container" not in findings  # Metadata is all it needs
    assert "public-access-failures: not checked" in out
    code, out, _ = call(rules, ["lint", "--strict", "--json", "--policy", str(policy)])
    report = msgspec.json.decode(out)
    assert (
        code == 1
        and report["valid"]
        and {finding["rule"] for finding in report["findings"] if finding["status"] == "cannot fire"} >= {"privileged-pod", "nodeport-service"}
    )


def test_rules_lint_with_real_policies():
    """The ACK default policy records request bodies for workloads and RBAC: only events deletion is starved."""
    code, out, _ = call(rules, ["lint", "--policy", str(POLICIES / "alibaba-ack-default-audit-policy.yaml")])
    assert code == 0
    starved = [row.split(":")[0].strip() for row in out.splitlines() if ": cannot fire:" in row or ": misses some:" in row]
    assert starved == ["audit-events-deleted"]
    code, out, _ = call(rules, ["lint", "--policy", str(tmp_policy := POLICIES / "no-such.yaml")])
    assert code == 2 and str(tmp_policy) in out


def test_policy_fixture_paths_exist():
    assert REAL_AUDIT.is_dir() and SIGMA.is_dir()
    assert pod()["kind"] == "Pod"
