"""`detect:` config: conversion with key paths (as the root config loader does), tuning built-in rules by id
without copying them, global exceptions."""

from __future__ import annotations

from typing import Any

import pytest

from kube_audit_shipper.config_convert import convert_all
from kube_audit_shipper.process.detect.build import RulesError, build_engine, load_catalog
from kube_audit_shipper.process.detect.config import DetectConfig
from tests.unit.process.detect.audit_events import line


def convert(data: dict[str, Any]) -> DetectConfig:
    config, errors = convert_all(data, DetectConfig, "detect")
    assert errors == [], errors
    return config  # type: ignore[no-any-return]


def test_an_empty_section_is_valid_and_on():
    config = convert({})
    assert config.enabled and config.builtin_rules and config.rules == {}


def test_conversion_errors_have_key_paths():
    _, errors = convert_all(
        {
            "internal_cidrs": ["10.0.0.0/8", "nope"],
            "rules": {"exec-into-container": {"severity": "urgent", "window_s": -1, "threshold": {"count": {}}}},
            "exceptions": {"source_cidrs": ["x"]},
            "max_groups_per_rule": 1,
            "typo": 1,
        },
        DetectConfig,
        "detect",
    )
    text = "\n".join(errors)
    for expected in [
        "detect.typo: unknown key",
        "detect.max_groups_per_rule: expected int >= 10",
        'detect.rules.exec-into-container.severity: expected "critical" or "high" or "medium" or "low" or "info" or null',
        "detect.rules.exec-into-container.window_s: expected float > 0",
        "detect.rules.exec-into-container.threshold.count: give at least one of gt, ge, lt, le",
        "detect.exceptions: source_cidrs[0]: not a CIDR or IP address: 'x'",
    ]:
        assert expected in text, (expected, text)
    # cross-field checks run once the fields themselves are valid, as for every config struct
    _, errors = convert_all({"internal_cidrs": ["10.0.0.0/8", "nope"]}, DetectConfig, "detect")
    assert errors == ["detect: internal_cidrs[1]: not a CIDR or IP address: 'nope'"]


def test_tuning_built_in_rules_by_id():
    config = convert(
        {
            "rules": {
                "exec-into-container": {"severity": "critical", "exceptions": {"users": ["ci-bot"]}},
                "nodeport-service": {"enabled": False},
                "public-access-failures": {"window_s": 600, "threshold": {"count": {"ge": 3}}, "dedup_s": 60},
                "impersonation": {"dedup_s": 5},
            }
        }
    )
    catalog = load_catalog(config)
    specs = {spec.id: spec for spec in catalog.specs}
    assert specs["exec-into-container"].severity == "critical"
    assert specs["exec-into-container"].exceptions.users == ("ci-bot",)
    assert specs["privileged-pod"].exceptions.users[0].endswith("daemon-set-controller")  # untouched
    assert not specs["nodeport-service"].enabled and "nodeport-service" not in {spec.id for spec in catalog.enabled}
    aggregate = specs["public-access-failures"].aggregate
    assert aggregate is not None and aggregate.window_s == 600 and aggregate.dedup_s == 60
    assert dict(aggregate.threshold) == {"count": (("ge", 3.0),), "failed_ratio": (("gt", 0.5),)}
    assert specs["impersonation"].dedup is not None and specs["impersonation"].dedup.period_s == 5
    engine, _ = build_engine(config)
    exec_line = line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id", user=("ci-bot", ["system:authenticated"]))
    assert engine.evaluate_line(exec_line) == []  # the added exception
    (alert,) = engine.evaluate_line(line("create", "pods", namespace="default", name="w", subresource="exec", query="command=id"))
    assert alert.severity == "critical"


