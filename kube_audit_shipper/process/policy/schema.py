"""The audit.k8s.io Policy as kube-apiserver reads it: levels, stages and the rule types.

The structs mirror `k8s.io/apiserver/pkg/apis/audit/v1` `Policy`, `PolicyRule` and `GroupResources`
(v1beta1 and v1alpha1 policies have the same shape). They hold a policy that has already been
decoded and checked by `kube_audit_shipper.process.policy.load`; nothing here validates.
"""

from __future__ import annotations

import msgspec

API_GROUP = "audit.k8s.io"
API_VERSION = "audit.k8s.io/v1"
#: Accepted by kube-apiserver 1.21-1.23 with a deprecation warning, rejected since 1.24.
DEPRECATED_API_VERSIONS = ("audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1")
KIND = "Policy"

LEVEL_NONE = "None"
LEVEL_METADATA = "Metadata"
LEVEL_REQUEST = "Request"
LEVEL_REQUEST_RESPONSE = "RequestResponse"
#: The closed set of levels, lowest first; a level's index is its rank (None=0 ... RequestResponse=3).
LEVELS = (LEVEL_NONE, LEVEL_METADATA, LEVEL_REQUEST, LEVEL_REQUEST_RESPONSE)
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
RANK_NONE = 0
RANK_METADATA = 1
RANK_REQUEST = 2
RANK_REQUEST_RESPONSE = 3

#: The closed set of stages, in the order a request goes through them.
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")


class GroupResources(msgspec.Struct, kw_only=True, frozen=True):
    """One entry of a rule's `resources`: an API group and some of its resources."""

    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = msgspec.field(default=(), name="resourceNames")


class PolicyRule(msgspec.Struct, kw_only=True, frozen=True):
    """One rule; an empty selector list means "no constraint"."""

    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = msgspec.field(default=(), name="userGroups")
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = msgspec.field(default=(), name="nonResourceURLs")
    omit_stages: tuple[str, ...] = msgspec.field(default=(), name="omitStages")
    #: Tri-state: None = unset (the policy's value applies).
    omit_managed_fields: bool | None = msgspec.field(default=None, name="omitManagedFields")

    def is_catch_all(self) -> bool:
        """True when the rule has no selector at all, so it matches every request."""
        return not (self.users or self.user_groups or self.verbs or self.resources or self.namespaces or self.non_resource_urls)


class Policy(msgspec.Struct, kw_only=True, frozen=True):
    """A whole audit Policy: ordered rules plus the policy-wide stage and managedFields defaults."""

    rules: tuple[PolicyRule, ...]
    omit_stages: tuple[str, ...] = msgspec.field(default=(), name="omitStages")
    omit_managed_fields: bool = msgspec.field(default=False, name="omitManagedFields")
    api_version: str = msgspec.field(default=API_VERSION, name="apiVersion")
