"""Redaction of secrets in bodies and requestURI."""

from __future__ import annotations

import hashlib
import hmac
import json

import msgspec
import pytest

from kube_audit_shipper.process.enrich.config import RedactConfig, RedactRule
from kube_audit_shipper.process.enrich.redact import Redactor, parse_field_path, parse_json_pointer
from kube_audit_shipper.process.policy.event import decode_event

ENCODER = msgspec.json.Encoder()
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def secret(**data) -> dict:
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "s", "namespace": "d", "annotations": {LAST_APPLIED: '{"data":{"p":"x"}}', "a": "b"}},
        "type": "Opaque",
        "data": data or {"password": "c2VjcmV0", "user": "YWRtaW4="},
    }


def redact(fields: dict, config: RedactConfig | None = None) -> dict:
    line = json.dumps({"kind": "Event", "level": "RequestResponse", **fields}).encode()
    event = decode_event(line)
    Redactor(config or RedactConfig()).apply(event)
    return json.loads(event.encode(ENCODER, line))


SECRET_REF = {"resource": "secrets", "namespace": "d", "name": "s", "apiVersion": "v1"}


def test_secret_data_is_masked_in_both_bodies_keeping_keys():
    out = redact({"verb": "create", "objectRef": SECRET_REF, "requestObject": secret(), "responseObject": secret()})
    for body in (out["requestObject"], out["responseObject"]):
        assert body["data"] == {"password": "***", "user": "***"}
        assert body["metadata"]["annotations"] == {LAST_APPLIED: "***", "a": "b"}
        assert body["type"] == "Opaque" and body["metadata"]["name"] == "s"


def test_string_data_null_values_and_custom_replacement():
    body = {"kind": "Secret", "stringData": {"token": "plain", "gone": None}, "data": None}
    out = redact({"objectRef": SECRET_REF, "requestObject": body}, RedactConfig(replacement="<redacted>"))
    assert out["requestObject"] == {"kind": "Secret", "stringData": {"token": "<redacted>", "gone": None}, "data": None}


def test_secret_list_and_table():
    listing = {"kind": "SecretList", "items": [secret(), secret(k="dg==")]}
    table = {"kind": "Table", "rows": [{"cells": ["s"], "object": secret()}, {"cells": ["t"]}]}
    ref = {"resource": "secrets", "namespace": "d"}
    out = redact({"verb": "list", "objectRef": ref, "responseObject": listing})
    assert [item["data"] for item in out["responseObject"]["items"]] == [
        {"password": "***", "user": "***"},
        {"k": "***"},
    ]
    out = redact({"verb": "list", "objectRef": ref, "responseObject": table})
    assert out["responseObject"]["rows"][0]["object"]["data"] == {"password": "***", "user": "***"}
    assert out["responseObject"]["rows"][1] == {"cells": ["t"]}


def test_json_patch_operations_on_secret_data():
    patch = [
        {"op": "replace", "path": "/data/password", "value": "bmV3"},
        {"op": "add", "path": "/data", "value": {"a": "YQ==", "b": "Yg=="}},
        {"op": "add", "path": "", "value": secret()},
        {"op": "add", "path": "/metadata/labels/x", "value": "keep"},
        {"op": "remove", "path": "/data/old"},
        {"op": "test", "path": "/stringData/x", "value": None},
        {"op": "copy", "from": "/data/a", "path": "/data/b"},
    ]
    out = redact({"verb": "patch", "objectRef": SECRET_REF, "requestObject": patch})
    ops = out["requestObject"]
    assert ops[0]["value"] == "***"
    assert ops[1]["value"] == {"a": "***", "b": "***"}
    assert ops[2]["value"]["data"] == {"password": "***", "user": "***"}
    assert ops[2]["value"]["metadata"]["annotations"][LAST_APPLIED] == "***"
    assert ops[3:] == patch[3:]


def test_merge_patch_on_secret():
    out = redact({"verb": "patch", "objectRef": SECRET_REF, "requestObject": {"data": {"password": "eA=="}}})
    assert out["requestObject"] == {"data": {"password": "***"}}


