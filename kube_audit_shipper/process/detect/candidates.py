"""The candidate rules of an event: what the engine's index holds per (verb, resource, subresource), filtered by
the event's features (conditions.FEATURES: status code, impersonation, public client address) for the rules that
pin them. Both are memoised: the index per key (in the engine), the filtered subsets per feature values here.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from kube_audit_shipper.process.detect.compiled import CompiledRule
from kube_audit_shipper.process.detect.computed import COMPUTED
from kube_audit_shipper.process.detect.conditions import Test
from kube_audit_shipper.process.detect.context import EventContext

Candidates = tuple[tuple[Test, CompiledRule], ...]
FEATURE_CACHE_MAX = 256  # per index entry: distinct (code, impersonated, public) values seen
_source_ip_public = COMPUTED["@source_ip_public"].get


class Entry:
    """The candidates of one index key, and their subsets per feature values (when some candidate has a guard)."""

    __slots__ = ("all", "by_features", "guarded")

    def __init__(self, candidates: Candidates) -> None:
        self.all = candidates
        self.guarded = any(any(values is not None for values in rule.guards) for _, rule in candidates)
        self.by_features: dict[tuple[Any, ...], Candidates] = {}

    def only(self, features: tuple[Any, ...]) -> Candidates:
        found = self.by_features.get(features)
        if found is None:
            found = tuple(candidate for candidate in self.all if candidate[1].passes(features))
            if len(self.by_features) >= FEATURE_CACHE_MAX:
                self.by_features.clear()
            self.by_features[features] = found
        return found


def event_features(ctx: EventContext, used: tuple[bool, ...]) -> tuple[Any, ...] | None:
    """The event's FEATURES values (None for one no rule pins: `used`); None when one cannot be read (every
    candidate is then evaluated, as without guards)."""
    code_used, impersonated_used, public_used = used
    view = ctx.view
    try:
        code = None
        if code_used:
            status = view.responseStatus
            code = status.code if status else UNSET
        impersonated = None
        if impersonated_used:
            impersonated = view.impersonatedUser not in (UNSET, None)
        public = _source_ip_public(ctx) if public_used else None
        features = (code, impersonated, public)
        hash(features)
    except Exception:  # noqa: BLE001  # an odd value: no filtering, the rules decide
        return None
    return features
