"""The pipeline contract of kube_audit_shipper/process/transform.py: build_transform, Transform.apply, drops and matched."""

from __future__ import annotations

import json

import pytest

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.process.enrich.config import DerivedConfig, EnrichConfig, RedactConfig
from kube_audit_shipper.process.policy.load import load_policy, parse_policy
from kube_audit_shipper.process.policy.match import compile_policy
from kube_audit_shipper.process.transform import Transform, build_transform
from tests.support.corpus import DATA

OFF = EnrichConfig(enabled=False)


def corpus_lines() -> list[bytes]:
    files = sorted((DATA / "real-audit").glob("*.jsonl"))
    assert files, "no corpus under tests/data"
    return [line for path in files for line in path.read_bytes().splitlines() if line.strip()]


def policy(text: str):
    parsed, _ = parse_policy("apiVersion: audit.k8s.io/v1\nkind: Policy\n" + text)
    return compile_policy(parsed)


def test_nothing_to_do_gives_no_transform():
    assert build_transform(None, OFF, node_name="n") is None
    quiet = EnrichConfig(node_field="", derived=DerivedConfig(enabled=False), redact=RedactConfig(enabled=False))
    assert build_transform(None, quiet, node_name="n") is None
    assert build_transform(None, EnrichConfig(), node_name="n") is not None
    assert build_transform(policy("rules:\n- level: Metadata\n"), OFF, node_name="n") is not None


def test_identity_without_policy_and_enrichment_on_the_corpus():
    transform = Transform(None)
    for line in corpus_lines():
        out = transform.apply(line)
        assert out is not None and b"\n" not in out
        assert json.loads(out) == json.loads(line)
    assert transform.drops == {} and transform.matched == {}


def test_enrichment_only_keeps_the_event_and_appends_fields():
    transform = build_transform(None, EnrichConfig(static_fields={"cluster_id": "c1"}), node_name="node-7")
    assert transform is not None
    for line in corpus_lines():
        source = json.loads(line)
        out = json.loads(transform.apply(line))
        added = {k: out.pop(k) for k in ("cluster_id", "node", "derived") if k in out}
        assert added["cluster_id"] == "c1" and added["node"] == "node-7"
        # Only redaction may change the event itself (here: nothing in the corpus has a token query parameter).
        if "requestObject" in source and source.get("objectRef", {}).get("resource") in ("secrets", "tokenreviews"):
            continue
        assert out == source


@pytest.mark.parametrize("line", [b"", b"{", b"[]", b'[{"kind":"Event"}]', b'"x"', b"1", b"null", b"{}}"])
def test_malformed_lines_raise(line):
    transform = build_transform(policy("rules:\n- level: Metadata\n"), EnrichConfig(), node_name="n")
    with pytest.raises(MalformedEventError):
        transform.apply(line)


def test_drops_and_matched_are_counted_per_rule():
    transform = build_transform(
        policy("omitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: [/healthz*]\n- level: Metadata\n  verbs: [get]\n"),
        OFF,
        node_name="n",
    )
    lines = [
        b'{"verb":"get","requestURI":"/healthz","stage":"ResponseComplete"}',
        b'{"verb":"get","requestURI":"/version","stage":"RequestReceived"}',
        b'{"verb":"get","requestURI":"/version","stage":"ResponseComplete"}',
        b'{"verb":"post","requestURI":"/version","stage":"ResponseComplete"}',
    ]
    assert [transform.apply(line) is None for line in lines] == [True, True, False, True]
    assert transform.matched == {"rule[0]": 1, "rule[1]": 2, "no-match": 1}
    assert transform.drops == {"rule[0]": 1, "rule[1]": 1, "no-match": 1}
    assert transform.stage_drops == {"rule[0]": 0, "rule[1]": 1, "no-match": 0}


def test_output_keeps_field_order_unknown_fields_and_appends_enrichment_last():
    line = (
        b'{"zz":1,"kind":"Event","level":"RequestResponse","stage":"ResponseComplete","verb":"get",'
        b'"user":{"username":"alice"},"responseObject":{"a":1},"requestObject":{"b":2},"aa":[1]}'
    )
    transform = build_transform(policy("rules:\n- level: Request\n"), EnrichConfig(), node_name="n1")
    out = transform.apply(line)
    assert out == (
        b'{"zz":1,"kind":"Event","level":"Request","stage":"ResponseComplete","verb":"get",'
        b'"user":{"username":"alice"},"requestObject":{"b":2},"aa":[1],'
        b'"node":"n1","derived":{"user_kind":"human","effective_user":"alice"}}'
    )


def test_apiserver_events_keep_their_exact_bytes_when_unchanged():
    line = corpus_lines()[0]
    transform = build_transform(None, EnrichConfig(static_fields={"c": 1}), node_name="n")
    out = transform.apply(line)
    assert out.startswith(line[:-1] + b",")
    assert json.loads(out)["c"] == 1


def test_event_fields_colliding_with_enrichment_are_replaced_not_duplicated():
    line = b'{"kind":"Event","node":"old","derived":{"x":1},"verb":"get"}'
    transform = build_transform(None, EnrichConfig(), node_name="new")
    out = transform.apply(line)
    assert out.count(b'"node"') == 1 and out.count(b'"derived"') == 1
    assert json.loads(out)["node"] == "new"


def test_empty_object_and_bom():
    transform = build_transform(None, EnrichConfig(derived=DerivedConfig(enabled=False)), node_name="n")
    assert transform.apply(b"{}") == b'{"node":"n"}'
    assert transform.apply(b"{ }") == b'{"node":"n"}'
    assert json.loads(transform.apply(b'\xef\xbb\xbf{"kind":"Event"}')) == {"kind": "Event", "node": "n"}


def test_policy_trim_redaction_and_enrichment_together():
    secret = {"kind": "Secret", "metadata": {"name": "s", "managedFields": [{"m": 1}]}, "data": {"k": "dg=="}}
    line = json.dumps(
        {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/d/secrets?token=t0k",
            "verb": "create",
            "user": {"username": "alice"},
            "objectRef": {"resource": "secrets", "namespace": "d", "name": "s", "apiVersion": "v1"},
            "requestObject": secret,
            "responseObject": secret,
        }
    ).encode()
    transform = build_transform(policy("omitManagedFields: true\nrules:\n- level: Request\n"), EnrichConfig(), node_name="n")
    out = json.loads(transform.apply(line))
    assert out["level"] == "Request" and "responseObject" not in out
    assert out["requestObject"] == {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "***"}}
    assert out["requestURI"] == "/api/v1/namespaces/d/secrets?token=***"
    assert out["node"] == "n" and out["derived"]["user_kind"] == "human"


def test_every_corpus_policy_with_full_enrichment_never_crashes():
    lines = corpus_lines()
    for path in sorted((DATA / "policies").glob("*.yaml")):
        compiled, _ = load_policy(str(path))
        transform = build_transform(compiled, EnrichConfig(static_fields={"cluster_id": "c"}), node_name="n")
        for line in lines:
            out = transform.apply(line)
            if out is not None:
                assert json.loads(out)["cluster_id"] == "c"
        assert sum(transform.matched.values()) == len(lines)


def test_decision_cache_size_zero_still_evaluates():
    transform = build_transform(policy("rules:\n- level: Metadata\n"), OFF, node_name="n", decision_cache_size=0)
    assert transform.apply(b'{"verb":"get"}') == b'{"verb":"get"}'
    assert transform.matched["rule[0]"] == 1
