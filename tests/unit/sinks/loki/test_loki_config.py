"""The `type: loki` sink config: the issue's public keys, defaults at Loki's stock limits, refusals with reasons."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest

from kube_audit_shipper.config import parse
from kube_audit_shipper.delivery.config import TlsConfig
from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.sinks.http.config import BasicAuth
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.loki.fields import FIELDS

ISSUE_EXAMPLE = {
    "name": "loki",
    "type": "loki",
    "url": "http://127.0.0.1:3100",
    "tenant_id": "",
    "labels": {"job": "kube-audit", "cluster": "c0123"},
    "label_fields": ["verb"],
    "encoding": "protobuf",
}


def sink(**over: Any) -> LokiSinkConfig:
    cfg = parse({"sinks": [{**ISSUE_EXAMPLE, **over}], "metrics": {"listen": None}})
    sink_cfg = cfg.sinks[0]
    assert isinstance(sink_cfg, LokiSinkConfig)
    return sink_cfg


def errors(**over: Any) -> str:
    with pytest.raises(ConfigError) as info:
        sink(**over)
    return str(info.value)


def test_the_issue_example_and_the_defaults() -> None:
    cfg = sink()
    assert (cfg.url, cfg.tenant_id, cfg.labels, cfg.label_fields, cfg.encoding) == (
        "http://127.0.0.1:3100",
        "",
        {"job": "kube-audit", "cluster": "c0123"},
        ["verb"],
        "protobuf",
    )
    assert cfg.max_request_bytes == 1 << 20 and cfg.max_line_bytes == 262144 and cfg.max_label_names == 15
    assert cfg.structured_metadata == ["auditID", "user", "namespace", "resource"] and cfg.node_label == "node"
    assert cfg.tls is None and cfg.json_compression == "gzip"


def test_every_field_is_described() -> None:
    for struct in (LokiSinkConfig, TlsConfig, BasicAuth):
        hints = typing.get_type_hints(struct, include_extras=True)
        for name in struct.__struct_fields__:
            if name in ("name", "batch", "retry", "spool", "concurrency"):
                continue  # SinkConfigBase's own
            metas = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, msgspec.Meta)]
            assert any(m.description for m in metas), f"{struct.__name__}.{name} has no description"


@pytest.mark.parametrize("field", ["user", "namespace", "name", "auditID", "requestURI", "sourceIP", "effective_user"])
def test_unbounded_fields_are_refused_as_labels_with_the_reason(field: str) -> None:
    text = errors(label_fields=["verb", field])
    assert f"'{field}' is refused as a Loki label: {FIELDS[field].unbounded}" in text
    assert "force_labels" in text and "sinks[0]" in text


def test_forcing_an_unbounded_label() -> None:
    cfg = sink(label_fields=["verb", "namespace"], force_labels=["namespace"])
    assert cfg.label_fields == ["verb", "namespace"]
    assert "force_labels: 'user' is not in label_fields" in errors(force_labels=["user"])


@pytest.mark.parametrize("field", ["verb", "stage", "level", "resource", "subresource", "apiGroup", "code", "decision", "outcome", "user_kind"])
def test_few_valued_fields_are_fine_labels(field: str) -> None:
    assert field in sink(label_fields=[field]).label_fields


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"label_fields": ["nope"]}, "unknown field 'nope'"),
        ({"labels": {"bad-name": "x"}}, "label name 'bad-name' is not a valid Loki label name"),
        ({"labels": {"__reserved": "x"}}, "label name '__reserved' is not a valid Loki label name"),
        ({"labels": {"job": ""}}, "labels.job: a label value must not be empty"),
        ({"labels": {"job": "v" * 2049}}, "labels.job: value longer than 2048 bytes"),
        ({"labels": {"verb": "x"}}, "label verb is set twice"),
        ({"node_label": "job"}, "label job is set twice"),
        ({"labels": {f"l{i}": "v" for i in range(14)}}, "16 labels (labels, node_label, label_fields) are more than Loki's limit of 15"),
        ({"structured_metadata": ["auditID", "auditID"]}, "structured_metadata: auditID listed twice"),
        ({"structured_metadata": ["whatever"]}, "structured_metadata: unknown field 'whatever'"),
        ({"max_request_bytes": 4 << 20}, "max_request_bytes: expected int >= 16384 and <= 3500000"),
        ({"encoding": "avro"}, 'encoding: expected "protobuf" or "json"'),
        ({"url": "ftp://x"}, "expected http://host"),
        ({"url": "http://u:p@loki:3100"}, "put credentials in basic_auth"),
        ({"tls": {"ca_file": "/x"}}, "tls is set but url is not https"),
        ({"url": "https://loki", "tls": {"cert_file": "/c"}}, "cert_file and key_file go together"),
        ({"bearer_token": "t", "basic_auth": {"username": "u", "password": "p"}}, "choose one way to authenticate"),
        ({"headers": {"X-Scope-OrgID": "a"}}, "use tenant_id for X-Scope-OrgID"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by the sink"),
        ({"headers": {"Authorization": "x"}, "bearer_token": "t"}, "conflicts with bearer_token"),
        ({"bearer_token": "  "}, "bearer_token is empty"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_refusals_name_the_problem(over: dict[str, Any], message: str) -> None:
    assert message in errors(**over)


def test_all_problems_are_reported_together() -> None:
    text = errors(label_fields=["user"], labels={"bad-name": "x"}, bearer_token="t", basic_auth={"username": "u", "password": "p"})
    assert "refused as a Loki label" in text and "bad-name" in text and "choose one way" in text


def test_secrets_come_from_the_environment() -> None:
    cfg = parse({"sinks": [{**ISSUE_EXAMPLE, "basic_auth": {"username": "tenant", "password": "${LOKI_PW}"}}]}, env={"LOKI_PW": "s3cret"})
    loki: object = cfg.sinks[0]
    assert isinstance(loki, LokiSinkConfig)
    assert loki.basic_auth == BasicAuth(username="tenant", password="s3cret")
