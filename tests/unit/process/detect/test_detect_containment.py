"""Whatever one event does to one rule stays there: counted per rule, never an exception out of the engine."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_audit_shipper.process.detect.build import RuleCatalog, load_catalog, parse_rules_text
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.engine import DetectionEngine
from tests.unit.process.detect.audit_events import event, line

PACK = load_catalog(DetectConfig())
#: a rule that reads nothing but the verb: it must keep firing next to rules that fail on the same event
CANARY = """
rules:
  - id: canary
    severity: info
    match: {field: verb, in: [create, get, list, update, patch, delete]}
"""


def engine_with_canary() -> DetectionEngine:
    catalog = RuleCatalog()
    problems: list[str] = []
    parse_rules_text(CANARY, "canary.yaml", catalog, problems)
    assert problems == []
    return DetectionEngine(PACK.enabled + catalog.specs)


def pod_create_with_raw_body(body: bytes) -> bytes:
    """A pod create whose requestObject is `body` exactly (spliced into a real event line)."""
    marker = {"kind": "MARKER"}
    raw = line("create", "pods", namespace="default", name="web-0", request_object=marker)
    return raw.replace(msgspec.json.encode(marker), body)


def test_a_body_nested_too_deeply_is_an_error_of_each_rule_reading_it():
    e = engine_with_canary()
    deep = b'{"spec":' * 20000 + b"{}" + b"}" * 20000
    alerts = e.evaluate_line(pod_create_with_raw_body(deep))
    assert [alert.rule for alert in alerts] == ["canary"]
    assert e.stats.errors == {"privileged-pod": 1, "host-namespace-pod": 1, "sensitive-hostpath-mount": 1}
    # and the next event is evaluated as usual
    assert [alert.rule for alert in e.evaluate_line(line("get", "pods", namespace="default", name="web-0"))] == ["canary"]


def test_a_number_out_of_range_in_a_body():
    e = engine_with_canary()
    alerts = e.evaluate_line(pod_create_with_raw_body(b'{"spec":{"containers":[{"name":"a","securityContext":{"runAsUser":1e99999}}]}}'))
    assert [alert.rule for alert in alerts] == ["canary"]
    assert e.stats.errors["privileged-pod"] == 1


def test_huge_integers_compare_as_numbers():
    e = engine_with_canary()
    raw = line("get", "pods", namespace="default", name="web-0").replace(b'"code":200', b'"code":123456789012345678901234567890')
    assert [alert.rule for alert in e.evaluate_line(raw)] == ["canary"]
    assert not e.stats.errors


def test_values_of_unexpected_types_read_as_absent():
    e = engine_with_canary()
    odd = event("create", "pods", namespace="default", name="x", subresource="exec", query="command=id")
    odd["user"] = {"username": 7, "groups": "system:masters"}
    odd["sourceIPs"] = "1.2.3.4"
    odd["objectRef"]["namespace"] = ["kube-system"]
    odd["responseStatus"]["code"] = "101"
    odd["annotations"] = {"authorization.k8s.io/decision": 1}
    odd["stageTimestamp"] = 12
    odd["requestReceivedTimestamp"] = None
    alerts = e.evaluate_line(msgspec.json.encode(odd))
    assert {alert.rule for alert in alerts} == {"canary", "exec-into-container"}
    assert not e.stats.errors


# ---- arbitrary JSON at the whole engine ------------------------------------------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["pods", "exec", "secrets", "create", "get", "watch", "ResponseStarted", "system:anonymous", "81.2.69.1", "2026-11-22T10:00:00Z", "+99:99", "*"]
    ),
)
_json = st.recursive(
    _scalars, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=20
)
_keys = st.sampled_from(
    [
        "verb",
        "stage",
        "auditID",
        "requestURI",
        "user",
        "impersonatedUser",
        "sourceIPs",
        "objectRef",
        "responseStatus",
        "requestObject",
        "responseObject",
        "stageTimestamp",
        "annotations",
        "level",
        "userAgent",
        "x",
    ]
)
_ref = st.fixed_dictionaries({}, optional={"resource": _scalars, "subresource": _scalars, "namespace": _scalars, "name": _scalars, "apiGroup": _scalars})
_events = st.dictionaries(_keys, _json, max_size=10) | st.builds(
    lambda base, ref, body: {**base, "objectRef": ref, "requestObject": body, "verb": "create"}, st.dictionaries(_keys, _json, max_size=6), _ref, _json
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_events | _json, min_size=1, max_size=8))
def test_arbitrary_json_never_escapes_the_engine(events: list[object]):
    e = engine_with_canary()
    for value in events:
        e.evaluate_line(msgspec.json.encode(value))
    snapshot = e.snapshot()
    other = engine_with_canary()
    assert other.restore(snapshot) == []
    assert other.snapshot() == snapshot
