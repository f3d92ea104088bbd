"""`type: file` sink config."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from kube_audit_shipper.delivery.config import SinkConfigBase


class FileSinkConfig(SinkConfigBase, tag="file", kw_only=True, frozen=True, forbid_unknown_fields=True):
    ordered_because: ClassVar[str | None] = "it appends every batch to one file, in order"

    path: Annotated[str, msgspec.Meta(min_length=1, description="directory the NDJSON files are written to", examples=["/var/log/kube-audit-shipper"])]
    compression: Annotated[Literal["zstd", "none"], msgspec.Meta(description="zstd: each finished file decompresses with `zstd -d`")] = "zstd"
    compression_level: Annotated[int, msgspec.Meta(ge=1, le=19, description="zstd level: 1 fastest, 19 smallest")] = 3
    rotate_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, description="finish a file once it holds this many (compressed) bytes")] = 100 << 20
    rotate_age_s: Annotated[int, msgspec.Meta(ge=1, description="finish a file this long after it was started, so output shows up even at low rates")] = 3600
    file_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="file names: <prefix>-<UTC start time>-<seq>.ndjson.zst")] = "audit"
