"""The real policies and events of tests/data (copied with their SOURCES.md): they load (or fail) as kube-apiserver would, and every
event goes through evaluation and trimming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kube_audit_shipper.process.policy.attributes import request_attributes
from kube_audit_shipper.process.policy.event import decode_event
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.policy.match import DecisionCache
from kube_audit_shipper.process.policy.schema import LEVEL_RANK
from kube_audit_shipper.process.transform import Transform
from tests.support.corpus import DATA

POLICIES = DATA / "policies"
EVENTS = DATA / "real-audit"

# Every published policy here loads on a current kube-apiserver except the v1beta1 one (refused since 1.24,
# which we accept with a deprecation warning, as 1.21-1.23 did). Expected warnings, per file:
EXPECTED_WARNINGS = {
    "alibaba-ack-default-audit-policy.yaml": [],
    "azure-aks-engine-audit-policy.yaml": [],
    "falcosecurity-plugins-k8saudit-audit-policy.yaml": [],
    "ferozsalam-k8s-audit-log-inspector-gke-v1beta1.yaml": ["apiVersion audit.k8s.io/v1beta1 is deprecated"],
    "gce-configure-helper-default.yaml": [],
    "kubernetes-website-example-audit-policy.yaml": [],
    "liggitt-audit2rbac-demo-policy.yaml": [],
    "openshift-library-go-allrequestbodies.yaml": ["rules[2].resources[4]: unknown field 'resource'"],
    "openshift-library-go-default.yaml": [],
    "openshift-library-go-none.yaml": [],
    "openshift-library-go-writerequestbodies.yaml": [],
}
RULE_COUNTS = {
    "alibaba-ack-default-audit-policy.yaml": 12,
    "gce-configure-helper-default.yaml": 17,
    "ferozsalam-k8s-audit-log-inspector-gke-v1beta1.yaml": 16,
    "liggitt-audit2rbac-demo-policy.yaml": 1,
}


def policy_files() -> list[Path]:
    files = sorted(POLICIES.glob("*.yaml"))
    assert files, f"no policies under {POLICIES} "
    return files


def event_lines() -> list[bytes]:
    files = sorted(EVENTS.glob("*.jsonl"))
    assert files, f"no events under {EVENTS}"
    lines = [line for path in files for line in path.read_bytes().splitlines() if line.strip()]
    assert len(lines) == 330  # as SOURCES.md counts them
    return lines


def test_every_corpus_policy_is_known():
    assert {path.name for path in policy_files()} == set(EXPECTED_WARNINGS)


@pytest.mark.parametrize("name", sorted(EXPECTED_WARNINGS))
def test_corpus_policy_loads_as_kube_apiserver_would(name):
    compiled, warnings = load_policy(str(POLICIES / name))
    expected = EXPECTED_WARNINGS[name]
    assert len(warnings) == len(expected), warnings
    for warning, prefix in zip(warnings, expected, strict=True):
        assert warning.startswith(prefix), warning
    if name in RULE_COUNTS:
        assert len(compiled.policy.rules) == RULE_COUNTS[name]


def test_openshift_typo_widens_the_entry_to_every_resource_of_the_group():
    compiled, _ = load_policy(str(POLICIES / "openshift-library-go-allrequestbodies.yaml"))
    entry = compiled.policy.rules[2].resources[4]
    assert entry.group == "machineconfiguration.openshift.io" and entry.resources == ()


def test_openshift_policy_omits_managed_fields_policy_wide():
    compiled, _ = load_policy(str(POLICIES / "openshift-library-go-default.yaml"))
    assert all(decision.omit_managed_fields for decision in compiled.decisions)
    assert compiled.no_match.omit_managed_fields


def test_unreachable_rules_are_found_after_a_catch_all():
    compiled, _ = load_policy(str(POLICIES / "openshift-library-go-none.yaml"))
    assert compiled.catch_all_index() == 2
    assert compiled.unreachable_rules() == []
    compiled, _ = load_policy(str(POLICIES / "gce-configure-helper-default.yaml"))
    assert compiled.catch_all_index() == 16


def recorded_rank(event: dict) -> int:
    level = event.get("level")
    return LEVEL_RANK.get(level, 3) if isinstance(level, str) else 3


@pytest.mark.parametrize("policy_name", sorted(EXPECTED_WARNINGS))
def test_every_corpus_event_goes_through_evaluation_and_trimming(policy_name):
    compiled, _ = load_policy(str(POLICIES / policy_name))
    transform = Transform(compiled)
    lines = event_lines()
    kept = 0
    for line in lines:
        source = json.loads(line)
        label, output = transform.process(line)
        assert label in compiled.labels
        if output is None:
            continue
        kept += 1
        result = json.loads(output)
        assert set(result) <= set(source)
        if "level" in source:
            assert LEVEL_RANK[result["level"]] <= recorded_rank(source)
        rank = LEVEL_RANK.get(result.get("level"), 3)
        if rank < 2:
            assert "requestObject" not in result and "responseObject" not in result
        if rank < 3:
            assert "responseObject" not in result
        for key in set(result) - {"level", "requestObject", "responseObject"}:
            assert result[key] == source[key], key
    assert sum(transform.matched.values()) == len(lines)
    assert sum(transform.drops.values()) == len(lines) - kept


@pytest.mark.parametrize("policy_name", sorted(EXPECTED_WARNINGS))
def test_cached_decisions_equal_uncached_evaluation(policy_name):
    compiled, _ = load_policy(str(POLICIES / policy_name))
    cache = DecisionCache(compiled)
    for _ in range(2):  # cold, then warm
        for line in event_lines():
            event = decode_event(line)
            assert cache.evaluate_event(event) == compiled.evaluate(request_attributes(event)), line[:300]


def test_the_none_profile_drops_everything():
    compiled, _ = load_policy(str(POLICIES / "openshift-library-go-none.yaml"))
    transform = Transform(compiled)
    assert all(transform.apply(line) is None for line in event_lines())


def test_audit2rbac_policy_keeps_only_its_users():
    """One rule with a users list: everyone else falls through to no-match (level None)."""
    compiled, _ = load_policy(str(POLICIES / "liggitt-audit2rbac-demo-policy.yaml"))
    transform = Transform(compiled)
    users = {"system:admin", "alice", "bob", "system:serviceaccount:ns1:sa1"}
    for line in event_lines():
        event = json.loads(line)
        user = event.get("user") if isinstance(event.get("user"), dict) else {}
        output = transform.apply(line)
        assert (output is not None) is (user.get("username") in users), line[:200]
    assert transform.matched["rule[0]"] == 37  # the audit2rbac demo log itself, all by system:admin


def test_without_policy_every_event_comes_out_json_equal():
    transform = Transform(None)
    for line in event_lines():
        assert json.loads(transform.apply(line)) == json.loads(line)
