"""`type: sls` sink config (Alibaba Cloud Simple Log Service, PutLogs).

Credentials, first that applies: `access_key_id` + `access_key_secret` (+ `security_token`) given here (use
`${VAR}` or `${file:...}`); else `credentials_file` (JSON or INI, re-read whenever its mtime changes, so a
sidecar or RRSA/instance-role helper can rotate STS tokens without a restart); else the environment variables
named by `*_env` (read at every request).

TLS and proxy: the `tls` and `proxy_url` keys every HTTP sink has (`tls: {ca_file: ...}` for a private CA,
`tls: {insecure_skip_verify: true}` for a test endpoint only). They replace `ca_file` and `tls_verify`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from kube_audit_shipper.delivery.config import HttpSinkConfigBase

#: SLS's documented limits we design for (the strictest the docs give; see the research notes).
MAX_LOGS_PER_REQUEST = 4096
MAX_REQUEST_RAW_BYTES = 5 << 20
MAX_VALUE_BYTES = 1 << 20

_REGION_IN_ENDPOINT = re.compile(r"^([a-z]+-[a-z0-9-]+?)(?:-intranet|-share|-vpc)?\.log\.aliyuncs\.com$")


def endpoint_parts(endpoint: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `endpoint`: a bare host[:port] means https."""
    text = endpoint.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint {endpoint!r}: expected a host name such as cn-hangzhou.log.aliyuncs.com or a URL such as http://127.0.0.1:8080")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"endpoint {endpoint!r}: must not have a path or query")
    return parts.scheme, parts.hostname, parts.port


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def region_of(endpoint: str) -> str | None:
    """`cn-hangzhou` from `cn-hangzhou.log.aliyuncs.com` (or its -intranet/-share/-vpc forms); None otherwise."""
    try:
        host = endpoint_parts(endpoint)[1]
    except ValueError:
        return None
    m = _REGION_IN_ENDPOINT.match(host)
    return m.group(1) if m else None


class SlsSinkConfig(HttpSinkConfigBase, tag="sls", kw_only=True, frozen=True, forbid_unknown_fields=True):
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64, description="PutLogs requests in flight at once (SLS takes log groups in any order)")] = 4
    endpoint: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="e.g. cn-hangzhou.log.aliyuncs.com (https), or a URL such as http://127.0.0.1:8080",
            examples=["cn-hangzhou.log.aliyuncs.com"],
        ),
    ]
    project: Annotated[
        str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$", description="SLS project, e.g. k8s-log-<cluster-id>", examples=["k8s-log-c0123"])
    ]
    logstore: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{1,62}$", description="SLS logstore, e.g. audit-<cluster-id>", examples=["audit-c0123"])]
    access_key_id: Annotated[str | None, msgspec.Meta(description="use ${VAR} or ${file:...}; absent: credentials_file, then the environment")] = None
    access_key_secret: Annotated[str | None, msgspec.Meta(description="use ${VAR} or ${file:...}")] = None
    security_token: Annotated[
        str | None, msgspec.Meta(description="STS token sent as x-acs-security-token (static; use credentials_file for tokens that rotate)")
    ] = None
    credentials_file: Annotated[
        str | None,
        msgspec.Meta(
            description="JSON {AccessKeyId, AccessKeySecret, SecurityToken} or INI (access_key_id, access_key_secret, security_token); re-read when it changes"
        ),
    ] = None
    access_key_id_env: Annotated[str, msgspec.Meta(description="environment variable read for the AccessKey ID when no key or file is set")] = (
        "ALIBABA_CLOUD_ACCESS_KEY_ID"
    )
    access_key_secret_env: Annotated[str, msgspec.Meta(description="environment variable read for the AccessKey secret")] = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    security_token_env: Annotated[str, msgspec.Meta(description="environment variable read for an STS token")] = "ALIBABA_CLOUD_SECURITY_TOKEN"
    signature_version: Annotated[Literal["v1", "v4"], msgspec.Meta(description="v1: HMAC-SHA1 (Logtail's); v4: SLS4-HMAC-SHA256, needs region")] = "v1"
    region: Annotated[str | None, msgspec.Meta(description="for signature v4; default: taken from an *.log.aliyuncs.com endpoint")] = None
    project_in_host: Annotated[
        bool | None, msgspec.Meta(description="send to <project>.<endpoint>; false: the project goes in x-log-project; default: false for an IP endpoint")
    ] = None
    compression: Annotated[Literal["lz4", "zstd", "none"], msgspec.Meta(description="PutLogs body compression (lz4 is what Logtail sends)")] = "lz4"
    topic: Annotated[str, msgspec.Meta(max_length=128, description="LogGroup Topic (__topic__)")] = ""
    source: Annotated[
        Annotated[str, msgspec.Meta(max_length=128)] | None,
        msgspec.Meta(description="LogGroup Source (__source__); default: the node IP ($NODE_IP/$HOST_IP/$POD_IP, else resolved)"),
    ] = None
    tags: Annotated[dict[str, str], msgspec.Meta(description="LogGroup tags (__tag__:<key>), e.g. {cluster: c0123}")] = msgspec.field(default_factory=dict)
    path_tag: Annotated[str | None, msgspec.Meta(description="__tag__:__path__; default: the first input path")] = None
    shard_hash_key: Annotated[
        str | None,
        msgspec.Meta(description="route every request to the shard owning this key (/shards/route?key=): 32 hex digits as is, anything else is MD5'd"),
    ] = None
    max_value_bytes: Annotated[
        int, msgspec.Meta(ge=1024, le=MAX_VALUE_BYTES, description="an event with a larger field is trimmed to Metadata level and annotated")
    ] = MAX_VALUE_BYTES
    max_request_bytes: Annotated[int, msgspec.Meta(ge=64 << 10, le=MAX_REQUEST_RAW_BYTES, description="raw (uncompressed) LogGroup bytes per PutLogs")] = (
        MAX_REQUEST_RAW_BYTES
    )
    max_request_logs: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOGS_PER_REQUEST, description="logs per PutLogs")] = MAX_LOGS_PER_REQUEST
    time_ns: Annotated[bool, msgspec.Meta(description="send Time_ns (the nanoseconds of __time__)")] = True
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600, description="one PutLogs request")] = 15.0

    def __post_init__(self) -> None:
        super().__post_init__()
        scheme, host, _ = endpoint_parts(self.endpoint)  # raises ValueError, reported at this sink's path
        problems = self.http_problems() + (["tls is set but endpoint is not https"] if self.tls is not None and scheme != "https" else [])
        if problems:
            raise ValueError("; ".join(problems))
        if self.project_in_host and is_ip(host):
            raise ValueError(f"project_in_host: true cannot work with an IP endpoint ({host}): the project goes in x-log-project")
        if (self.access_key_id is None) != (self.access_key_secret is None):
            raise ValueError("access_key_id and access_key_secret go together: give both or neither")
        if self.security_token is not None and self.access_key_id is None:
            raise ValueError("security_token needs access_key_id and access_key_secret")
        if self.signature_version == "v4" and not (self.region or region_of(self.endpoint)):
            raise ValueError(f"signature_version v4 needs region (it cannot be taken from endpoint {self.endpoint!r})")
        for key in self.tags:
            if not key or key.startswith("__"):
                raise ValueError(f"tags: {key!r}: tag keys must be non-empty and not start with '__' (reserved for __hostname__, __path__, __pack_id__)")

    @property
    def effective_region(self) -> str:
        return self.region or region_of(self.endpoint) or ""
