"""Sigma rules: SigmaHQ's Kubernetes audit rules (vendored, DRL 1.1) load and fire; the supported syntax behaves as
the Sigma specification says; what we cannot evaluate is reported, never raised."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kube_audit_shipper.model import Alert
from kube_audit_shipper.process.detect.build import RuleCatalog, load_catalog, parse_rules_text
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.engine import DetectionEngine
from tests.support.corpus import DATA, corpus_lines
from tests.unit.process.detect.audit_events import line

SIGMA = DATA / "sigma"


def sigma_catalog() -> RuleCatalog:
    return load_catalog(DetectConfig(builtin_rules=False, rule_files=[str(SIGMA / "*.yml")]))


def load_text(text: str) -> tuple[RuleCatalog, list[str]]:
    catalog = RuleCatalog()
    problems: list[str] = []
    parse_rules_text(text, "sigma-test.yml", catalog, problems)
    return catalog, problems


def fire(catalog: RuleCatalog, lines: list[bytes]) -> list[Alert]:
    engine = DetectionEngine(catalog.specs)
    alerts = [alert for raw in lines for alert in engine.evaluate_line(raw)]
    assert not engine.stats.errors
    return alerts


def test_every_vendored_rule_loads_and_the_impossible_ones_are_reported():
    catalog = sigma_catalog()
    assert len(catalog.specs) == len(list(SIGMA.glob("*.yml"))) == 16
    assert catalog.skipped == []
    assert all(spec.kind == "sigma" and spec.author for spec in catalog.specs)
    impossible = sorted(warning.split(": field ")[1].split(" ")[0] for warning in catalog.warnings if "cannot exist in audit events" in warning)
    assert impossible == ["'apiGroup'", "'apiGroup'", "'capabilities'", "'hostPath'"]
    assert any("'ALLOW' never matches" in warning for warning in catalog.warnings)


def rule_titles(alerts: list[Alert]) -> set[str]:
    return {alert.summary.split(":")[0] for alert in alerts}


def test_vendored_rules_fire_on_the_real_corpus():
    alerts = fire(sigma_catalog(), list(corpus_lines()))
    titles = rule_titles(alerts)
    assert {
        "Potential Remote Command Execution In Pod Container",
        "Kubernetes Rolebinding Modification",
        "Kubernetes Secrets Enumeration",
        "Kubernetes Unauthorized or Unauthenticated Access",
        "Kubernetes Secrets Modified or Deleted",
        "Kubernetes Admission Controller Modification",
        "New Kubernetes Service Account Created",
        "Creation Of Pod In System Namespace",
    } <= titles
    # the rules whose fields cannot exist never fire
    assert not {"Container With A hostPath Mount Created", "Privileged Container Deployed", "RBAC Permission Enumeration Attempt"} & titles
    exec_alerts = [alert for alert in alerts if alert.rule == "a1b0ca4e-7835-413e-8471-3ff2b8a66be6"]
    assert exec_alerts and all(alert.fields["author"] == "Leo Tsaousis (@laripping)" for alert in exec_alerts)  # DRL 1.1
    assert exec_alerts[0].tags == ["T1609", "execution"]


def test_vendored_rules_on_built_events():
    catalog = sigma_catalog()
    cases = {
        "Kubernetes Events Deleted": line("delete", "events", namespace="default", name="web.17a"),
        "Deployment Deleted From Kubernetes Cluster": line("delete", "deployments", namespace="default", name="web", group="apps"),
        "Kubernetes CronJob/Job Modification": line("patch", "cronjobs", namespace="default", name="nightly", group="batch"),
        "Kubernetes Unauthorized or Unauthenticated Access": line("get", "pods", namespace="default", name="x", code=401),
    }
    for title, raw in cases.items():
        assert title in rule_titles(fire(catalog, [raw])), title
    assert rule_titles(fire(catalog, [line("get", "pods", namespace="default", name="x")])) == set()


SYNTAX = """
title: syntax
id: 00000000-0000-4000-8000-000000000001
logsource: {product: kubernetes, service: audit}
author: tests
level: high
tags: [attack.t1609, attack.privilege_escalation, cve.2020-8554]
detection:
    sel_verb:
        verb: CREATE
    sel_uri:
        requestURI|contains|all: [command=, '%2Fbin%2F']
    sel_agent:
        - userAgent|startswith: kubectl/
        - userAgent|endswith: '*python-requests'
    sel_ns:
        objectRef.namespace: kube-*
    filter_ip:
        sourceIPs|cidr: 10.0.0.0/8
    filter_missing:
        objectRef.name: null
    condition: sel_verb and sel_uri and 1 of sel_a* and not (filter_ip or filter_missing) and not sel_ns
