"""A parsed path compiled to a getter: `get(ctx)` → the value, a list of values, or UNSET.

Head fields (`verb`, `objectRef.resource`, `user.groups`, `annotations["k"]`) are read from the typed view with
plain attribute access; bodies through the context (decoded once); computed values (`@name`) from `computed`.
Past the first step the walk is generic over dicts, lists, msgspec Structs and raw JSON.

What a getter returns: UNSET when the path leads nowhere (a missing key, JSON null, an index out of range, an
empty `[*]`); otherwise the value. `[*]` gathers the values of every element into a list, flattening lists one
level, so `requestObject.rules[*].verbs` is every verb of every rule. Matching tests each element of a list
value, so "any element matches" is the meaning throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from kube_audit_shipper.process.detect.computed import COMPUTED
from kube_audit_shipper.process.detect.context import BodyError, EventContext, Failed, decode_raw
from kube_audit_shipper.process.detect.paths import INDEX, KEY, Path, Segment
from kube_audit_shipper.process.policy.event import AuditEventWire, ObjectReference, Status, UserInfo

Getter = Callable[[EventContext], Any]

#: Top-level fields kept raw by the decoder: read through the context (decoded once per event).
_RAW_FIELDS = frozenset({"requestObject", "responseObject", "metadata"})
_TYPED_FIELDS = frozenset(AuditEventWire.__struct_fields__) - _RAW_FIELDS
_STRUCTS: dict[str, type[msgspec.Struct]] = {"user": UserInfo, "impersonatedUser": UserInfo, "objectRef": ObjectReference, "responseStatus": Status}


def _plain_fields(struct: type[msgspec.Struct]) -> frozenset[str]:
    """Fields typed `str`, `int` or `list[str]` (or UNSET): never Raw, never None, read as they are."""
    plain = {str | UnsetType, int | UnsetType, list[str] | UnsetType}
    return frozenset(field.name for field in msgspec.structs.fields(struct) if field.type in plain)


#: Per typed struct, the fields whose getter needs no Raw or null check (the hot ones: names, resources, code).
_PLAIN_FIELDS: dict[type[msgspec.Struct], frozenset[str]] = {struct: _plain_fields(struct) for struct in (UserInfo, ObjectReference, Status)}


def walk(value: Any, segments: tuple[Segment, ...], start: int = 0) -> Any:
    """Follow `segments[start:]` from `value`."""
    for position in range(start, len(segments)):
        if value is UNSET or value is None:
            return UNSET
        kind, key, index = segments[position]
        if type(value) is Raw:
            value = _decoded(value)
        if kind == KEY:
            if type(value) is dict:
                value = value.get(key, UNSET)
            elif isinstance(value, msgspec.Struct):
                value = getattr(value, key) if key in value.__struct_fields__ else UNSET
            else:
                return UNSET
        elif kind == INDEX:
            if type(value) is not list or not -len(value) <= index < len(value):
                return UNSET
            value = value[index]
        else:  # EACH
            if type(value) is not list:
                return UNSET
            out: list[Any] = []
            for item in value:
                found = walk(item, segments, position + 1)
                if found is UNSET:
                    continue
                if type(found) is list:
                    out.extend(found)
                else:
                    out.append(found)
            return out or UNSET
    if value is None:
        return UNSET
    if type(value) is Raw:
        return _decoded(value)
    return value


def _decoded(raw: Raw) -> Any:
    value = decode_raw(raw, "a raw field")
    if type(value) is Failed:
        raise BodyError(value.reason)
    return value


def compile_getter(path: Path) -> Getter:
    """The getter of a parsed path (the path's root must be known: `root_problem` says when it is not)."""
    rest = path.rest
    if path.computed:
        compute = COMPUTED[path.root].get
        if not rest:
            return compute
        return lambda ctx: walk(compute(ctx), rest)
    root = path.root
    if root in _RAW_FIELDS:
        if not rest:
            return lambda ctx: ctx.body(root)
        return lambda ctx: walk(ctx.body(root), rest)
    if root not in _TYPED_FIELDS:
        return lambda ctx: walk(ctx.top_field(root), rest)
    if not rest:
        return _head(root)
    if len(rest) == 1 and rest[0].kind == KEY:
        return _head_field(root, rest[0].key)
    return lambda ctx: walk(getattr(ctx.view, root), rest)


def _head(root: str) -> Getter:
    def get(ctx: EventContext) -> Any:
        value = getattr(ctx.view, root)
        return UNSET if value is None else value

    return get


def _head_field(root: str, key: str) -> Getter:
    """`objectRef.resource`, `user.username`, `annotations["k"]`: the hot two-step paths."""
    sub = _struct_type(root)
    if sub is not None and key in _PLAIN_FIELDS.get(sub, ()):

        def get_plain(ctx: EventContext) -> Any:
            parent = getattr(ctx.view, root)
            return getattr(parent, key) if parent else UNSET

        return get_plain
    if sub is not None and key in sub.__struct_fields__:

        def get_attr(ctx: EventContext) -> Any:
            parent = getattr(ctx.view, root)
            if not parent:
                return UNSET
            value = getattr(parent, key)
            if type(value) is Raw:
                return _decoded(value)
            return UNSET if value is None else value

        return get_attr
    if sub is not None:
        return lambda ctx: UNSET  # a field the audit Event does not have (`root_problem` reports it)

    def get_key(ctx: EventContext) -> Any:
        parent = getattr(ctx.view, root)
        if type(parent) is not dict:
            return walk(parent, (Segment(KEY, key),))
        value = parent.get(key, UNSET)
        return UNSET if value is None else value

    return get_key


def _struct_type(root: str) -> type[msgspec.Struct] | None:
    """The Struct type of a typed head field (`user` → UserInfo), None for str/list/dict fields."""
    return _STRUCTS.get(root)


def root_problem(path: Path) -> str | None:
    """Why a path can never yield a value in an audit event (an unknown `@name`, a field Event does not have)."""
    if path.computed:
        if path.root not in COMPUTED:
            return f"unknown computed value {path.root!r}; known: {', '.join(sorted(COMPUTED))}"
        return None
    sub = _struct_type(path.root)
    if sub is not None and path.rest and path.rest[0].kind == KEY and path.rest[0].key not in sub.__struct_fields__:
        return f"{path.root} has no field {path.rest[0].key!r} in audit events (known: {', '.join(sub.__struct_fields__)})"
    if path.root not in _TYPED_FIELDS and path.root not in _RAW_FIELDS and path.root != "authenticationMetadata":
        return f"{path.root!r} is not a field of audit events (audit.k8s.io Event)"
    return None
