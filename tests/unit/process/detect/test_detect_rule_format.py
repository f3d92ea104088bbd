"""The rule format: paths, operators, combinators, templates, and a loader that reports every error with its
file and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.process.detect.build import RuleCatalog, RulesError, load_catalog, parse_rules_text
from kube_audit_shipper.process.detect.conditions import compile_condition
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.context import Env, EventContext
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.detect.getters import compile_getter
from kube_audit_shipper.process.detect.paths import EACH, INDEX, KEY, PathError, Segment, parse_path
from kube_audit_shipper.process.detect.rulefile import check_condition
from kube_audit_shipper.process.detect.template import Template, TemplateError
from kube_audit_shipper.process.policy.event import decode_event
from tests.unit.process.detect.audit_events import encode, event, pod


@pytest.mark.parametrize(
    ("text", "root", "rest"),
    [
        ("verb", "verb", ()),
        ("objectRef.subresource", "objectRef", (Segment(KEY, "subresource"),)),
        (
            "requestObject.spec.containers[*].securityContext.privileged",
            "requestObject",
            (Segment(KEY, "spec"), Segment(KEY, "containers"), Segment(EACH), Segment(KEY, "securityContext"), Segment(KEY, "privileged")),
        ),
        ('annotations["authorization.k8s.io/decision"]', "annotations", (Segment(KEY, "authorization.k8s.io/decision"),)),
        ("annotations['a.b/c']", "annotations", (Segment(KEY, "a.b/c"),)),
        (r'x["quote \" and \\ backslash"]', "x", (Segment(KEY, 'quote " and \\ backslash'),)),
        ("a[-1].b", "a", (Segment(INDEX, position=-1), Segment(KEY, "b"))),
        ("@command", "@command", ()),
        ("@podspec.volumes[*].hostPath.path", "@podspec", (Segment(KEY, "volumes"), Segment(EACH), Segment(KEY, "hostPath"), Segment(KEY, "path"))),
    ],
)
def test_paths_parse(text: str, root: str, rest: tuple[Segment, ...]):
    path = parse_path(text)
    assert (path.root, path.rest) == (root, rest)


@pytest.mark.parametrize("text", ["", ".verb", "a..b", "a[", "a[x]", 'a["open', "[*]", "a b", "a.", 5])
def test_bad_paths(text: Any):
    with pytest.raises(PathError):
        parse_path(text)


def ctx_of(value: dict[str, Any]) -> EventContext:
    return EventContext(decode_event(encode(value)), Env())


def get(path: str, value: dict[str, Any]) -> Any:
    return compile_getter(parse_path(path))(ctx_of(value))


def test_getters_on_typed_and_dict_events():
    typed = event(
        "create",
        "pods",
        namespace="default",
        name="w",
        request_object=pod(containers=[{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 443}]}, {"name": "b"}]),
    )
    assert get("verb", typed) == "create"
    assert get("objectRef.namespace", typed) == "default"
    assert get("user.groups", typed) == ["system:authenticated"]
    assert get('annotations["authorization.k8s.io/decision"]', typed) == "allow"
    assert get("requestObject.spec.containers[*].name", typed) == ["a", "b"]
    assert get("requestObject.spec.containers[*].ports[*].containerPort", typed) == [80, 443]
    assert get("requestObject.spec.containers[1].name", typed) == "b"
    assert get("requestObject.spec.containers[5].name", typed) is get("requestObject.nothing", typed)  # both UNSET
    assert get("@containers[*].name", typed) == ["a", "b"]
    assert get("responseStatus.code", typed) == 200
    # an event with a field the typed view does not know is decoded as a dict: same answers, extra fields readable
    odd = {**typed, "authenticationMetadata": {"method": "token"}}
    assert get("verb", odd) == "create" and get("authenticationMetadata.method", odd) == "token"
    assert get("requestObject.spec.containers[*].name", odd) == ["a", "b"]


OPERATOR_CASES: list[tuple[dict[str, Any], bool]] = [
    ({"field": "verb", "equals": "create"}, True),
    ({"field": "verb", "equals": "CREATE"}, False),
    ({"field": "verb", "equals": "CREATE", "ignore_case": True}, True),
    ({"field": "verb", "in": ["get", "create"]}, True),
    ({"field": "user.groups", "equals": "system:authenticated"}, True),  # any element of a list
    ({"field": "requestURI", "contains": "/namespaces/"}, True),
    ({"field": "requestURI", "startswith": ["/apis/", "/api/"]}, True),
    ({"field": "requestURI", "endswith": "/pods"}, True),
    ({"field": "requestURI", "regex": "^/api/v[0-9]+/"}, True),
    ({"field": "@source_ip", "cidr": ["192.168.0.0/16", "10.0.0.0/8"]}, True),
    ({"field": "@source_ip", "cidr": "172.16.0.0/12"}, False),
    ({"field": "responseStatus.code", "equals": 201}, True),
    ({"field": "responseStatus.code", "equals": "201"}, False),  # typed: a string never equals a number
    ({"field": "responseStatus.code", "ge": 200, "lt": 300}, True),
    ({"field": "responseStatus.code", "gt": 201}, False),
    ({"field": "requestObject.spec.hostNetwork", "equals": True}, True),
    ({"field": "requestObject.spec.hostNetwork", "equals": 1}, False),  # a boolean is not a number
    ({"field": "requestObject.spec.hostPID", "exists": False}, True),
    ({"field": "impersonatedUser", "exists": True}, False),
    ({"field": "requestObject.spec.volumes[*].hostPath.path", "startswith": "/var/run"}, True),
    ({"not": {"field": "verb", "equals": "create"}}, False),
    ({"and": [{"field": "verb", "equals": "create"}, {"field": "objectRef.resource", "equals": "pods"}]}, True),
    ({"or": [{"field": "verb", "equals": "delete"}, {"field": "objectRef.resource", "equals": "pods"}]}, True),
    ({"field": "requestObject.spec.containers[*].name", "equals": "nginx"}, True),
    ({"field": "requestObject.spec.containers", "exists": True}, True),
    ({"field": "requestObject.spec.initContainers", "exists": True}, False),  # an empty list has no values
]


@pytest.mark.parametrize(("condition", "expected"), OPERATOR_CASES, ids=[str(case[0]) for case in OPERATOR_CASES])
def test_operators(condition: dict[str, Any], expected: bool):
    value = event(
        "create",
        "pods",
        namespace="default",
        name="w",
        code=201,
        source_ip="10.2.3.4",
        request_object=pod(hostNetwork=True, initContainers=[], volumes=[{"name": "s", "hostPath": {"path": "/var/run/docker.sock"}}]),
    )
    parsed, problems = check_condition(condition, "match")
    assert problems == [] and parsed is not None
    assert compile_condition(parsed)(ctx_of(value)) is expected


def test_templates():
    template = Template("{user} ran {command} ({rate:.0%}, {{literal}}) {missing}")
    assert template.names == ("user", "command", "rate", "missing")
    assert template.render({"user": "bob", "command": ["sh", "-c"], "rate": 0.5}) == "bob ran sh, -c (50%, {literal}) -"
    assert Template("{x.__class__}").render({}) == "-"  # no attribute access: it is a plain (unknown) name
    for bad in ["{", "}", "{a:zz}"]:
        with pytest.raises(TemplateError):
            Template(bad)


BAD_FILE = """
rules:
  - id: no-severity
    match: {field: verb, equals: get}
  - id: bad-regex
    severity: high
    match: {and: [{field: verb, equals: get}, {field: requestURI, regex: "([unclosed"}]}
  - id: bad-path
    severity: low
    match: {field: "objectRef.namspace", equals: x}
  - id: unknown-computed
    severity: low
    match: {field: "@nope", exists: true}
  - id: bad-operator
    severity: low
    match: {field: verb, like: get}
  - id: bad-template
    severity: low
    match: {field: verb, equals: get}
    fields: {who: "@user"}
    output: "{who} did {what}"
  - id: bad-aggregate
    severity: low
    match: {field: verb, equals: get}
    aggregate: {group_by: ["@source_ip"], window_s: 0, threshold: {cnt: {ge: 1}}}
    fields: {n: $count}
  - id: metric-without-aggregate
    severity: low
    match: {field: verb, equals: get}
    fields: {n: $count}
  - id: bad-cidr
    severity: low
    match: {field: "@source_ip", cidr: [10.0.0.0/8, not-a-cidr]}
    exceptions: {source_cidrs: [300.1.1.1/8], teams: [x]}
  - id: bad mitre
    severity: low
    mitre: [T12, Execution]
    match: {field: verb, exists: maybe}
