"""Loading and validation: the reference spec §5 and the §6.7 vectors (upstream validation_test.go, reader_test.go)."""

from __future__ import annotations

import textwrap

import pytest

from kube_audit_shipper.errors import PolicyError
from kube_audit_shipper.process.policy.load import load_policy, parse_policy
from kube_audit_shipper.process.policy.schema import GroupResources, Policy, PolicyRule
from kube_audit_shipper.process.policy.validate import validate_policy

HEADER = "apiVersion: audit.k8s.io/v1\nkind: Policy\n"


def yaml_policy(body: str, header: str = HEADER) -> str:
    return header + textwrap.dedent(body)


# §6.7 valid policies (validation only).
VALID_RULES = {
    "level only": PolicyRule(level="Metadata"),
    "user groups": PolicyRule(level="None", user_groups=("system:serviceaccounts", "system:nodes")),
    "rbac get in kube-system": PolicyRule(
        level="RequestResponse",
        verbs=("get",),
        resources=(GroupResources(group="rbac.authorization.k8s.io", resources=("roles", "rolebindings")),),
        namespaces=("kube-system",),
    ),
    "non-resource urls": PolicyRule(level="Metadata", non_resource_urls=("/logs*", "/healthz*", "/metrics", "*")),
    "omit stages": PolicyRule(level="Metadata", omit_stages=("RequestReceived",)),
    "any group (1.36)": PolicyRule(level="Metadata", resources=(GroupResources(group="*", resources=("*/status",)),)),
}


@pytest.mark.parametrize("rule", VALID_RULES.values(), ids=VALID_RULES.keys())
def test_valid_rules(rule):
    assert validate_policy(Policy(rules=(rule,))) == []


def test_valid_empty_policies_and_all_rules_together():
    assert validate_policy(Policy(rules=())) == []
    assert validate_policy(Policy(rules=(), omit_stages=("RequestReceived",))) == []
    assert validate_policy(Policy(rules=tuple(VALID_RULES.values()), omit_stages=("RequestReceived",))) == []


INVALID_RULES = {
    "no level": (PolicyRule(level=""), "rules[0].level: Required value"),
    "selectors but no level": (
        PolicyRule(level="", verbs=("get",), resources=(GroupResources(resources=("pods",)),), namespaces=("default",)),
        "rules[0].level: Required value",
    ),
    "unknown level": (PolicyRule(level="FooBar"), 'rules[0].level: Unsupported value: "FooBar"'),
    "lowercase level": (PolicyRule(level="metadata"), 'rules[0].level: Unsupported value: "metadata"'),
    "urls and namespaces": (
        PolicyRule(level="None", non_resource_urls=("/logs*",), namespaces=("default",)),
        "rules cannot apply to both regular resources and non-resource URLs",
    ),
    "urls and resources": (
        PolicyRule(level="None", non_resource_urls=("/logs*",), resources=(GroupResources(resources=("pods",)),)),
        "rules cannot apply to both regular resources and non-resource URLs",
    ),
    "group with version": (
        PolicyRule(level="None", resources=(GroupResources(group="rbac.authorization.k8s.io/v1beta1"),)),
        'rules[0].resources[0].group: Invalid value: "rbac.authorization.k8s.io/v1beta1"',
    ),
    "uppercase group": (
        PolicyRule(level="None", resources=(GroupResources(group="Apps"),)),
        'rules[0].resources[0].group: Invalid value: "Apps"',
    ),
    "url without slash": (
        PolicyRule(level="None", non_resource_urls=("logs", "/healthz*")),
        "rules[0].nonResourceURLs[0]: Invalid value: \"logs\": non-resource URL rules must begin with a '/' character",
    ),
    "empty url": (
        PolicyRule(level="None", non_resource_urls=("", "/healthz*")),
        "rules[0].nonResourceURLs[0]: Invalid value: \"\": non-resource URL rules must begin with a '/' character",
    ),
    "star in the middle": (
        PolicyRule(level="None", non_resource_urls=("/logs/*/*",)),
        "non-resource URL wildcards '*' must be the final character of the rule",
    ),
    "star before extension": (
        PolicyRule(level="None", non_resource_urls=("/logs/*.log",)),
        "non-resource URL wildcards '*' must be the final character of the rule",
    ),
    "resourceNames without resources": (
        PolicyRule(level="None", resources=(GroupResources(resource_names=("leader",)),)),
        'rules[0].resources[0].resourceNames: Invalid value: ["leader"]: using resourceNames requires at least one resource',
    ),
    "rule omitStages": (
        PolicyRule(level="None", omit_stages=("foo",)),
        'rules[0].omitStages[0]: Invalid value: "foo": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic',
    ),
}


