"""Trimming an event to its effective level, and omitManagedFields."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube_audit_shipper.process.policy.event import decode_event
from kube_audit_shipper.process.policy.match import Decision, compile_policy
from kube_audit_shipper.process.policy.schema import LEVEL_RANK, LEVELS, STAGES, GroupResources, Policy, PolicyRule
from kube_audit_shipper.process.policy.trim import DROPPED_LEVEL, DROPPED_STAGE, KEPT, effective_level, strip_managed_fields, trim_event
from kube_audit_shipper.process.transform import Transform

ENCODER = msgspec.json.Encoder()
MANAGED = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]


def obj(name: str, managed: bool = True, **extra) -> dict:
    metadata = {"name": name, "namespace": "d"}
    if managed:
        metadata["managedFields"] = MANAGED
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": metadata, **extra}


def decision(level: str, stages: tuple[str, ...] = (), omf: bool = False) -> Decision:
    return Decision(0, "rule[0]", LEVEL_RANK[level], frozenset(stages), omf)


def trimmed(fields: dict, d: Decision) -> tuple[int, dict | None]:
    line = json.dumps(fields).encode()
    event = decode_event(line)
    outcome = trim_event(event, d)
    if outcome != KEPT:
        return outcome, None
    return outcome, json.loads(event.encode(ENCODER, line))


FULL = {
    "kind": "Event",
    "level": "RequestResponse",
    "stage": "ResponseComplete",
    "verb": "update",
    "requestObject": obj("a"),
    "responseObject": obj("a", data={"k": "v"}),
}


@pytest.mark.parametrize(
    ("policy_level", "recorded", "expected_level", "has_request", "has_response"),
    [
        ("RequestResponse", "RequestResponse", "RequestResponse", True, True),
        ("Request", "RequestResponse", "Request", True, False),
        ("Metadata", "RequestResponse", "Metadata", False, False),
        ("RequestResponse", "Request", "Request", True, False),
        ("RequestResponse", "Metadata", "Metadata", False, False),
        ("Request", "Metadata", "Metadata", False, False),
    ],
)
def test_effective_level_is_the_lower_one(policy_level, recorded, expected_level, has_request, has_response):
    source = dict(FULL, level=recorded)
    outcome, out = trimmed(source, decision(policy_level))
    assert outcome == KEPT
    assert out["level"] == expected_level
    assert ("requestObject" in out) is has_request
    assert ("responseObject" in out) is has_response


def test_level_none_and_omitted_stages_drop():
    assert trimmed(FULL, decision("None"))[0] == DROPPED_LEVEL
    assert trimmed(dict(FULL, level="None"), decision("Metadata"))[0] == DROPPED_LEVEL
    assert trimmed(FULL, decision("Metadata", ("ResponseComplete",)))[0] == DROPPED_STAGE
    assert trimmed(FULL, decision("Metadata", ("RequestReceived",)))[0] == KEPT


def test_event_without_level_or_stage_keeps_them_absent():
    source = {k: v for k, v in FULL.items() if k not in ("level", "stage")}
    outcome, out = trimmed(source, decision("Request", ("RequestReceived", "ResponseComplete")))
    assert outcome == KEPT
    assert "level" not in out and "stage" not in out
    assert "requestObject" in out and "responseObject" not in out
    assert effective_level(2, None) == 2 and effective_level(3, "Bogus") == 3


def test_unchanged_bodies_are_copied_byte_for_byte():
    """Bodies are never parsed when nothing looks inside: escapes and spacing survive."""
    body = '{"kind": "Secret",  "data": {"k": "caf\\u00e9"}, "n": 1.50}'
    line = (f'{{"kind":"Event","level":"RequestResponse","stage":"ResponseComplete","verb":"get","requestObject":{body},"responseObject":{body}}}').encode()
    transform = Transform(compile_policy(Policy(rules=(PolicyRule(level="Request"),))))
    out = transform.apply(line)
    assert out == line.replace(b',"responseObject":' + body.encode(), b"").replace(b'"RequestResponse"', b'"Request"')


def test_event_kept_as_recorded_is_the_input_line():
    line = b'{"kind":"Event","level":"Metadata","stage":"ResponseComplete","verb":"get", "x" : [1,2] }'
    transform = Transform(compile_policy(Policy(rules=(PolicyRule(level="RequestResponse"),))))
    assert transform.apply(line) is line


def test_omit_managed_fields_single_object():
    outcome, out = trimmed(FULL, decision("RequestResponse", omf=True))
    assert outcome == KEPT
    assert "managedFields" not in out["requestObject"]["metadata"]
    assert out["requestObject"]["metadata"] == {"name": "a", "namespace": "d"}
    assert out["responseObject"]["data"] == {"k": "v"}
    assert "managedFields" not in out["responseObject"]["metadata"]


def test_omit_managed_fields_only_at_request_level_and_above():
    _, out = trimmed(FULL, decision("RequestResponse", omf=False))
    assert out["requestObject"]["metadata"]["managedFields"] == MANAGED


def test_omit_managed_fields_list_items_and_table_rows():
    listing = {
        "kind": "ConfigMapList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "5"},
        "items": [obj("a"), obj("b", managed=False), obj("c")],
    }
    table = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "columnDefinitions": [{"name": "Name"}],
        "rows": [
            {"cells": ["a"], "object": {"kind": "PartialObjectMetadata", "metadata": obj("a")["metadata"]}},
            {"cells": ["b"], "object": obj("b")},
            {"cells": ["c"]},
        ],
    }
    source = dict(FULL, verb="list", requestObject=listing, responseObject=table)
    _, out = trimmed(source, decision("RequestResponse", omf=True))
    assert [item["metadata"] for item in out["requestObject"]["items"]] == [{"name": n, "namespace": "d"} for n in "abc"]
    assert out["requestObject"]["metadata"] == {"resourceVersion": "5"}
    rows = out["responseObject"]["rows"]
    assert rows[0]["object"]["metadata"] == {"name": "a", "namespace": "d"}
    assert rows[1]["object"]["metadata"] == {"name": "b", "namespace": "d"}
    assert rows[2] == {"cells": ["c"]}


def test_omit_managed_fields_leaves_patch_bodies_alone():
    patch = {"metadata": {"managedFields": MANAGED, "labels": {"a": "b"}}}
    source = dict(FULL, verb="patch", requestObject=patch)
    _, out = trimmed(source, decision("RequestResponse", omf=True))
    assert out["requestObject"] == patch
    assert "managedFields" not in out["responseObject"]["metadata"]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"op":"add","path":"/metadata/managedFields","value":[]}]',
        b'"managedFields"',
        b'{"kind":"X","spec":{"managedFields":[1]}}',
        b'{"metadata":"managedFields"}',
        b'{"items":"managedFields"}',
    ],
)
def test_strip_managed_fields_leaves_other_shapes(body):
    assert strip_managed_fields(body) is None


def test_strip_managed_fields_keeps_other_metadata_bytes():
    body = b'{"metadata":{"name":"x","managedFields":[{"m":1}],"labels":{"a":"caf\\u00e9"}},"spec":{"z": 1}}'
    assert bytes(strip_managed_fields(body)) == b'{"metadata":{"name":"x","labels":{"a":"caf\\u00e9"}},"spec":{"z": 1}}'


def test_level_is_rewritten_in_place_keeping_field_order():
    line = b'{"kind":"Event","level":"RequestResponse","stage":"ResponseComplete","verb":"get","zz":1}'
    event = decode_event(line)
    assert trim_event(event, decision("Metadata")) == KEPT
    out = event.encode(ENCODER, line)
    assert out == b'{"kind":"Event","level":"Metadata","stage":"ResponseComplete","verb":"get","zz":1}'


# Property tests: trimming never adds a field and never raises a level.

levels = st.sampled_from(LEVELS)
names = st.sampled_from(["a", "b", "managedFields", "metadata", "items", "rows", "object", "kind"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.builds(lambda extra: obj("x", **extra), st.dictionaries(names, json_values, max_size=2)),
    st.builds(lambda items: {"kind": "List", "items": items}, st.lists(st.builds(obj, st.text(max_size=2)), max_size=3)),
    st.builds(
        lambda rows: {"kind": "Table", "rows": [{"object": row} for row in rows]},
        st.lists(st.builds(obj, st.text(max_size=2)), max_size=3),
    ),
)
events = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.just("Event"),
        "level": levels | st.just("Bogus"),
        "stage": st.sampled_from(STAGES),
        "verb": st.sampled_from(["get", "list", "create", "patch", "update", "delete"]),
        "user": st.fixed_dictionaries({"username": st.sampled_from(["alice", "bob"])}),
        "requestURI": st.sampled_from(["/api/v1/namespaces/d/pods/p", "/healthz", "/apis/apps/v1/deployments"]),
        "objectRef": st.fixed_dictionaries({"resource": st.sampled_from(["pods", "deployments"])}),
        "requestObject": bodies,
        "responseObject": bodies,
        "unknownField": json_values,
    },
)
rules = st.builds(
    PolicyRule,
    level=levels,
    users=st.lists(st.sampled_from(["alice", "bob"]), max_size=1).map(tuple),
    verbs=st.lists(st.sampled_from(["get", "create", "patch"]), max_size=2).map(tuple),
    resources=st.lists(
        st.builds(GroupResources, resources=st.lists(st.sampled_from(["pods", "*", "pods/*"]), max_size=2).map(tuple)),
        max_size=1,
    ).map(tuple),
    omit_stages=st.lists(st.sampled_from(STAGES), max_size=2).map(tuple),
    omit_managed_fields=st.none() | st.booleans(),
)
policies = st.builds(
    Policy,
    rules=st.lists(rules, min_size=1, max_size=4).map(tuple),
    omit_stages=st.lists(st.sampled_from(STAGES), max_size=1).map(tuple),
    omit_managed_fields=st.booleans(),
)


def paths(value, prefix=()) -> set[tuple]:
    """Every key path in a JSON value (list positions collapse to "[]")."""
    found = {prefix}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= paths(item, prefix + (key,))
    elif isinstance(value, list):
        for item in value:
            found |= paths(item, prefix + ("[]",))
    return found


def rank(event: dict) -> int:
    level = event.get("level")
    return LEVEL_RANK.get(level, 3) if isinstance(level, str) else 3


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(event=events, policy=policies)
def test_trimming_never_adds_a_field_and_never_raises_a_level(event, policy):
    line = json.dumps(event).encode()
    output = Transform(compile_policy(policy)).apply(line)
    if output is None:
        return
    result = json.loads(output)
    assert paths(result) <= paths(event)
    assert rank(result) <= rank(event)
    if "level" in event:
        assert result["level"] in LEVELS or result["level"] == event["level"]
