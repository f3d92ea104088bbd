"""`policy check`: per-rule statistics over recorded logs (kube_audit_shipper/commands/policy_check.py, kube_audit_shipper/process/policy/report.py)."""

from __future__ import annotations

import gzip
import io
import json
import textwrap
from pathlib import Path

from kube_audit_shipper.commands.policy_check import EXIT_INVALID_POLICY, EXIT_LOG_ERROR, EXIT_OK, run_policy_check
from tests.support.corpus import DATA

CORPUS = DATA

POLICY = textwrap.dedent(
    """\
    apiVersion: audit.k8s.io/v1
    kind: Policy
    omitStages: [RequestReceived]
    rules:
    - level: None
      nonResourceURLs: ["/healthz*"]
    - level: Metadata
      resources: [{group: "", resources: [secrets]}]
    - level: None
      users: [nobody-ever]
    - level: Request
    - level: RequestResponse
    """
)


def line(**fields) -> str:
    base = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "stage": "ResponseComplete"}
    return json.dumps({**base, **fields}, separators=(",", ":"))


SECRET = {"kind": "Secret", "data": {"password": "c2VjcmV0"}}
LOG = [
    line(verb="get", requestURI="/healthz", user={"username": "u"}),
    line(verb="get", requestURI="/healthz/etcd", user={"username": "u"}),
    line(
        verb="create",
        requestURI="/api/v1/namespaces/d/secrets",
        objectRef={"resource": "secrets", "namespace": "d", "name": "s"},
        requestObject=SECRET,
        responseObject=SECRET,
    ),
    line(
        verb="update",
        requestURI="/api/v1/namespaces/d/pods/p",
        objectRef={"resource": "pods", "namespace": "d", "name": "p"},
        requestObject={"kind": "Pod"},
        responseObject={"kind": "Pod", "status": {}},
    ),
    line(verb="get", requestURI="/version", stage="RequestReceived"),
    "{not json",
]


def write(tmp_path: Path) -> tuple[str, str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    plain = tmp_path / "audit.log"
    plain.write_text("\n".join(LOG[:3]) + "\n\n")
    compressed = tmp_path / "audit-2024.log.gz"
    compressed.write_bytes(gzip.compress(("\r\n".join(LOG[3:]) + "\n").encode()))
    return str(policy), str(plain), str(compressed)


def test_json_report_counts_per_rule(tmp_path):
    policy, plain, compressed = write(tmp_path)
    out = io.StringIO()
    assert run_policy_check(policy, [plain, compressed], as_json=True, out=out) == EXIT_OK
    report = json.loads(out.getvalue())
    assert report["valid"] is True
    assert report["logs"] == [plain, compressed]
    assert report["malformed_lines"] == 1
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["rule[0]"]["matched"] == 2 and rules["rule[0]"]["events_after"] == 0
    assert rules["rule[0]"]["dropped_level_none"] == 2 and rules["rule[0]"]["saving_percent"] == 100.0
    secrets = rules["rule[1]"]
    assert secrets["matched"] == 1 and secrets["events_after"] == 1
    assert secrets["bytes_before"] == len(LOG[2])
    trimmed = {k: v for k, v in json.loads(LOG[2]).items() if k not in ("requestObject", "responseObject")}
    assert secrets["bytes_after"] == len(json.dumps({**trimmed, "level": "Metadata"}, separators=(",", ":")))
    assert rules["rule[2]"]["never_matched"] is True and rules["rule[2]"]["unreachable"] is False
    catch_all = rules["rule[3]"]
    assert catch_all["matched"] == 2 and catch_all["events_after"] == 1 and catch_all["dropped_omitted_stage"] == 1
    assert rules["rule[4]"]["unreachable"] is True and rules["rule[4]"]["never_matched"] is True
    assert report["catch_all_rule"] == "rule[3]"
    total = report["total"]
    assert total["matched"] == 5 and total["events_after"] == 2
    assert total["bytes_before"] == sum(len(x) for x in LOG[:5])
    assert total["saving_percent"] == round(100 * (total["bytes_before"] - total["bytes_after"]) / total["bytes_before"], 1)
    assert report["no_match"]["matched"] == 0


def test_text_report_flags_rules(tmp_path):
    policy, plain, compressed = write(tmp_path)
    out = io.StringIO()
    assert run_policy_check(policy, [plain, compressed], as_json=False, out=out) == EXIT_OK
    text = out.getvalue()
    assert "read 2 log(s): 5 events, 1 malformed line(s) skipped" in text
    assert "never matched: rule[2]" in text
    assert "unreachable (after the catch-all rule[3]): rule[4]" in text
    total_line = next(row for row in text.splitlines() if row.startswith("total"))
    assert total_line.split()[1:4] == ["5", "2", "3"]


def test_invalid_policy_exits_2_listing_every_error(tmp_path):
    policy = tmp_path / "bad.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Foo\n- verbs: [get]\n")
    out = io.StringIO()
    assert run_policy_check(str(policy), [], as_json=False, out=out) == EXIT_INVALID_POLICY
    text = out.getvalue()
    assert "2 problem(s)" in text
    assert 'rules[0].level: Unsupported value: "Foo"' in text and "rules[1].level: Required value" in text
    out = io.StringIO()
    assert run_policy_check(str(policy), [], as_json=True, out=out) == EXIT_INVALID_POLICY
    assert len(json.loads(out.getvalue())["errors"]) == 2


def test_unreadable_log_is_reported_and_the_rest_still_counted(tmp_path):
    policy, plain, _ = write(tmp_path)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b" + b"garbage")
    out = io.StringIO()
    code = run_policy_check(policy, [str(tmp_path / "absent.log"), str(broken), plain], as_json=True, out=out)
    assert code == EXIT_LOG_ERROR
    report = json.loads(out.getvalue())
    assert report["logs"] == [plain]
    assert len(report["errors"]) == 2
    assert report["total"]["matched"] == 3


def test_policy_without_logs_still_reports_reachability(tmp_path):
    policy, _, _ = write(tmp_path)
    out = io.StringIO()
    assert run_policy_check(policy, [], as_json=True, out=out) == EXIT_OK
    report = json.loads(out.getvalue())
    assert [r["unreachable"] for r in report["rules"]] == [False, False, False, False, True]
    assert report["total"]["saving_percent"] is None


def test_corpus_with_the_website_policy(tmp_path):
    logs = sorted(str(p) for p in (CORPUS / "real-audit").glob("*.jsonl"))
    out = io.StringIO()
    policy = str(CORPUS / "policies" / "kubernetes-website-example-audit-policy.yaml")
    assert run_policy_check(policy, logs, as_json=True, out=out) == EXIT_OK
    report = json.loads(out.getvalue())
    total = report["total"]
    assert total["matched"] == 330 and report["malformed_lines"] == 0
    assert sum(r["matched"] for r in report["rules"]) + report["no_match"]["matched"] == 330
    assert sum(r["bytes_before"] for r in report["rules"]) == total["bytes_before"]
    assert total["bytes_after"] < total["bytes_before"]