@pytest.mark.parametrize(("rule", "message"), INVALID_RULES.values(), ids=INVALID_RULES.keys())
def test_invalid_rules(rule, message):
    problems = validate_policy(Policy(rules=(rule,)))
    assert any(message in problem for problem in problems), problems


def test_invalid_policy_omit_stages():
    problems = validate_policy(Policy(rules=(PolicyRule(level="Metadata"),), omit_stages=("foo",)))
    assert problems == ['omitStages[0]: Invalid value: "foo": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic']


def test_valid_rules_followed_by_an_empty_rule_is_invalid():
    text = yaml_policy(
        """\
        rules:
        - level: Metadata
          verbs: [get]
        - {}
        """
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert caught.value.problems == ["rules[1].level: Required value"]


def test_every_error_is_listed():
    text = yaml_policy(
        """\
        omitStages: [Bogus]
        rules:
        - level: FooBar
        - level: None
          nonResourceURLs: ["logs", "/a/*/b"]
          namespaces: [default]
        - level: Metadata
          resources:
          - group: Apps
            resourceNames: [x]
        - level: 3
        """
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="p.yaml")
    problems = caught.value.problems
    assert caught.value.source == "p.yaml"
    expected_fragments = [
        "rules[3].level: expected a string, got a number (3)",
        "omitStages[0]",
        'rules[0].level: Unsupported value: "FooBar"',
        "rules[1].nonResourceURLs[0]",
        "rules[1].nonResourceURLs[1]",
        "rules[1].nonResourceURLs: Invalid value",
        'rules[2].resources[0].group: Invalid value: "Apps"',
        "rules[2].resources[0].resourceNames",
        "rules[3].level: Required value",
    ]
    for fragment in expected_fragments:
        assert any(fragment in problem for problem in problems), (fragment, problems)
    assert len(problems) == len(expected_fragments)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rules:\n- level: Metadata\n", "unknown group version"),
        ("kind: Policy\nrules:\n- level: Metadata\n", "unknown group version"),
        ("apiVersion: audit.k8s.io/v1\nrules:\n- level: Metadata\n", "unknown group version"),
        ("apiVersion: audit.k8s.io/v2\nkind: Policy\nrules:\n- level: Metadata\n", "unknown group version"),
        ("apiVersion: v1\nkind: Policy\nrules:\n- level: Metadata\n", "unknown group version"),
        ("apiVersion: audit.k8s.io/v1\nkind: ConfigMap\nrules:\n- level: Metadata\n", "is not 'Policy'"),
        (HEADER, "loaded illegal policy with 0 rules"),
        (HEADER + "rules: []\n", "loaded illegal policy with 0 rules"),
        (HEADER + "omitStages: [RequestReceived]\n", "loaded illegal policy with 0 rules"),
        ("", "the policy file is empty"),
        ("# only a comment\n", "the policy file is empty"),
        ("- level: Metadata\n", "the policy must be a YAML mapping"),
        (HEADER + "rules:\n- level: Metadata\n  verbs: [get\n", "malformed YAML"),
        (HEADER + "rules: {level: Metadata}\n", "rules: expected a list of rules"),
        (HEADER + "rules:\n- level: Metadata\n  users: alice\n", "rules[0].users: expected a list of strings"),
        (HEADER + "rules:\n- level: Metadata\n  omitManagedFields: 'yes'\n", "rules[0].omitManagedFields"),
        (HEADER + "rules:\n- level: Metadata\n  resources: [pods]\n", "rules[0].resources[0]: expected a mapping"),
    ],
)
def test_loader_errors(text, fragment):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_empty_file_fails_like_zero_rules():
    with pytest.raises(PolicyError) as caught:
        parse_policy(b"")
    assert "loaded illegal policy with 0 rules" in caught.value.problems


