"""`deadletter:` section."""

from __future__ import annotations

from typing import Annotated

import msgspec


class DeadLetterConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, description="bytes kept in the dead-letter store; the oldest segment goes first (counted)")] = 256 << 20
    max_event_bytes: Annotated[
        int, msgspec.Meta(ge=0, description="a rejected line larger than this is stored as its location (file, offset, length) only")
    ] = 1 << 20
