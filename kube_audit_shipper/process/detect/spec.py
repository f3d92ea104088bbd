"""A rule as loaded and checked, before compilation: what `rules list` shows and what tuning edits.

Both rule sources end here: our YAML format (`load`) and Sigma rules (`sigma`). Conditions are trees of
`Leaf` (one path, one or more operators that must all hold for some value of the path), `AllOf`, `AnyOf`
and `Not`. Everything is immutable; tuning makes changed copies (`msgspec.structs.replace`).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from kube_audit_shipper.model import Severity

#: Leaf operators: value operators test each value of the path; `exists` tests the path itself.
VALUE_OPERATORS = ("equals", "in", "contains", "startswith", "endswith", "regex", "cidr", "gt", "ge", "lt", "le")
OPERATORS = (*VALUE_OPERATORS, "exists")
#: Operators whose value may be one string or a list of strings (any one may match).
STRING_LIST_OPERATORS = frozenset({"contains", "startswith", "endswith", "regex", "cidr"})
NUMERIC_OPERATORS = frozenset({"gt", "ge", "lt", "le"})
#: Stages at which rules are evaluated. RequestReceived is skipped: it has no response and precedes
#: authorization, and the same request is recorded again at a later stage.
EVALUATED_STAGES = ("ResponseStarted", "ResponseComplete", "Panic")


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    ops: tuple[tuple[str, Any], ...]
    ignore_case: bool = False


class AllOf(msgspec.Struct, frozen=True):
    items: tuple[Condition, ...]


class AnyOf(msgspec.Struct, frozen=True):
    items: tuple[Condition, ...]


class Not(msgspec.Struct, frozen=True):
    item: Condition


Condition = Leaf | AllOf | AnyOf | Not


class Exceptions(msgspec.Struct, frozen=True, kw_only=True):
    """Events of these users, groups, namespaces, user agents or client networks never raise the rule.

    Names ending in `*` are prefixes; others are exact."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()
    source_cidrs: tuple[str, ...] = ()

    def merged(self, other: Exceptions) -> Exceptions:
        return Exceptions(
            users=_union(self.users, other.users),
            groups=_union(self.groups, other.groups),
            namespaces=_union(self.namespaces, other.namespaces),
            user_agents=_union(self.user_agents, other.user_agents),
            source_cidrs=_union(self.source_cidrs, other.source_cidrs),
        )

    def __bool__(self) -> bool:
        return bool(self.users or self.groups or self.namespaces or self.user_agents or self.source_cidrs)


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(item for item in second if item not in first)


Bounds = tuple[tuple[Literal["gt", "ge", "lt", "le"], float], ...]


class Aggregate(msgspec.Struct, frozen=True, kw_only=True):
    """Count the events that match the rule per group over an event-time window; alert past the thresholds.

    Metrics: `count` (events of the group in the window, each auditID once), each tally `<name>` (events of the
    group that also match its condition) and `<name>_ratio` (tally / count), each distinct `<name>` (distinct
    values of its paths among the group's events)."""

    group_by: tuple[str, ...]
    window_s: float
    tally: tuple[tuple[str, Condition], ...] = ()
    distinct: tuple[tuple[str, tuple[str, ...]], ...] = ()
    threshold: tuple[tuple[str, Bounds], ...] = ()
    #: after an alert, the group stays quiet this long (event time); default: the window
    dedup_s: float | None = None

    def metric_names(self) -> tuple[str, ...]:
        names = ["count"]
        for name, _ in self.tally:
            names += [name, f"{name}_ratio"]
        names += [name for name, _ in self.distinct]
        return tuple(names)


class Dedup(msgspec.Struct, frozen=True, kw_only=True):
    """One alert per rule and key (the values of `by`) per `period_s` of event time; the rest are counted."""

    by: tuple[str, ...]
    period_s: float


RuleKind = Literal["rule", "sigma"]


class RuleSpec(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str
    description: str = ""
    severity: Severity
    #: MITRE ATT&CK technique ids (T1609) and tactic names (execution)
    mitre: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    enabled: bool = True
    match: Condition
    exceptions: Exceptions = Exceptions()
    #: summary template: `{field}` placeholders name output fields
    output: str
    #: output fields: name → path (or `$metric` for an aggregate)
    fields: tuple[tuple[str, str], ...]
    dedup: Dedup | None = None
    aggregate: Aggregate | None = None
    #: where it was loaded from: `builtin:<file>` or a path
    source: str
    kind: RuleKind = "rule"
    #: the rule's author, for rules whose licence requires naming them in alerts (Sigma's DRL)
    author: str | None = None

    def all_tags(self) -> list[str]:
        return list(self.mitre) + [tag for tag in self.tags if tag not in self.mitre]


def leaves(condition: Condition) -> list[Leaf]:
    """Every leaf of a condition tree, in order."""
    if isinstance(condition, Leaf):
        return [condition]
    if isinstance(condition, Not):
        return leaves(condition.item)
    return [leaf for item in condition.items for leaf in leaves(item)]


def rule_paths(spec: RuleSpec, *, with_fields: bool = True) -> list[str]:
    """Every path a rule reads: condition, dedup, aggregate and (unless `with_fields` is false) output fields."""
    paths = [leaf.path for leaf in leaves(spec.match)]
    if with_fields:
        paths += [path for _, path in spec.fields if not path.startswith("$")]
    if spec.dedup is not None:
        paths += list(spec.dedup.by)
    if spec.aggregate is not None:
        paths += list(spec.aggregate.group_by)
        for _, condition in spec.aggregate.tally:
            paths += [leaf.path for leaf in leaves(condition)]
        for _, distinct_paths in spec.aggregate.distinct:
            paths += list(distinct_paths)
    return paths
