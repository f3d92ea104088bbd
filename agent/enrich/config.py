"""`enrich:` section of the agent config."""

from __future__ import annotations

from typing import Annotated

import msgspec


class EnrichConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: Annotated[bool, msgspec.Meta(description="add enrichment fields to every shipped event")] = False
