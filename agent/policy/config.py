"""`policy:` section of the agent config."""

from __future__ import annotations

from typing import Annotated

import msgspec


class PolicyConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    file: Annotated[
        str | None,
        msgspec.Meta(description="audit.k8s.io Policy YAML (the file kube-apiserver takes in --audit-policy-file); absent: ship every event as recorded"),
    ] = None
