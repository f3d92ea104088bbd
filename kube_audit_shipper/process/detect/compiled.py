"""A `RuleSpec` compiled once into what evaluation calls: the match test, the exception test, getters for its
output fields, dedup key and aggregate groups, the summary template and the index values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET

from kube_audit_shipper.process.detect.aggregate import WindowCounter
from kube_audit_shipper.process.detect.conditions import FEATURES, INDEX_PATHS, Test, compile_condition, feature_values, index_values, parse_ip
from kube_audit_shipper.process.detect.context import EventContext
from kube_audit_shipper.process.detect.getters import Getter, compile_getter
from kube_audit_shipper.process.detect.paths import parse_path
from kube_audit_shipper.process.detect.spec import Exceptions, RuleSpec
from kube_audit_shipper.process.detect.template import Template

_encode = msgspec.json.encode


def compile_getters(paths: tuple[str, ...]) -> tuple[Getter, ...]:
    return tuple(compile_getter(parse_path(path)) for path in paths)


def key_text(value: Any) -> str | None:
    """A value as it goes into a group, dedup or distinct key; None when absent."""
    if value is UNSET or value is None:
        return None
    if type(value) is str:
        return value
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    if type(value) is list:
        value = sorted({key_text(item) or "" for item in value})
        return "\x1e".join(value)
    return _encode(value).decode() if isinstance(value, (dict, bool, int, float)) else str(value)


def output_value(value: Any) -> Any:
    """A field value as JSON-ready builtins (Structs become dicts)."""
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    return value


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Exact names and `prefix*` patterns → a test of one name."""
    exact = frozenset(pattern for pattern in patterns if not pattern.endswith("*"))
    prefixes = tuple(pattern[:-1] for pattern in patterns if pattern.endswith("*"))
    if not prefixes:
        return exact.__contains__
    return lambda name: name in exact or name.startswith(prefixes)


def compile_exceptions(exceptions: Exceptions) -> Test | None:
    """A test that is true for an event the exceptions cover; None when there are none."""
    if not exceptions:
        return None
    users = _matcher(exceptions.users) if exceptions.users else None
    groups = _matcher(exceptions.groups) if exceptions.groups else None
    namespaces = _matcher(exceptions.namespaces) if exceptions.namespaces else None
    agents = _matcher(exceptions.user_agents) if exceptions.user_agents else None
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in exceptions.source_cidrs)
    acting = compile_getter(parse_path("@user"))

    def excluded(ctx: EventContext) -> bool:
        view = ctx.view
        if users is not None:
            user = view.user
            if user and user.username and users(user.username):
                return True
            name = acting(ctx)
            if type(name) is str and users(name):
                return True
        if groups is not None:
            user = view.user
            if user and user.groups and any(groups(group) for group in user.groups if type(group) is str):
                return True
        if namespaces is not None:
            ref = view.objectRef
            if ref and ref.namespace and namespaces(ref.namespace):
                return True
        if agents is not None and view.userAgent and agents(view.userAgent):
            return True
        if networks and view.sourceIPs:
            address = parse_ip(view.sourceIPs[0])
            if address is not None and any(address in network for network in networks):
                return True
        return False

    return excluded


class CompiledRule:
    """One rule ready to evaluate. `slot` is its position in the engine (a small int for per-auditID marks)."""

    __slots__ = (
        "counter",
        "dedup_by",
        "dedup_s",
        "distinct",
        "excluded",
        "fields",
        "group_by",
        "guards",
        "id",
        "index",
        "match",
        "signature",
        "slot",
        "spec",
        "tags",
        "tallies",
        "template",
    )

    def __init__(self, spec: RuleSpec, slot: int, *, max_groups: int, max_distinct: int) -> None:
        self.spec = spec
        self.id = spec.id
        self.slot = slot
        self.match = compile_condition(spec.match)
        self.excluded = compile_exceptions(spec.exceptions)
        self.fields = tuple((name, path[1:] if path.startswith("$") else compile_getter(parse_path(path))) for name, path in spec.fields)
        self.template = Template(spec.output)
        self.tags = spec.all_tags()
        #: per index dimension (verb, resource, subresource): the values the rule can match, None = any
        self.index = tuple(index_values(spec.match, path) for path in INDEX_PATHS)
        #: per feature (FEATURES): the values the rule can match, None = any
        self.guards = tuple(feature_values(spec.match, feature) for feature in FEATURES)
        self.dedup_by = compile_getters(spec.dedup.by) if spec.dedup is not None else ()
        self.dedup_s = spec.dedup.period_s if spec.dedup is not None else 0.0
        aggregate = spec.aggregate
        self.counter: WindowCounter | None = None
        self.group_by: tuple[Getter, ...] = ()
        self.tallies: tuple[Test, ...] = ()
        self.distinct: tuple[tuple[Getter, ...], ...] = ()
        #: what the saved state of this rule must match to be restored
        self.signature = ""
        if aggregate is not None:
            self.counter = WindowCounter(aggregate, max_groups=max_groups, max_distinct=max_distinct)
            self.group_by = compile_getters(aggregate.group_by)
            self.tallies = tuple(compile_condition(condition) for _, condition in aggregate.tally)
            self.distinct = tuple(compile_getters(paths) for _, paths in aggregate.distinct)
            self.signature = _encode([aggregate.group_by, aggregate.window_s, [name for name, _ in aggregate.tally], aggregate.distinct]).decode()

    def candidate_for(self, verb: str, resource: str, subresource: str) -> bool:
        verbs, resources, subresources = self.index
        return (verbs is None or verb in verbs) and (resources is None or resource in resources) and (subresources is None or subresource in subresources)

    def passes(self, features: tuple[Any, ...]) -> bool:
        """Whether an event with these feature values (FEATURES order) can match at all."""
        return all(values is None or feature in values for values, feature in zip(self.guards, features, strict=True))

    def output_fields(self, ctx: EventContext, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, getter in self.fields:
            if not isinstance(getter, str):
                value = getter(ctx)
            elif metrics is not None:
                value = metrics.get(getter, UNSET)
            else:
                value = UNSET
            if value is not UNSET:
                out[name] = output_value(value)
        if self.spec.author:
            out["author"] = self.spec.author
        return out

    def summary(self, fields: dict[str, Any]) -> str:
        return self.template.render({"title": self.spec.title, "rule": self.id, "severity": self.spec.severity, **fields})

    def key(self, getters: tuple[Getter, ...], ctx: EventContext) -> str | None:
        """The group or dedup key of an event: its values joined; None when every value is absent."""
        parts = [key_text(getter(ctx)) for getter in getters]
        if all(part is None for part in parts):
            return None
        return "\x1f".join(part or "" for part in parts)
