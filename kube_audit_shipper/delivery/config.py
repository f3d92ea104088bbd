"""Blocks shared by every sink's config: batching and retries."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

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
            examples=[1 << 30],
        ),
    ]
    segment_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, description="size of one spool segment file")] = SPOOL_SEGMENT_BYTES


class SinkConfigBase(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Keys every sink has. Subclasses add the backend's own keys and set `tag=` to the sink type name."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="unique sink name (metrics label, state directory name)")]
    batch: Annotated[BatchConfig | None, msgspec.Meta(description="overrides the top-level batch block for this sink")] = None
    retry: Annotated[RetryConfig, msgspec.Meta(description="backoff between attempts of a failing batch")] = msgspec.field(default_factory=RetryConfig)
    spool: Annotated[SpoolConfig | None, msgspec.Meta(description="absent: no spool (a failing sink holds the reader back at memory_limit_bytes)")] = None
    concurrency: Annotated[
        int, msgspec.Meta(ge=1, le=64, description="batches in flight at once; a sink that must keep batch order (file, loki, s3) takes only 1")
    ] = 1

    #: why this sink type sends one batch at a time, in order; None: batches may go in any order
    ordered_because: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        if self.ordered_because is not None and self.concurrency != 1:
            tag = type(self).__struct_config__.tag
            raise ValueError(f"concurrency {self.concurrency}: a {tag} sink sends one batch at a time ({self.ordered_because}); set 1 or leave it out")