"""


def test_every_error_is_reported_with_file_and_key_path(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILE)
    with pytest.raises(RulesError) as caught:
        load_catalog(DetectConfig(builtin_rules=False, rule_files=[str(path)]))
    problems = caught.value.problems
    assert isinstance(caught.value, ConfigError)
    expected = [
        "rules[0].severity: expected one of critical, high, medium, low, info",
        "rules[1].match.and[1].regex: invalid regular expression",
        "rules[2].match.field: objectRef has no field 'namspace'",
        "rules[3].match.field: unknown computed value '@nope'",
        "rules[4].match.like: unknown key",
        "rules[5].output: {what} is not an output field",
        "rules[6].aggregate.window_s: expected a number > 0",
        "rules[6].aggregate.threshold.cnt: unknown key",
        "rules[7].fields.n: $count: not an aggregate metric (the rule has no aggregate)",
        "rules[8].match.cidr[1]: not a CIDR or IP address: 'not-a-cidr'",
        "rules[8].exceptions.source_cidrs[0]: not a CIDR or IP address",
        "rules[8].exceptions.teams: unknown key",
        "rules[9].id: 'bad mitre': use letters",
        "rules[9].mitre[0]: 'T12' is neither",
        "rules[9].mitre[1]: 'Execution' is neither",
        "rules[9].match.exists: expected true or false",
    ]
    for text in expected:
        assert any(problem.startswith(f"{path}: ") and text in problem for problem in problems), (text, problems)
    assert len(problems) == len(expected), problems


def test_yaml_and_file_errors(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - id: [unclosed\n")
    with pytest.raises(RulesError) as caught:
        load_catalog(DetectConfig(builtin_rules=False, rule_files=[str(broken), str(tmp_path / "missing.yaml")]))
    problems = caught.value.problems
    assert any(problem.startswith(f"{broken}: line 3") and "invalid YAML" in problem for problem in problems)
    assert any(problem.startswith("detect.rule_files[1]: no such file") for problem in problems)


def test_duplicate_ids_and_multi_document_files(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(
        "rules:\n  - {id: mine, severity: low, match: {field: verb, equals: get}}\n---\nrules:\n  - {id: exec-into-container, severity: low, match: {field: verb, equals: get}}\n"
    )
    with pytest.raises(RulesError) as caught:
        load_catalog(DetectConfig(rule_files=[str(tmp_path / "*.yaml")]))
    assert caught.value.problems == [f"{tmp_path / 'a.yaml'}: rule id 'exec-into-container' is already defined in builtin:sessions.yaml"]


def test_defaults_of_a_minimal_rule():
    catalog = RuleCatalog()
    problems: list[str] = []
    parse_rules_text("rules:\n  - {id: gets, severity: info, match: {field: verb, equals: get}}\n", "min.yaml", catalog, problems)
    assert problems == []
    (spec,) = catalog.specs
    assert spec.title == "gets" and spec.enabled and [name for name, _ in spec.fields][:3] == ["user", "source_ip", "verb"]
    engine = DetectionEngine(catalog.specs)
    (alert,) = engine.evaluate_line(encode(event("get", "pods", namespace="default", name="web-0")))
    assert alert.summary.startswith("gets: user=alice@example.com source_ip=10.0.8.15 verb=get resource=pods namespace=default name=web-0 code=200")
