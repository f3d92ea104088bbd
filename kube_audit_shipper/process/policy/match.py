"""A Policy compiled into a matcher: first matching rule → level, omitStages, omitManagedFields.

Semantics are those of `k8s.io/apiserver/pkg/audit/policy/checker.go` (see the module docstring of
`kube_audit_shipper.process.policy` for the list). Compilation turns every selector list into a frozenset and precomputes each
rule's `Decision` (effective omitStages = policy ∪ rule, omitManagedFields = rule's value if set, else the
policy's), so evaluating a request is a few set look-ups per rule.

`DecisionCache` memoises decisions by a *reduced* attribute key: a user name, namespace or resource name that
no rule mentions cannot change the outcome, so they all share one key. In a real log the number of distinct
keys is small (a few hundred); non-resource paths (scanners) are the only unbounded part, hence the size cap.
"""

from __future__ import annotations

from typing import NamedTuple

from kube_audit_shipper.process.policy.attributes import RequestAttributes, request_attributes
from kube_audit_shipper.process.policy.config import DECISION_CACHE_SIZE
from kube_audit_shipper.process.policy.event import RecordedEvent
from kube_audit_shipper.process.policy.schema import LEVEL_RANK, RANK_NONE, GroupResources, Policy, PolicyRule
from kube_audit_shipper.process.policy.validate import ANY_GROUP

NO_MATCH = "no-match"


def rule_label(index: int) -> str:
    """The stable label of rule `index` (0-based, like kube-apiserver's `rules[i]` field paths)."""
    return f"rule[{index}]"


class Decision(NamedTuple):
    """The outcome of evaluating one request; `level` is a rank (0 None ... 3 RequestResponse)."""

    rule_index: int | None
    label: str
    level: int
    omit_stages: frozenset[str]
    omit_managed_fields: bool


class _GroupResourcesMatcher:
    __slots__ = ("all_resources", "any_group", "any_parent", "any_resource", "exact", "group", "names", "parents")

    def __init__(self, entry: GroupResources) -> None:
        self.any_group = entry.group == ANY_GROUP
        self.group = entry.group
        self.all_resources = not entry.resources
        self.names = frozenset(entry.resource_names) if entry.resource_names else None
        self.any_resource = "*" in entry.resources
        self.exact = frozenset(entry.resources)
        # "*/X": subresource X of any resource; "R/*": resource R with or without a subresource.
        self.any_parent = frozenset(res[2:] for res in entry.resources if res.startswith("*/"))
        self.parents = frozenset(res[:-2] for res in entry.resources if res.endswith("/*"))

    def matches(self, attrs: RequestAttributes) -> bool:
        if not self.any_group and self.group != attrs.api_group:
            return False
        if self.all_resources:
            return True  # every resource and subresource of the group; resourceNames are not consulted
        if self.names is not None and attrs.name not in self.names:
            return False
        if self.any_resource or attrs.resource in self.parents:
            return True
        if attrs.subresource:
            return attrs.resource + "/" + attrs.subresource in self.exact or attrs.subresource in self.any_parent
        return attrs.resource in self.exact


class _RuleMatcher:
    __slots__ = ("any_url", "groups", "kind", "namespaces", "resources", "url_prefixes", "urls", "users", "verbs")

    _ANY, _RESOURCE, _NON_RESOURCE = 0, 1, 2

    def __init__(self, rule: PolicyRule) -> None:
        self.users = frozenset(rule.users) if rule.users else None
        self.groups = frozenset(rule.user_groups) if rule.user_groups else None
        self.verbs = frozenset(rule.verbs) if rule.verbs else None
        if rule.namespaces or rule.resources:
            self.kind = self._RESOURCE  # nonResourceURLs is then ignored entirely
        elif rule.non_resource_urls:
            self.kind = self._NON_RESOURCE
        else:
            self.kind = self._ANY
        self.namespaces = frozenset(rule.namespaces) if rule.namespaces else None
        self.resources = tuple(_GroupResourcesMatcher(entry) for entry in rule.resources)
        self.any_url = "*" in rule.non_resource_urls
        self.urls = frozenset(rule.non_resource_urls)
        self.url_prefixes = tuple(url.rstrip("*") for url in rule.non_resource_urls if url.endswith("*"))

    def matches(self, attrs: RequestAttributes) -> bool:
        if self.users is not None and (attrs.username is None or attrs.username not in self.users):
            return False
        if self.groups is not None and (attrs.username is None or self.groups.isdisjoint(attrs.groups)):
            return False
        if self.verbs is not None and attrs.verb not in self.verbs:
            return False
        if self.kind == self._RESOURCE:
            if not attrs.is_resource:
                return False
            if self.namespaces is not None and attrs.namespace not in self.namespaces:
                return False
            if not self.resources:
                return True
            return any(entry.matches(attrs) for entry in self.resources)
        if self.kind == self._NON_RESOURCE:
            if attrs.is_resource:
                return False
            path = attrs.path
            return self.any_url or path in self.urls or any(path.startswith(p) for p in self.url_prefixes)
        return True