"""


def test_syntax_modifiers_and_conditions():
    catalog, problems = load_text(SYNTAX)
    assert problems == [] and catalog.skipped == [] and len(catalog.specs) == 1
    spec = catalog.specs[0]
    assert spec.severity == "high" and spec.mitre == ("T1609", "privilege-escalation") and spec.tags == ("cve.2020-8554",)

    def exec_line(**changes: object) -> bytes:
        values = {"namespace": "default", "name": "web-0", "source_ip": "81.2.69.1", "query": "command=%2Fbin%2Fsh"}
        values.update(changes)
        return line("create", "pods", subresource="exec", **values)  # type: ignore[arg-type]

    assert len(fire(catalog, [exec_line()])) == 1  # case-insensitive CREATE, both contains, kubectl/ prefix
    assert fire(catalog, [exec_line(query="command=sh")]) == []  # |all: both substrings needed
    assert fire(catalog, [exec_line(source_ip="10.1.2.3")]) == []  # |cidr filter
    assert fire(catalog, [exec_line(namespace="kube-system")]) == []  # wildcard kube-*
    assert len(fire(catalog, [exec_line(user_agent="my-tool python-requests")])) == 1  # wildcard inside endswith
    assert fire(catalog, [exec_line(user_agent="curl/8")]) == []


def test_all_of_them_re_exists_numbers_and_escapes():
    text = """
title: more
id: 00000000-0000-4000-8000-000000000002
logsource: {product: kubernetes, service: audit}
detection:
    code:
        responseStatus.code|gte: 400
    forbidden:
        responseStatus.code: 403
    path:
        requestURI|re: '^/api/v1/namespaces/[a-z]+/secrets'
    has_user:
        user.username|exists: true
    literal_star:
        objectRef.name: 'a\\*b'
    condition: all of them
"""
    catalog, problems = load_text(text)
    assert problems == [] and catalog.skipped == []
    assert len(fire(catalog, [line("get", "secrets", namespace="default", name="a*b", code=403)])) == 1
    assert fire(catalog, [line("get", "secrets", namespace="default", name="axxb", code=403)]) == []  # \\* is a literal star
    assert fire(catalog, [line("get", "secrets", namespace="default", name="a*b", code=404)]) == []


@pytest.mark.parametrize(
    ("detection", "reason"),
    [
        ("keywords: [mimikatz, evil]\n    condition: keywords", "keyword selections"),
        ("sel:\n        requestURI|base64offset|contains: abc\n    condition: sel", "modifier base64offset is not supported"),
        ("sel:\n        verb: list\n    condition: sel | count() > 5", "aggregation in the condition"),
        ("sel:\n        verb: list\n    condition: sel and missing", "not a selection of this rule"),
        ("sel:\n        verb: list\n    condition: sel and (", "ends too early"),
    ],
)
def test_unsupported_features_are_reported_not_raised(detection: str, reason: str):
    text = f"""
title: unsupported
id: 00000000-0000-4000-8000-000000000003
logsource: {{product: kubernetes, service: audit}}
detection:
    {detection}
"""
    catalog, problems = load_text(text)
    assert problems == [] and catalog.specs == []
    assert len(catalog.skipped) >= 1 and any(reason in item for item in catalog.skipped), catalog.skipped


def test_other_logsources_and_correlations_are_skipped():
    text = """
title: windows
id: 00000000-0000-4000-8000-000000000004
logsource: {product: windows, category: process_creation}
detection: {sel: {Image|endswith: '\\\\cmd.exe'}, condition: sel}
---
title: many
id: 00000000-0000-4000-8000-000000000005
correlation: {type: event_count, rules: [x], group-by: [user], timespan: 5m, condition: {gte: 10}}
detection: {}
"""
    catalog, problems = load_text(text)
    assert problems == [] and catalog.specs == []
    assert "is not {product: kubernetes, service: audit}" in catalog.skipped[0]
    assert "correlation rules are not supported" in catalog.skipped[1]


def test_sigma_and_our_rules_side_by_side_in_one_engine():
    catalog = load_catalog(DetectConfig(rule_files=[str(SIGMA / "kubernetes_audit_exec_into_container.yml")]))
    rules = {alert.rule for alert in fire(catalog, [line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id", code=101)])}
    assert rules == {"exec-into-container", "a1b0ca4e-7835-413e-8471-3ff2b8a66be6"}


def test_vendored_files_are_verbatim_with_sources():
    sources = (SIGMA / "SOURCES.md").read_text()
    for path in SIGMA.glob("*.yml"):
        assert path.name in sources
        document = yaml.safe_load(path.read_text())
        assert document["id"] in sources and document["author"] in sources
    assert Path(SIGMA / "LICENSE.Detection.Rules.md").read_text().startswith("# Detection Rule License (DRL) 1.1")
