"""`policy:` section of the agent config."""

from __future__ import annotations

from typing import Annotated

import msgspec

#: the default of policy.decision_cache_size (and of a Transform or DecisionCache built without a config)
DECISION_CACHE_SIZE = 8192


class PolicyConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    file: Annotated[
        str | None,
        msgspec.Meta(description="audit.k8s.io Policy YAML (the file kube-apiserver takes in --audit-policy-file); absent: ship every event as recorded"),
    ] = None
    decision_cache_size: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="policy decisions remembered per distinct request shape (user, verb, resource, path...); 0 evaluates every event against the rules",
        ),
    ] = DECISION_CACHE_SIZE