def test_tuning_that_does_not_fit_is_an_error_with_its_key_path():
    config = convert(
        {
            "rules": {
                "no-such-rule": {"enabled": False},
                "exec-into-container": {"window_s": 60, "dedup_s": 5},
                "forbidden-burst": {"threshold": {"failed_ratio": {"gt": 0.1}}},
            }
        }
    )
    with pytest.raises(RulesError) as caught:
        load_catalog(config)
    assert sorted(caught.value.problems) == [
        "detect.rules.exec-into-container.dedup_s: exec-into-container has no dedup (and is not an aggregate rule)",
        "detect.rules.exec-into-container.window_s: exec-into-container is not an aggregate rule",
        "detect.rules.forbidden-burst.threshold.failed_ratio: not a metric of this rule (count, resources)",
        "detect.rules.no-such-rule: no rule has this id (built-in or from the rule files)",
    ]


def test_global_exceptions_apply_to_every_rule():
    config = convert({"exceptions": {"namespaces": ["sandbox-*"], "source_cidrs": ["192.0.2.0/24"], "user_agents": ["argocd/*"]}})
    engine, _ = build_engine(config)

    def exec_in(namespace: str, **kw: Any) -> bytes:
        return line("create", "pods", namespace=namespace, name="w", subresource="exec", query="command=id", **kw)

    assert engine.evaluate_line(exec_in("sandbox-7")) == []
    assert engine.evaluate_line(exec_in("default", source_ip="192.0.2.10")) == []
    assert engine.evaluate_line(exec_in("default", user_agent="argocd/v2.13.0")) == []
    assert len(engine.evaluate_line(exec_in("default"))) == 1


def test_internal_cidrs_make_public_addresses_internal():
    burst = [
        line("get", "secrets", code=403, source_ip="81.2.69.142", user=("system:anonymous", ["system:unauthenticated"]), time=f"2026-11-22T10:00:{second:02d}Z")
        for second in range(12)
    ]
    engine, _ = build_engine(convert({"internal_cidrs": ["81.2.69.0/24"]}))
    assert [alert for raw in burst for alert in engine.evaluate_line(raw) if alert.rule == "public-access-failures"] == []
    engine, _ = build_engine(convert({}))
    assert len([alert for raw in burst for alert in engine.evaluate_line(raw) if alert.rule == "public-access-failures"]) == 1


def test_identity_settings_come_from_enrichment():
    reason = 'RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "cluster-admin" to User "alice"'
    raw = line(
        "create", "pods", namespace="default", name="w", subresource="exec", query="command=id", user=("shared-admin", ["system:masters"]), reason=reason
    )
    engine, _ = build_engine(convert({}), shared_admin_users=["shared-admin"])
    (alert,) = engine.evaluate_line(raw)
    assert alert.fields["user"] == "alice"
    engine, _ = build_engine(convert({}), shared_admin_users=[])
    (alert,) = engine.evaluate_line(raw)
    assert alert.fields["user"] == "shared-admin"


def test_the_examples_of_docs_rules_md_load():
    """The rule file and config examples in docs/rules.md are valid as written."""
    import re
    from pathlib import Path

    import yaml

    from kube_audit_shipper.process.detect.build import RuleCatalog, parse_rules_text

    text = (Path(__file__).resolve().parents[4] / "docs" / "rules.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    rule_file = next(block for block in blocks if block.startswith("rules:"))
    catalog = RuleCatalog()
    problems: list[str] = []
    parse_rules_text(rule_file, "docs", catalog, problems)
    assert problems == [] and [spec.id for spec in catalog.specs] == ["exec-in-payments"]
    aggregate_example = next(block for block in blocks if "public-access-failures" in block and "aggregate:" in block)
    catalog = RuleCatalog()
    parse_rules_text("rules:\n" + aggregate_example, "docs", catalog, problems)
    assert problems == [] and catalog.specs[0].aggregate is not None
    detect_block = next(block for block in blocks if block.startswith("detect:"))
    section = yaml.safe_load(detect_block)["detect"]
    config = convert({key: value for key, value in section.items() if key not in ("geoip", "risky_cidrs", "rule_files")})
    load_catalog(config)  # the tuning example fits the built-in rules