class CompiledPolicy:
    """An immutable, validated policy ready for evaluation. Build it with `compile_policy`."""

    __slots__ = (
        "_groups",
        "_names",
        "_namespaces",
        "_rules",
        "_users",
        "decisions",
        "labels",
        "no_match",
        "policy",
        "uses_resource_names",
    )

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._rules = tuple(_RuleMatcher(rule) for rule in policy.rules)
        policy_stages = frozenset(policy.omit_stages)
        self.decisions = tuple(
            Decision(
                index,
                rule_label(index),
                LEVEL_RANK[rule.level],
                policy_stages | frozenset(rule.omit_stages),
                policy.omit_managed_fields if rule.omit_managed_fields is None else rule.omit_managed_fields,
            )
            for index, rule in enumerate(policy.rules)
        )
        self.no_match = Decision(None, NO_MATCH, RANK_NONE, policy_stages, policy.omit_managed_fields)
        self.labels = (*tuple(d.label for d in self.decisions), NO_MATCH)
        entries = [entry for rule in policy.rules for entry in rule.resources]
        self.uses_resource_names = any(entry.resource_names and entry.resources for entry in entries)
        self._users = frozenset(user for rule in policy.rules for user in rule.users)
        self._groups = frozenset(group for rule in policy.rules for group in rule.user_groups)
        self._namespaces = frozenset(ns for rule in policy.rules for ns in rule.namespaces)
        self._names = frozenset(name for entry in entries for name in entry.resource_names)

    def evaluate(self, attrs: RequestAttributes) -> Decision:
        """The decision for one request: the first matching rule's, or `no_match` (level None)."""
        for rule, decision in zip(self._rules, self.decisions, strict=True):
            if rule.matches(attrs):
                return decision
        return self.no_match

    def cache_key(self, attrs: RequestAttributes) -> tuple[object, ...]:
        """A key such that requests with equal keys always get the same decision."""
        username = attrs.username if attrs.username in self._users else None
        groups = self._groups.intersection(attrs.groups) if self._groups else None
        if not attrs.is_resource:
            return (username, groups, attrs.verb, False, attrs.path)
        namespace = attrs.namespace if attrs.namespace in self._namespaces else None
        name = attrs.name if attrs.name in self._names else None
        return (username, groups, attrs.verb, True, attrs.api_group, attrs.resource, attrs.subresource, namespace, name)

    def catch_all_index(self) -> int | None:
        """Index of the first rule without any selector (it matches everything), if any."""
        for index, rule in enumerate(self.policy.rules):
            if rule.is_catch_all():
                return index
        return None

    def unreachable_rules(self) -> list[int]:
        """Rules after the first catch-all: no request can ever reach them."""
        first = self.catch_all_index()
        return [] if first is None else list(range(first + 1, len(self.policy.rules)))


class DecisionCache:
    """A memo of `CompiledPolicy.evaluate`, one per Transform (not shared), bounded to `max_entries` keys."""

    __slots__ = ("_cache", "_groups", "_namespaces", "_need_name", "_only_group", "_users", "max_entries", "policy")

    def __init__(self, policy: CompiledPolicy, max_entries: int = DECISION_CACHE_SIZE) -> None:
        self.policy = policy
        self.max_entries = max_entries
        self._cache: dict[tuple[object, ...], Decision] = {}
        self._users = policy._users
        self._groups = policy._groups
        self._only_group = next(iter(policy._groups)) if len(policy._groups) == 1 else None
        self._namespaces = policy._namespaces
        self._need_name = policy.uses_resource_names

    def evaluate(self, attrs: RequestAttributes) -> Decision:
        key = self.policy.cache_key(attrs)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._store(key, self.policy.evaluate(attrs))
        return decision

    def evaluate_event(self, event: RecordedEvent) -> Decision:
        """The decision for a recorded event (attributes rebuilt as `request_attributes` does).

        The common case, a resource request with an objectRef under a policy without resourceNames, builds its
        cache key straight from the decoded event; anything else goes through `request_attributes`.
        """
        view = event.view
        ref = view.objectRef
        if not ref or self._need_name:
            return self.evaluate(request_attributes(event, need_name=self._need_name))
        user = view.user
        username = None
        groups: object = None
        if user:
            name = user.username or ""
            user_groups = user.groups
            if (name or user_groups) and name in self._users:  # a user without name nor groups is no user
                username = name
            if self._groups and user_groups:
                # the policy's groups the user is in; with one group in the whole policy (the usual case) whether
                # the user is in it: the same partition of users, without building a set per event
                groups = (self._only_group in user_groups) if self._only_group is not None else self._groups.intersection(user_groups)
        namespace = ref.namespace if ref.namespace in self._namespaces else None
        key = (username, groups, view.verb, ref.apiGroup, ref.apiVersion, ref.resource, ref.subresource, namespace)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._store(key, self.policy.evaluate(request_attributes(event, need_name=False)))
        return decision

    def _store(self, key: tuple[object, ...], decision: Decision) -> Decision:
        if self.max_entries > 0:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[key] = decision
        return decision


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Compile a policy that `kube_audit_shipper.process.policy.load.parse_policy` accepted (levels must be valid)."""
    return CompiledPolicy(policy)
