"""Sigma rules for Kubernetes audit logs (`logsource: {product: kubernetes, service: audit}`) as engine rules.

Supported: field paths (dotted, into the audit JSON), value lists (any), lists of maps (any map), `null` (field
absent), the modifiers `contains`, `startswith`, `endswith`, `all`, `re` (with `i`, `m`, `s`), `cidr`,
`exists`, `gt`/`gte`/`lt`/`lte` and `cased`, wildcards `*`/`?` with `\\` escapes, and conditions with
`and`/`or`/`not`, parentheses, `1 of`/`any of`/`all of` a name, a pattern or `them`. Matching follows the
specification: strings are case-insensitive unless `cased` (regular expressions are case-sensitive unless
`i`), and a number matches the number or its decimal text.

Nothing here fails a load: every rule or feature we cannot evaluate (keyword selections, aggregations,
correlation rules, `base64`/`windash`/`expand`/... modifiers, another logsource) is reported and that rule is
left out. Fields that cannot exist in an audit event (`hostPath` at the top level) and values that can never
match (`responseStatus.code: 'ALLOW'`) are reported as warnings; the rule is loaded as written.

Sigma rules are under the Detection Rule License 1.1: alerts of a Sigma rule carry its `author` field.
"""

from __future__ import annotations

import re
from typing import Any

from kube_audit_shipper.model import Severity
from kube_audit_shipper.process.detect.getters import root_problem
from kube_audit_shipper.process.detect.mitre import TACTIC, TECHNIQUE
from kube_audit_shipper.process.detect.paths import PathError, parse_path
from kube_audit_shipper.process.detect.rulefile import DEFAULT_FIELDS, RULE_ID
from kube_audit_shipper.process.detect.sigma_condition import SigmaConditionError, parse_condition
from kube_audit_shipper.process.detect.spec import AllOf, AnyOf, Condition, Leaf, RuleSpec