def test_misindented_verbs_loads_with_a_warning_and_widens_the_rule():
    """reader_test: a `verbs` indented under a resources entry is dropped (1.26+ lenient fallback)."""
    text = yaml_policy(
        """\
        rules:
        - level: Request
          resources:
          - group: ""
            resources: [pods]
            verbs: [create]
        """
    )
    policy, warnings = parse_policy(text)
    assert policy.rules[0].verbs == ()
    assert policy.rules[0].resources == (GroupResources(group="", resources=("pods",)),)
    assert len(warnings) == 1
    assert warnings[0].startswith("rules[0].resources[0]: unknown field 'verbs' ignored")
    assert "matches more requests" in warnings[0]


def test_unknown_fields_are_warnings_naming_field_and_rule():
    text = yaml_policy(
        """\
        metadata: {name: p, colour: red}
        extra: 1
        rules:
        - level: Metadata
        - level: None
          resource: [pods]
          Verbs: [get]
        """
    )
    _, warnings = parse_policy(text)
    assert [w.split(" ignored")[0] for w in warnings] == [
        "unknown field 'extra'",
        "metadata: unknown field 'colour'",
        "rules[1]: unknown field 'resource'",
        "rules[1]: unknown field 'Verbs'",
    ]


def test_case_sensitive_fields_a_misspelt_level_is_an_error_with_the_warning_attached():
    with pytest.raises(PolicyError) as caught:
        parse_policy(yaml_policy("rules:\n- Level: Metadata\n"))
    assert caught.value.problems[0] == "rules[0].level: Required value"
    assert caught.value.problems[1].startswith("warning: rules[0]: unknown field 'Level'")


def test_duplicate_field_warns_and_last_wins():
    policy, warnings = parse_policy(yaml_policy("rules:\n- level: None\n  level: Metadata\n"))
    assert policy.rules[0].level == "Metadata"
    assert warnings == ["rules[0].level: duplicate field; the last value is used (lenient decoding)"]


@pytest.mark.parametrize("version", ["audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1"])
def test_deprecated_versions_load_with_a_warning(version):
    policy, warnings = parse_policy(f"apiVersion: {version}\nkind: Policy\nrules:\n- level: Metadata\n")
    assert policy.api_version == version
    assert len(warnings) == 1 and "deprecated" in warnings[0] and version in warnings[0]


def test_json_policy_and_nulls_read_as_absent():
    text = (
        '{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitManagedFields": null,'
        ' "rules": [{"level": "Metadata", "users": null, "resources": [null], "omitManagedFields": null}]}'
    )
    policy, warnings = parse_policy(text)
    assert warnings == []
    rule = policy.rules[0]
    assert rule.users == () and rule.omit_managed_fields is None
    assert rule.resources == (GroupResources(),)
    assert policy.omit_managed_fields is False


def test_omit_managed_fields_tri_state_is_read():
    policy, _ = parse_policy(
        yaml_policy(
            """\
            omitManagedFields: true
            rules:
            - level: Metadata
              omitManagedFields: false
            - level: Metadata
            """
        )
    )
    assert policy.omit_managed_fields is True
    assert [rule.omit_managed_fields for rule in policy.rules] == [False, None]


def test_dates_stay_strings():
    policy, _ = parse_policy(yaml_policy("rules:\n- level: Metadata\n  users: [2024-01-01]\n"))
    assert policy.rules[0].users == ("2024-01-01",)


def test_extra_documents_are_ignored_with_a_warning():
    policy, warnings = parse_policy(yaml_policy("rules:\n- level: Metadata\n---\nrules: []\n"))
    assert len(policy.rules) == 1
    assert warnings == ["only the first YAML document is read, as kube-apiserver does; 1 more ignored"]


def test_load_policy_reads_a_file_and_compiles(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml_policy("rules:\n- level: Metadata\n  verbs: [get]\n"))
    compiled, warnings = load_policy(str(path))
    assert warnings == []
    assert compiled.labels == ("rule[0]", "no-match")


def test_load_policy_missing_file(tmp_path):
    with pytest.raises(PolicyError) as caught:
        load_policy(str(tmp_path / "absent.yaml"))
    assert caught.value.source == str(tmp_path / "absent.yaml")
    assert "cannot read the policy file" in caught.value.problems[0]
