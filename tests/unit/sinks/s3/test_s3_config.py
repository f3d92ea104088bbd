"""Unit tests for kube_audit_shipper.sinks.s3.config: the issue's public config parses; cross-field errors are all reported."""

from __future__ import annotations

import typing

import msgspec
import pytest
import yaml

from kube_audit_shipper.config import parse
from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.sinks.s3.config import S3SinkConfig

ISSUE_EXAMPLE = """
- name: archive-s3
  type: s3
  bucket: audit-archive
  region: us-east-1
  endpoint: http://127.0.0.1:9000   # optional, for S3-compatible stores
  force_path_style: true
  key_template: "audit/cluster={cluster_id}/dt=%Y-%m-%d/hour=%H/{node}-{first_ts}-{seq}.ndjson.zst"
  compression: zstd           # or gzip
  object_max_bytes: 67108864
  object_max_age_s: 300
"""


def s3(**kw: object) -> dict[str, object]:
    return {"name": "a", "type": "s3", "bucket": "audit-archive", **kw}


def problems(sink: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as ei:
        parse({"sinks": [sink]}, env={})
    return "\n".join(ei.value.problems)


def test_the_issue_example_parses_with_its_values() -> None:
    cfg = parse({"sinks": yaml.safe_load(ISSUE_EXAMPLE)}, env={}).sinks[0]
    assert isinstance(cfg, S3SinkConfig)
    assert (cfg.bucket, cfg.region, cfg.endpoint, cfg.force_path_style) == ("audit-archive", "us-east-1", "http://127.0.0.1:9000", True)
    assert (cfg.compression, cfg.object_max_bytes, cfg.object_max_age_s) == ("zstd", 64 << 20, 300)
    assert cfg.key_fields == {} and cfg.checksum == "md5" and cfg.staging_max_bytes == 1 << 30


def test_every_option_together() -> None:
    cfg = parse(
        {
            "sinks": [
                s3(
                    key_fields={"cluster_id": "c0123"},
                    key_template="a/{cluster_id}/%Y/%m/%d/%H/{node}-{seq}.ndjson.gz",
                    compression="gzip",
                    compression_level=9,
                    part_size_bytes=16 << 20,
                    checksum="crc32",
                    access_key_id="${AK}",
                    secret_access_key="${SK}",
                    sse="aws:kms",
                    sse_kms_key_id="alias/audit",
                    storage_class="GLACIER_IR",
                    tags={"retention": "400d", "team": "sec"},
                )
            ]
        },
        env={"AK": "AKIDEXAMPLE", "SK": "secret"},
    ).sinks[0]
    assert cfg.access_key_id == "AKIDEXAMPLE" and cfg.secret_access_key == "secret"
    assert cfg.sse == "aws:kms" and cfg.tags["team"] == "sec"


@pytest.mark.parametrize(
    ("sink", "expected"),
    [
        (s3(key_template="a/{node}.zst"), "must contain {seq}"),
        (s3(compression="gzip"), "ends in '.zst' but compression is 'gzip'"),
        (s3(key_template="a/{seq}.gz"), "ends in '.gz' but compression is 'zstd'"),
        (s3(key_template="/a/{seq}"), "must not start with '/'"),
        (s3(key_template="a/%b/{seq}"), "unsupported time directive(s) %b"),
        (s3(key_template="a/{bad-name}/{seq}"), "invalid placeholder {bad-name}"),
        (s3(key_fields={"cluster_id": "a/b"}), "key_fields.cluster_id"),
        (s3(key_fields={"node": "x"}), "key_fields.node: {node} is built in"),
        (s3(compression="gzip", key_template="a/{seq}.gz", compression_level=12), "gzip takes 1-9"),
        (s3(staging_max_bytes=100 << 20), "staging_max_bytes must be at least 2 × object_max_bytes"),
        (s3(object_max_bytes=1 << 40, staging_max_bytes=1 << 41, part_size_bytes=5 << 20), "parts"),
        (s3(access_key_id="AK"), "access_key_id and secret_access_key go together"),
        (s3(session_token="t"), "session_token needs"),
        (s3(access_key_id="a", secret_access_key="b", profile="p"), "either static credentials or profile"),
        (s3(sse_kms_key_id="alias/x"), "sse_kms_key_id needs sse: aws:kms"),
        (s3(tags={f"k{i}": "v" for i in range(11)}), "at most 10 tags"),
        (s3(tags={"aws:x": "v"}), "tags.aws:x"),
    ],
)
def test_cross_field_errors(sink: dict[str, object], expected: str) -> None:
    assert expected in problems(sink)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("bucket", "ab", "sinks[0].bucket"),
        ("endpoint", "127.0.0.1:9000", "sinks[0].endpoint"),
        ("object_max_bytes", 1 << 20, "sinks[0].object_max_bytes"),
        ("part_size_bytes", 1 << 20, "sinks[0].part_size_bytes"),
        ("checksum", "crc64", "sinks[0].checksum"),
        ("sse", "kms", "sinks[0].sse"),
        ("storage_class", "standard", "sinks[0].storage_class"),
        ("compression", "lz4", "sinks[0].compression"),
        ("bogus", 1, "sinks[0].bogus: unknown key"),
    ],
)
def test_field_errors_name_their_key(key: str, value: object, expected: str) -> None:
    assert expected in problems(s3(**{key: value}))


def test_every_field_is_described() -> None:
    hints = typing.get_type_hints(S3SinkConfig, include_extras=True)
    base = {"name", "batch", "retry", "spool", "concurrency", "type"}
    for field in msgspec.structs.fields(S3SinkConfig):
        if field.name in base:
            continue
        metas = [m for m in typing.get_args(hints[field.name])[1:] if isinstance(m, msgspec.Meta)]
        assert any(m.description for m in metas), field.name
