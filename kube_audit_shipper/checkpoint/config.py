"""`checkpoint:` section."""

from __future__ import annotations

from typing import Annotated

import msgspec


class CheckpointConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000, description="how often acknowledged progress is written to disk (and always at stop)")] = (
        1000
    )
    forget_after_s: Annotated[int, msgspec.Meta(ge=60, description="drop the checkpoint of a file that has been gone from disk this long")] = 7 * 86400