_LEVELS: dict[str, Severity] = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
_KNOWN_KEYS = frozenset(
    {
        "title",
        "id",
        "related",
        "name",
        "taxonomy",
        "status",
        "description",
        "license",
        "author",
        "references",
        "date",
        "modified",
        "logsource",
        "detection",
        "fields",
        "falsepositives",
        "level",
        "tags",
        "scope",
    }
)
_SUPPORTED_MODIFIERS = frozenset({"contains", "startswith", "endswith", "all", "re", "i", "m", "s", "cidr", "exists", "gt", "gte", "lt", "lte", "cased"})
_NUMERIC = {"gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}
#: Audit Event fields whose value is always a number.
_NUMBER_FIELDS = frozenset({"responseStatus.code"})
OUTPUT = "{title}: {user} {verb} {resource} {namespace}/{name} (code {code})"


class _Unsupported(Exception):
    pass


def is_sigma_document(document: object) -> bool:
    return isinstance(document, dict) and "detection" in document and ("logsource" in document or "title" in document)


def convert_sigma(document: dict[str, Any], source: str) -> tuple[RuleSpec | None, list[str], list[str]]:
    """(the rule or None, problems that leave it out, warnings) of one Sigma rule document."""
    label = str(document.get("id") or document.get("title") or "?")
    problems: list[str] = []
    warnings: list[str] = []
    if document.get("type") == "correlation" or "correlation" in document:
        return None, [f"{label}: Sigma correlation rules are not supported (use an aggregate rule of ours)"], warnings
    logsource = document.get("logsource")
    if not isinstance(logsource, dict) or logsource.get("product") != "kubernetes" or logsource.get("service") != "audit":
        return None, [f"{label}: logsource {logsource!r} is not {{product: kubernetes, service: audit}}; not loaded"], warnings
    for key in document:
        if key not in _KNOWN_KEYS:
            warnings.append(f"{label}: unknown top-level key {key!r} ignored")
    rule_id = document.get("id")
    if not isinstance(rule_id, str) or not RULE_ID.fullmatch(rule_id):
        return None, [f"{label}: the rule needs an id (letters, digits, '.', '_', ':', '-')"], warnings
    title = document.get("title")
    if not isinstance(title, str) or not title:
        problems.append(f"{label}: title: required")
    level = document.get("level", "medium")
    severity = _LEVELS.get(level) if isinstance(level, str) else None
    if severity is None:
        problems.append(f"{label}: level: {level!r} is not one of {', '.join(_LEVELS)}")
    detection = document.get("detection")
    condition: Condition | None = None
    if not isinstance(detection, dict):
        problems.append(f"{label}: detection: expected a mapping")
    else:
        condition = _detection(detection, label, problems, warnings)
    if problems or condition is None or severity is None or not isinstance(title, str):
        return None, problems, warnings
    mitre, tags = _tags(document.get("tags"))
    fields = list(DEFAULT_FIELDS)
    for extra in document.get("fields") or ():
        if isinstance(extra, str) and not any(name == extra for name, _ in fields) and _path_ok(extra):
            fields.append((extra, extra))
    author = document.get("author")
    description = document.get("description")
    spec = RuleSpec(
        id=rule_id,
        title=title,
        description=description.strip() if isinstance(description, str) else "",
        severity=severity,
        mitre=mitre,
        tags=tags,
        match=condition,
        output=OUTPUT,
        fields=tuple(fields),
        source=source,
        kind="sigma",
        author=str(author) if author else None,
    )
    return spec, problems, warnings


def _path_ok(text: str) -> bool:
    try:
        return root_problem(parse_path(text)) is None
    except PathError:
        return False


def _tags(value: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    mitre: list[str] = []
    tags: list[str] = []
    for tag in value if isinstance(value, list) else ():
        if not isinstance(tag, str):
            continue
        if tag.startswith("attack."):
            name = tag[len("attack.") :]
            if TECHNIQUE.fullmatch(name.upper()):
                mitre.append(name.upper())
                continue
            name = name.replace("_", "-")
            if TACTIC.fullmatch(name):
                mitre.append(name)
                continue
        tags.append(tag)
    return tuple(dict.fromkeys(mitre)), tuple(dict.fromkeys(tags))


def _detection(detection: dict[str, Any], label: str, problems: list[str], warnings: list[str]) -> Condition | None:
    selections: dict[str, Condition | None] = {}
    for name, body in detection.items():
        if name in ("condition", "timeframe"):
            continue
        try:
            selections[str(name)] = _selection(body, f"{label}: {name}", warnings)
        except _Unsupported as exc:
            problems.append(f"{label}: {name}: {exc}")
            selections[str(name)] = None
    if "timeframe" in detection:
        problems.append(f"{label}: timeframe is only used by aggregations, which are not supported")
    raw = detection.get("condition")
    texts = [text for text in (raw if isinstance(raw, list) else [raw]) if isinstance(text, str)]
    if not texts or len(texts) != (len(raw) if isinstance(raw, list) else 1):
        problems.append(f"{label}: condition: expected a string (or a list of strings)")
        return None
    trees = []
    for text in texts:
        try:
            trees.append(parse_condition(text, selections))
        except SigmaConditionError as exc:
            problems.append(f"{label}: condition: {exc}")
            return None
    return trees[0] if len(trees) == 1 else AnyOf(tuple(trees))


def _selection(body: object, where: str, warnings: list[str]) -> Condition:
    if isinstance(body, dict):
        return _mapping(body, where, warnings)
    if isinstance(body, list) and body and all(isinstance(item, dict) for item in body):
        items = tuple(_mapping(item, where, warnings) for item in body)
        return items[0] if len(items) == 1 else AnyOf(items)
    raise _Unsupported("keyword selections (a list of values searched anywhere in the event) are not supported; name the field")


def _mapping(body: dict[str, Any], where: str, warnings: list[str]) -> Condition:
    if not body:
        raise _Unsupported("an empty selection")
    items = tuple(_field(str(key), value, where, warnings) for key, value in body.items())
    return items[0] if len(items) == 1 else AllOf(items)


def _field(key: str, value: object, where: str, warnings: list[str]) -> Condition:
    field, *modifiers = key.split("|")
    if not field:
        raise _Unsupported(f"{key!r}: a value without a field name (keyword search) is not supported")
    unknown = [modifier for modifier in modifiers if modifier not in _SUPPORTED_MODIFIERS]
    if unknown:
        raise _Unsupported(f"{key!r}: modifier {'|'.join(unknown)} is not supported")
    path = _sigma_path(field)
    parsed = parse_path(path)
    why = root_problem(parsed)
    if why is not None:
        warnings.append(f"{where}: field {field!r} cannot exist in audit events ({why}); the selection never matches")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Unsupported(f"{key!r}: an empty list of values")
    join_all = "all" in modifiers
    tests = [_value_test(path, field, item, modifiers, where, warnings) for item in values]
    if len(tests) == 1:
        return tests[0]
    return AllOf(tuple(tests)) if join_all else AnyOf(tuple(tests))


def _sigma_path(field: str) -> str:
    """A Sigma field name (dotted) in our path syntax; segments that need it are quoted."""
    parts = field.split(".")
    out = parts[0]
    for part in parts[1:]:
        out += f".{part}" if part and re.fullmatch(r"[^.\[\]\"'\s]+", part) else '["' + part.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


def _value_test(path: str, field: str, value: object, modifiers: list[str], where: str, warnings: list[str]) -> Condition:
    cased = "cased" in modifiers
    if "exists" in modifiers:
        if not isinstance(value, bool):
            raise _Unsupported(f"{field}|exists: expected true or false")
        return Leaf(path=path, ops=(("exists", value),))
    numeric = [_NUMERIC[modifier] for modifier in modifiers if modifier in _NUMERIC]
    if numeric:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Unsupported(f"{field}|{numeric[0]}: expected a number")
        return Leaf(path=path, ops=((numeric[0], value),))
    if value is None:
        return Leaf(path=path, ops=(("exists", False),))
    if "cidr" in modifiers:
        return Leaf(path=path, ops=(("cidr", (str(value),)),))
    if "re" in modifiers:
        flags = "".join(flag for flag in ("i", "m", "s") if flag in modifiers)
        pattern = str(value)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Unsupported(f"{field}|re: the expression does not compile in Python: {exc}") from None
        return Leaf(path=path, ops=(("regex", f"(?{flags}){pattern}" if flags else pattern),), ignore_case=False)
    if isinstance(value, bool):
        return Leaf(path=path, ops=(("equals", value),))
    if isinstance(value, (int, float)):
        return AnyOf((Leaf(path=path, ops=(("equals", value),)), Leaf(path=path, ops=(("equals", str(value)),))))
    text = str(value)
    if path in _NUMBER_FIELDS and not re.fullmatch(r"-?\d+", text.strip("*")):
        warnings.append(f"{where}: {field} is a number in audit events; {text!r} never matches it")
    position = "contains" if "contains" in modifiers else "startswith" if "startswith" in modifiers else "endswith" if "endswith" in modifiers else "equals"
    literal, wildcard = _unescape(text)
    if not wildcard:
        if path in _NUMBER_FIELDS and re.fullmatch(r"-?\d+", literal):
            return AnyOf((Leaf(path=path, ops=(("equals", literal),), ignore_case=not cased), Leaf(path=path, ops=(("equals", int(literal)),))))
        return Leaf(path=path, ops=((position, literal),), ignore_case=not cased)
    pattern = _wildcard_regex(text)
    pattern = {"contains": f".*{pattern}.*", "startswith": f"{pattern}.*", "endswith": f".*{pattern}", "equals": pattern}[position]
    return Leaf(path=path, ops=(("regex", f"(?s)^(?:{pattern})$"),), ignore_case=not cased)


def _unescape(text: str) -> tuple[str, bool]:
    """(text with Sigma escapes removed, whether it has an unescaped wildcard)."""
    out: list[str] = []
    wildcard = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "*?\\":
            out.append(text[index + 1])
            index += 2
            continue
        if char in "*?":
            wildcard = True
        out.append(char)
        index += 1
    return "".join(out), wildcard


def _wildcard_regex(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "*?\\":
            out.append(re.escape(text[index + 1]))
            index += 2
            continue
        out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        index += 1
    return "".join(out)
