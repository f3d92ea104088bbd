"""Condition trees compiled into closures: `test(ctx) -> bool`, built once per rule.

A leaf holds when *some* value of its path satisfies *every* operator of the leaf (a list value, or the values
`[*]` gathers, are tested element by element); `exists: true` holds when the path yields at least one value,
`exists: false` when it yields none. Operators are typed: `equals: 403` matches the number 403, not the string
"403"; `true`/`false` match booleans only; string operators never match a number; numeric comparisons never
match a string. `ignore_case` folds case for the string operators.

`index_values` reads, from the top of a condition, which verbs/resources/subresources can possibly match, so
the engine tests an event only against rules that can fire on it; `feature_values` does the same for a few
cheap event features (status code, impersonation, public client address) that rules without a verb or resource
(permission probing, impersonation, failures from public addresses) pin instead.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from msgspec import UNSET

from kube_audit_shipper.process.detect.context import EventContext
from kube_audit_shipper.process.detect.getters import Getter, compile_getter
from kube_audit_shipper.process.detect.paths import parse_path
from kube_audit_shipper.process.detect.spec import AllOf, Condition, Leaf, Not

Test = Callable[[EventContext], bool]
Predicate = Callable[[Any], bool]

#: Head paths whose value is always a string or absent: their equals/in leaves need no per-value dispatch.
_STRING_HEAD_PATHS = frozenset(
    {
        "verb",
        "stage",
        "level",
        "auditID",
        "requestURI",
        "userAgent",
        "objectRef.resource",
        "objectRef.subresource",
        "objectRef.namespace",
        "objectRef.name",
        "objectRef.apiGroup",
        "objectRef.apiVersion",
        "user.username",
        "impersonatedUser.username",
    }
)
#: Paths whose value is always an int (typed view) or absent.
_INT_PATHS = frozenset({"responseStatus.code", "@code"})
#: Paths whose value is always a bool or absent.
_BOOL_PATHS = frozenset({"@source_ip_public"})
#: Paths whose value is always a list of strings or absent.
_STRING_LIST_HEAD_PATHS = frozenset({"user.groups", "impersonatedUser.groups", "sourceIPs"})
#: Index dimensions: the path each reads.
INDEX_PATHS = ("verb", "objectRef.resource", "objectRef.subresource")
#: Event features a rule may pin, beyond the index: the status code (an int, or UNSET), whether the request was
#: impersonated (bool), whether the client address is public (bool, or UNSET). The paths each is read from.
FEATURES = ("code", "impersonated", "public")
_FEATURE_PATHS = {"code": ("@code", "responseStatus.code"), "impersonated": ("impersonatedUser",), "public": ("@source_ip_public",)}


@functools.lru_cache(maxsize=8192)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _predicate(op: str, value: Any, ignore_case: bool) -> Predicate:
    """A test of one value of the path against one operator."""
    fold: Callable[[str], str] = str.casefold if ignore_case else str
    if op == "equals":
        return _equals(value, ignore_case)
    if op == "in":
        tests = [_equals(item, ignore_case) for item in value]
        strings = frozenset(fold(item) for item in value if isinstance(item, str))
        if len(strings) == len(tests):
            return (lambda x: type(x) is str and x.casefold() in strings) if ignore_case else (lambda x: type(x) is str and x in strings)
        return lambda x: any(test(x) for test in tests)
    if op == "contains":
        needles = tuple(fold(item) for item in _strings(value))
        if ignore_case:
            return lambda x: type(x) is str and any(needle in x.casefold() for needle in needles)
        if len(needles) == 1:
            needle = needles[0]
            return lambda x: type(x) is str and needle in x
        return lambda x: type(x) is str and any(needle in x for needle in needles)
    if op == "startswith":
        prefixes = tuple(fold(item) for item in _strings(value))
        return (lambda x: type(x) is str and x.casefold().startswith(prefixes)) if ignore_case else (lambda x: type(x) is str and x.startswith(prefixes))
    if op == "endswith":
        suffixes = tuple(fold(item) for item in _strings(value))
        return (lambda x: type(x) is str and x.casefold().endswith(suffixes)) if ignore_case else (lambda x: type(x) is str and x.endswith(suffixes))
    if op == "regex":
        flags = re.IGNORECASE if ignore_case else 0
        patterns = tuple(re.compile(item, flags) for item in _strings(value))
        if len(patterns) == 1:
            search = patterns[0].search
            return lambda x: type(x) is str and search(x) is not None
        return lambda x: type(x) is str and any(pattern.search(x) is not None for pattern in patterns)
    if op == "cidr":
        networks = tuple(ipaddress.ip_network(item, strict=False) for item in _strings(value))

        def in_networks(x: Any) -> bool:
            if type(x) is not str:
                return False
            address = parse_ip(x)
            return address is not None and any(address in network for network in networks)

        return in_networks
    bound = value
    if op == "gt":
        return lambda x: is_number(x) and x > bound
    if op == "ge":
        return lambda x: is_number(x) and x >= bound
    if op == "lt":
        return lambda x: is_number(x) and x < bound
    if op == "le":
        return lambda x: is_number(x) and x <= bound
    raise ValueError(f"unknown operator {op!r}")


def _equals(expected: Any, ignore_case: bool) -> Predicate:
    if expected is True or expected is False:
        return lambda x: x is expected
    if is_number(expected):
        return lambda x: is_number(x) and x == expected
    if expected is None:
        return lambda x: False  # null reads as absent: use exists: false
    if ignore_case:
        folded = str(expected).casefold()
        return lambda x: type(x) is str and x.casefold() == folded
    return lambda x: type(x) is str and x == expected


def compile_leaf(leaf: Leaf) -> Test:
    path = parse_path(leaf.path)
    get = compile_getter(path)
    ops = dict(leaf.ops)
    if "exists" in ops:
        return _exists(get, bool(ops["exists"]))
    if len(ops) == 1 and not leaf.ignore_case:
        fast = _typed_leaf(leaf.path, get, *next(iter(ops.items())))
        if fast is not None:
            return fast
    predicates = [_predicate(op, value, leaf.ignore_case) for op, value in leaf.ops]
    if len(predicates) == 1:
        predicate = predicates[0]
    else:
        parts = tuple(predicates)

        def predicate(x: Any) -> bool:
            return all(part(x) for part in parts)

    def test(ctx: EventContext) -> bool:
        value = get(ctx)
        if value is UNSET:
            return False
        if type(value) is list:
            for item in value:  # noqa: SIM110  # a loop, not a generator per call: the hot path
                if predicate(item):
                    return True
            return False
        return predicate(value)

    return test


def _typed_leaf(path: str, get: Getter, op: str, value: Any) -> Test | None:
    """A leaf on a path whose type is known (a string, an int, a bool, a list of strings, or absent): one
    comparison, no per-value dispatch. None when the general test is needed."""
    if path in _STRING_HEAD_PATHS:
        if op == "equals" and isinstance(value, str):
            return _head_equals(path, value)
        if op == "in" and all(isinstance(item, str) for item in value):
            members = frozenset(value)
            return _head_in(path, members)
    elif path in _INT_PATHS and is_number(value):
        if op == "equals":
            return lambda ctx: get(ctx) == value
        compare = {"gt": int.__gt__, "ge": int.__ge__, "lt": int.__lt__, "le": int.__le__}.get(op)
        if compare is not None and type(value) is int:
            return lambda ctx: type(found := get(ctx)) is int and compare(found, value)
    elif path in _BOOL_PATHS and op == "equals" and isinstance(value, bool):
        return lambda ctx: get(ctx) is value
    elif path in _STRING_LIST_HEAD_PATHS and op == "equals" and isinstance(value, str):
        return lambda ctx: (found := get(ctx)) is not UNSET and value in found
    return None


def _head_equals(path: str, value: str) -> Test:
    """`value of path == value` for a string head path (`verb`, `objectRef.resource`), the field read inline: one
    call per leaf, not two. An absent value (UNSET, or no parent struct) is never equal, as through the getter."""
    root, _, key = path.partition(".")
    if not key:
        return lambda ctx: getattr(ctx.view, root) == value

    def test(ctx: EventContext) -> bool:
        parent = getattr(ctx.view, root)
        return bool(parent) and getattr(parent, key) == value

    return test


def _head_in(path: str, members: frozenset[str]) -> Test:
    """`value of path in members`, as `_head_equals`."""
    root, _, key = path.partition(".")
    if not key:
        return lambda ctx: getattr(ctx.view, root) in members

    def test(ctx: EventContext) -> bool:
        parent = getattr(ctx.view, root)
        return bool(parent) and getattr(parent, key) in members

    return test


def _exists(get: Getter, wanted: bool) -> Test:
    def test(ctx: EventContext) -> bool:
        value = get(ctx)
        present = value is not UNSET and (type(value) is not list or bool(value))
        return present is wanted

    return test


def compile_condition(condition: Condition) -> Test:
    if isinstance(condition, Leaf):
        return compile_leaf(condition)
    if isinstance(condition, Not):
        inner = compile_condition(condition.item)
        return lambda ctx: not inner(ctx)
    parts = tuple(compile_condition(item) for item in condition.items)
    if isinstance(condition, AllOf):
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            first, second = parts
            return lambda ctx: first(ctx) and second(ctx)
        if len(parts) == 3:
            first, second, third = parts
            return lambda ctx: first(ctx) and second(ctx) and third(ctx)
        if len(parts) == 4:
            first, second, third, fourth = parts
            return lambda ctx: first(ctx) and second(ctx) and third(ctx) and fourth(ctx)

        def all_of(ctx: EventContext) -> bool:
            for part in parts:  # noqa: SIM110  # a loop, not a generator per call: the hot path
                if not part(ctx):
                    return False
            return True

        return all_of
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda ctx: first(ctx) or second(ctx)

    def any_of(ctx: EventContext) -> bool:
        for part in parts:  # noqa: SIM110  # a loop, not a generator per call: the hot path
            if part(ctx):
                return True
        return False

    return any_of


def index_values(condition: Condition, path: str) -> frozenset[str] | None:
    """The values `path` must have for the condition to hold (absent = ""), or None when it may be anything."""
    if isinstance(condition, Leaf):
        if condition.path != path or condition.ignore_case:
            return None
        ops = dict(condition.ops)
        if ops.get("exists") is False:
            return frozenset({""})
        if "equals" in ops and isinstance(ops["equals"], str):
            return frozenset({ops["equals"]})
        if "in" in ops and all(isinstance(item, str) for item in ops["in"]):
            return frozenset(ops["in"])
        return None
    if isinstance(condition, Not):
        return None
    return _combined(condition, [index_values(item, path) for item in condition.items])


def feature_values(condition: Condition, feature: str) -> frozenset[Any] | None:
    """The values `feature` (one of FEATURES) must have for the condition to hold, or None when it may be anything.

    Only leaves whose outcome the feature decides by itself count: `equals`/`in` numbers on the code (a number
    equals only a number), `exists` on impersonatedUser (`exists` ignores any other operator of its leaf), `equals`
    true/false on `@source_ip_public`; combined as `index_values` combines its leaves.
    """
    if isinstance(condition, Leaf):
        if condition.path not in _FEATURE_PATHS[feature] or condition.ignore_case:
            return None
        ops = dict(condition.ops)
        if feature == "impersonated":
            wanted = ops.get("exists")
            return frozenset({wanted}) if isinstance(wanted, bool) else None
        if "exists" in ops:
            return None
        if feature == "public":
            value = ops.get("equals")
            return frozenset({value}) if isinstance(value, bool) else None
        if "equals" in ops and is_number(ops["equals"]):
            return frozenset({ops["equals"]})
        if "in" in ops and ops["in"] and all(is_number(item) for item in ops["in"]):
            return frozenset(ops["in"])
        return None
    if isinstance(condition, Not):
        return None
    return _combined(condition, [feature_values(item, feature) for item in condition.items])


def _combined(condition: Condition, found: list[frozenset[Any] | None]) -> frozenset[Any] | None:
    """The values a group of conditions allows, from those of its items (None: anything): all of them, the
    intersection of the known ones; any of them, the union, unless one item allows anything."""
    if isinstance(condition, AllOf):
        known = [values for values in found if values is not None]
        return frozenset.intersection(*known) if known else None
    if any(values is None for values in found) or not found:
        return None
    return frozenset().union(*[values for values in found if values is not None])
