"""Blocks shared by every sink's config: batching, retries, spool, the keys every sink has, and the keys every
HTTP sink has (timeout, TLS, proxy: one shape for Loki, SLS and the alert targets, read by the one HTTP client
factory a sink gets in its SinkContext)."""

from __future__ import annotations

from typing import Annotated, ClassVar
from urllib.parse import urlsplit

import msgspec

#: the default bound of a sink's spool: minutes of an outage at a busy control plane's rate, on the node's disk
DEFAULT_SPOOL_BYTES = 1 << 30
#: the default size of a spool segment file (SpoolConfig, and a Spool opened without one)
SPOOL_SEGMENT_BYTES = 64 << 20


class BatchConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    max_events: Annotated[int, msgspec.Meta(ge=1, le=1_000_000, description="flush a batch at this many events")] = 4096
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30, description="flush a batch at this many uncompressed bytes")] = 4 << 20
    max_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000, description="flush a batch this long after its first event")] = 1000


class RetryConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    initial_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000, description="first backoff (full jitter)")] = 500
    max_ms: Annotated[int, msgspec.Meta(ge=1, le=86_400_000, description="backoff cap")] = 60_000
    multiplier: Annotated[float, msgspec.Meta(ge=1.0, le=10.0, description="backoff growth per attempt")] = 2.0
    max_retry_age_s: Annotated[
        int,
        msgspec.Meta(ge=0, description="give a batch up to the dead-letter store after retrying this long; 0: never give up"),
    ] = 0

    def __post_init__(self) -> None:
        if self.max_ms < self.initial_ms:
            raise ValueError(f"max_ms ({self.max_ms}) must be >= initial_ms ({self.initial_ms})")


class SpoolConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    max_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=1 << 20,
            description="disk bytes for batches the sink could not take yet (under state_dir/spool/<sink>); full: the reader waits",
        ),
    ] = DEFAULT_SPOOL_BYTES
    segment_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, description="size of one spool segment file")] = SPOOL_SEGMENT_BYTES


class SinkConfigBase(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Keys every sink has. Subclasses add the backend's own keys and set `tag=` to the sink type name."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="unique sink name (metrics label, state directory name)")]
    batch: Annotated[BatchConfig | None, msgspec.Meta(description="overrides the top-level batch block for this sink")] = None
    retry: Annotated[RetryConfig, msgspec.Meta(description="backoff between attempts of a failing batch")] = msgspec.field(default_factory=RetryConfig)
    spool: Annotated[
        SpoolConfig | None,
        msgspec.Meta(
            description="a bounded disk spool, on by default: while the sink fails, batches go to disk and reading goes on (rotated files "
            "are read before kube-apiserver deletes them); null: no spool (a failing sink holds the reader back at memory_limit_bytes)"
        ),
    ] = msgspec.field(default_factory=SpoolConfig)
    concurrency: Annotated[
        int, msgspec.Meta(ge=1, le=64, description="batches in flight at once; a sink that must keep batch order (file, loki, s3) takes only 1")
    ] = 1

    #: why this sink type sends one batch at a time, in order; None: batches may go in any order
    ordered_because: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        if self.ordered_because is not None and self.concurrency != 1:
            tag = type(self).__struct_config__.tag
            raise ValueError(f"concurrency {self.concurrency}: a {tag} sink sends one batch at a time ({self.ordered_because}); set 1 or leave it out")


class TlsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    ca_file: Annotated[str | None, msgspec.Meta(description="PEM CA bundle the server certificate is checked against; absent: the system CAs")] = None
    cert_file: Annotated[str | None, msgspec.Meta(description="PEM client certificate (mutual TLS); needs key_file")] = None
    key_file: Annotated[str | None, msgspec.Meta(description="PEM private key of cert_file")] = None
    insecure_skip_verify: Annotated[
        bool, msgspec.Meta(description="do not check the server certificate (tests only: anyone can read and forge the traffic)")
    ] = False


class HttpSinkConfigBase(SinkConfigBase, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Keys of every sink that talks HTTP (Loki, SLS, the alert targets): the block the HTTP client factory reads.

    A subclass may give `timeout_s` another default by declaring it again."""

    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600, description="whole-request timeout of one attempt")] = 10.0
    tls: Annotated[
        TlsConfig | None,
        msgspec.Meta(description="https only: CA, client certificate; the server certificate is always checked unless insecure_skip_verify"),
    ] = None
    proxy_url: Annotated[str | None, msgspec.Meta(description="HTTP(S) proxy; environment proxy variables are not used")] = None

    def http_problems(self) -> list[str]:
        """What is wrong with the TLS and proxy keys (each sink checks its own URL)."""
        problems = []
        if self.tls is not None and (self.tls.cert_file is None) != (self.tls.key_file is None):
            problems.append("tls: cert_file and key_file go together")
        if self.proxy_url is not None and urlsplit(self.proxy_url).scheme not in ("http", "https"):
            problems.append(f"proxy_url {self.proxy_url!r}: expected http://host:port or https://...")
        return problems
