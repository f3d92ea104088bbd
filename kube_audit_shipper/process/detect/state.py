"""The saved form of the engine's state (`DetectionEngine.snapshot`), versioned.

Saved with the checkpoint, so a restart neither loses nor repeats a windowed alert. Rules are named by id:
state of a rule that no longer exists (or whose aggregate changed shape) is dropped on restore, with a note.
Version 1: msgpack of `EngineState`.
"""

from __future__ import annotations

import msgspec

from kube_audit_shipper.process.detect.aggregate import GroupState

STATE_VERSION = 1


class EngineState(msgspec.Struct, kw_only=True):
    version: int
    #: the latest event time seen (seconds since the epoch)
    watermark: float | None
    #: requests seen at ResponseStarted: auditID → ids of the rules already done for it (oldest first)
    inflight: list[tuple[str, list[str]]]
    #: (rule id, dedup key, quiet until) (oldest first)
    dedup: list[tuple[str, str, float]]
    #: (rule id, aggregate signature, groups least recently touched first)
    aggregates: list[tuple[str, str, list[GroupState]]]