def test_token_request_and_token_review():
    token_request = {"kind": "TokenRequest", "spec": {"audiences": ["api"]}, "status": {"token": "eyJhbGciOi"}}
    out = redact(
        {
            "objectRef": {"resource": "serviceaccounts", "subresource": "token", "namespace": "kube-system"},
            "requestObject": {"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
            "responseObject": token_request,
        }
    )
    assert out["responseObject"]["status"] == {"token": "***"}
    assert out["requestObject"] == {"kind": "TokenRequest", "spec": {"audiences": ["api"]}}
    review = {"kind": "TokenReview", "spec": {"token": "eyJ"}, "status": {"authenticated": True}}
    out = redact(
        {
            "objectRef": {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io"},
            "requestObject": review,
            "responseObject": review,
        }
    )
    assert out["requestObject"]["spec"] == {"token": "***"} == out["responseObject"]["spec"]
    assert out["responseObject"]["status"] == {"authenticated": True}


def test_other_resources_are_untouched_byte_for_byte():
    line = (
        b'{"kind":"Event","objectRef":{"resource":"configmaps","namespace":"d"},'
        b'"requestObject":{"data": {"password":"caf\\u00e9"}},"requestURI":"/api/v1/namespaces/d/configmaps?x=1"}'
    )
    event = decode_event(line)
    Redactor(RedactConfig()).apply(event)
    assert not event.dirty
    assert event.encode(ENCODER, line) is line


def test_secret_subresource_and_other_group_do_not_match_the_secret_rule():
    body = secret()
    out = redact({"objectRef": {"resource": "secrets", "apiGroup": "example.com"}, "requestObject": body})
    assert out["requestObject"] == body


def test_custom_rule_with_escaped_dots_and_hash_mode_with_key():
    rule = RedactRule(group="example.com", resource="credentials/rotate", fields=("spec.keys.a\\.b", "spec.list"))
    config = RedactConfig(mode="hash", hash_key="k3y", rules=(rule,))
    body = {"spec": {"keys": {"a.b": "s3cret", "a": {"b": "keep"}}, "list": [1, 2]}}
    out = redact(
        {
            "objectRef": {"resource": "credentials", "subresource": "rotate", "apiGroup": "example.com"},
            "requestObject": body,
        },
        config,
    )
    expected = "sha256:" + hmac.new(b"k3y", b"s3cret", hashlib.sha256).hexdigest()
    assert out["requestObject"]["spec"]["keys"] == {"a.b": expected, "a": {"b": "keep"}}
    assert out["requestObject"]["spec"]["list"] == "sha256:" + hmac.new(b"k3y", b"[1,2]", hashlib.sha256).hexdigest()


def test_hash_mode_without_key_is_plain_sha256():
    out = redact({"objectRef": SECRET_REF, "requestObject": secret(p="eA==")}, RedactConfig(mode="hash"))
    assert out["requestObject"]["data"] == {"p": "sha256:" + hashlib.sha256(b"eA==").hexdigest()}


def test_v1alpha1_group_in_api_version():
    review = {"kind": "TokenReview", "spec": {"token": "eyJ"}}
    out = redact({"objectRef": {"resource": "tokenreviews", "apiVersion": "authentication.k8s.io/v1"}, "requestObject": review})
    assert out["requestObject"]["spec"] == {"token": "***"}


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/api/v1/namespaces/d/pods?watch=1&token=abc", "/api/v1/namespaces/d/pods?watch=1&token=***"),
        ("/x?Access_Token=a%20b&y=2&password=p", "/x?Access_Token=***&y=2&password=***"),
        ("/x?tokenish=1&x=token", "/x?tokenish=1&x=token"),
        ("/x?token", "/x?token"),
        ("/x?to%6Ben=z", "/x?to%6Ben=***"),
        ("/healthz", "/healthz"),
    ],
)
def test_query_parameters(uri, expected):
    assert redact({"requestURI": uri})["requestURI"] == expected


def test_query_parameter_hash_and_extra_names():
    config = RedactConfig(mode="hash", query_params=("Signature",))
    out = redact({"requestURI": "/x?signature=a%2Bb"}, config)
    assert out["requestURI"] == "/x?signature=sha256:" + hashlib.sha256(b"a+b").hexdigest()


def test_nothing_configured_is_inactive():
    assert not Redactor(RedactConfig(default_rules=False)).active
    assert Redactor(RedactConfig(default_rules=False, query_params=("x",))).active


def test_paths():
    assert parse_field_path("a.b\\.c.d") == ("a", "b.c", "d")
    assert parse_field_path("data") == ("data",)
    assert parse_json_pointer("/a~1b/c~0d") == ("a/b", "c~d")
    assert parse_json_pointer("") == ()
    assert parse_json_pointer("a") is None
