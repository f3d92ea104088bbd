"""`type: s3` sink config (S3 and S3-compatible object stores: OSS's S3 API, MinIO, Ceph RGW, SeaweedFS).

```yaml
- name: archive-s3
  type: s3
  bucket: audit-archive
  region: us-east-1
  endpoint: http://127.0.0.1:9000   # optional, for S3-compatible stores
  force_path_style: true
  key_template: "audit/cluster={cluster_id}/dt=%Y-%m-%d/hour=%H/{node}-{first_ts}-{seq}.ndjson.zst"
  key_fields: {cluster_id: c0123}
  compression: zstd                 # or gzip
  object_max_bytes: 67108864
  object_max_age_s: 300
  staging_max_bytes: 1073741824     # under <state_dir>/s3/<name>; full: the reader waits
  sse: aws:kms                      # or AES256
  sse_kms_key_id: alias/audit
  storage_class: STANDARD_IA
  tags: {retention: 400d}
```

Credentials: `access_key_id` + `secret_access_key` (+ `session_token`) when given (use `${VAR}` or
`${file:/path}`), else the AWS SDK chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the shared
profile (`profile`, else `AWS_PROFILE`), web identity (IRSA: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`),
container credentials and instance metadata. The `retry` block (initial_ms, max_ms, multiplier) also paces
the sink's own upload retries; a blocked upload (bad credentials, missing bucket) is tried every `retry.max_ms`.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

import msgspec

from kube_audit_shipper.delivery.config import SinkConfigBase

#: Placeholders every key template may use; any other `{name}` comes from key_fields or, failing that, from the
#: object's first event (a top-level string field, e.g. `cluster_id` set by `enrich.static_fields`).
BUILTIN_PLACEHOLDERS = frozenset({"node", "first_ts", "seq"})
#: strftime directives a key template may use: numeric, locale-independent.
TIME_DIRECTIVES = "YymdjHMSGVuwUW"
_DIRECTIVE = re.compile(r"%(.?)")
_FIELD_VALUE = re.compile(r"^[A-Za-z0-9._=-]{1,128}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TAG_KEY = re.compile(r"^[A-Za-z0-9 +\-=._:/@]{1,128}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9 +\-=._:/@]{0,256}$")
_MAX_PARTS = 10_000


class S3SinkConfig(SinkConfigBase, tag="s3", kw_only=True, frozen=True, forbid_unknown_fields=True):
    ordered_because: ClassVar[str | None] = "it appends every batch to one staged object, in order"

    bucket: Annotated[str, msgspec.Meta(min_length=3, max_length=63, description="bucket the objects are written to; must exist", examples=["audit-archive"])]
    region: Annotated[str, msgspec.Meta(min_length=1, description="signing region (S3-compatible stores usually accept us-east-1)")] = "us-east-1"
    endpoint: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None, msgspec.Meta(description="for S3-compatible stores, e.g. http://127.0.0.1:9000; null: AWS")
    ] = None
    force_path_style: Annotated[bool, msgspec.Meta(description="address the bucket in the path (endpoint/bucket/key), not as a host name")] = False
    key_template: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="object key: strftime directives take the time of the object's FIRST event (stageTimestamp, UTC); "
            "{node}, {first_ts} (that time, 20261122T101500Z), {seq} (persistent counter + random, e.g. 000042-5f3a9c1e), "
            "{<name>} from key_fields or else the first event's top-level field",
        ),
    ] = "audit/cluster={cluster_id}/dt=%Y-%m-%d/hour=%H/{node}-{first_ts}-{seq}.ndjson.zst"
    key_fields: Annotated[
        dict[str, str], msgspec.Meta(description="values for the key template's own placeholders, e.g. {cluster_id: c0123}; [A-Za-z0-9._=-]")
    ] = msgspec.field(default_factory=dict)
    compression: Annotated[
        Literal["zstd", "gzip"], msgspec.Meta(description="each batch is one zstd frame / gzip member; objects decompress with zstd -d / gzip -d")
    ] = "zstd"
    compression_level: Annotated[int, msgspec.Meta(ge=1, le=19, description="zstd 1-19, gzip 1-9")] = 3
    object_max_bytes: Annotated[int, msgspec.Meta(ge=5 << 20, description="finish an object once it holds this many compressed bytes")] = 64 << 20
    object_max_age_s: Annotated[int, msgspec.Meta(ge=1, description="finish an object this long after its first event was staged")] = 300
    part_size_bytes: Annotated[
        int, msgspec.Meta(ge=5 << 20, le=5 << 30, description="objects larger than this are sent as a multipart upload of parts this size")
    ] = 8 << 20
    checksum: Annotated[
        Literal["md5", "crc32", "sha256"],
        msgspec.Meta(description="integrity checksum sent with every PutObject and UploadPart (md5: Content-MD5, understood by every S3 store)"),
    ] = "md5"
    staging_max_bytes: Annotated[int, msgspec.Meta(ge=16 << 20, description="disk for staged objects under <state_dir>/s3/<name>; full: the reader waits")] = (
        1 << 30
    )
    access_key_id: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | None, msgspec.Meta(description="static credentials; null: the SDK credential chain")
    ] = None
    secret_access_key: Annotated[Annotated[str, msgspec.Meta(min_length=1)] | None, msgspec.Meta(description="with access_key_id")] = None
    session_token: Annotated[Annotated[str, msgspec.Meta(min_length=1)] | None, msgspec.Meta(description="with access_key_id, for temporary credentials")] = (
        None
    )
    profile: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | None, msgspec.Meta(description="shared config/credentials profile; null: AWS_PROFILE or default")
    ] = None
    sse: Annotated[Literal["AES256", "aws:kms"] | None, msgspec.Meta(description="server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS)")] = None
    sse_kms_key_id: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | None, msgspec.Meta(description="KMS key id/ARN/alias for sse: aws:kms; null: the bucket's default key")
    ] = None
    storage_class: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z_]{1,31}$")] | None, msgspec.Meta(description="e.g. STANDARD_IA, GLACIER_IR; null: the bucket default")
    ] = None
    tags: Annotated[dict[str, str], msgspec.Meta(description="object tags set on every object (at most 10)")] = msgspec.field(default_factory=dict)
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300, description="TCP/TLS connect timeout of one S3 call")] = 10.0
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600, description="socket read timeout of one S3 call")] = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems: list[str] = []
        names = set(_PLACEHOLDER.findall(self.key_template))
        for name in sorted(names):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
                problems.append(f"key_template: invalid placeholder {{{name}}}")
        if "seq" not in names:
            problems.append("key_template must contain {seq}: it keeps object keys unique across restarts")
        bad = sorted(set(_DIRECTIVE.findall(_PLACEHOLDER.sub("", self.key_template))) - set(TIME_DIRECTIVES) - {"%"})
        if bad:
            problems.append(f"key_template: unsupported time directive(s) {', '.join('%' + d for d in bad)}; use %{' %'.join(TIME_DIRECTIVES)}")
        if self.key_template.startswith("/") or "//" in self.key_template:
            problems.append("key_template must not start with '/' or contain '//'")
        for end, want in ((".zst", "zstd"), (".gz", "gzip")):
            if self.key_template.endswith(end) and self.compression != want:
                problems.append(f"key_template ends in {end!r} but compression is {self.compression!r}")
        for name, value in self.key_fields.items():
            if name in BUILTIN_PLACEHOLDERS:
                problems.append(f"key_fields.{name}: {{{name}}} is built in and cannot be set")
            elif not _FIELD_VALUE.match(value):
                problems.append(f"key_fields.{name}: {value!r} must match [A-Za-z0-9._=-]{{1,128}}")
        if self.compression == "gzip" and self.compression_level > 9:
            problems.append(f"compression_level {self.compression_level}: gzip takes 1-9")
        if self.object_max_bytes // self.part_size_bytes + 2 > _MAX_PARTS:
            problems.append(f"object_max_bytes / part_size_bytes must stay below {_MAX_PARTS - 2} parts")
        if self.staging_max_bytes < 2 * self.object_max_bytes:
            problems.append("staging_max_bytes must be at least 2 × object_max_bytes (one object uploading, one filling)")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            problems.append("access_key_id and secret_access_key go together")
        if self.session_token is not None and self.access_key_id is None:
            problems.append("session_token needs access_key_id and secret_access_key")
        if self.access_key_id is not None and self.profile is not None:
            problems.append("give either static credentials or profile, not both")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            problems.append("sse_kms_key_id needs sse: aws:kms")
        if len(self.tags) > 10:
            problems.append(f"tags: S3 allows at most 10 tags per object, got {len(self.tags)}")
        for key, value in self.tags.items():
            if not _TAG_KEY.match(key) or key.startswith("aws:") or not _TAG_VALUE.match(value):
                problems.append(f"tags.{key}: keys 1-128 and values 0-256 of letters, digits, spaces and + - = . _ : / @ (no aws: prefix)")
        if problems:
            raise ValueError("; ".join(problems))
