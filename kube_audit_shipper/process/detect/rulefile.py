"""Our rule format (docs/rules.md) read from parsed YAML into `RuleSpec`s, every problem with its key path.

Nothing stops at the first error: each rule, condition, operator and field is checked on its own and every
problem is reported as `rules[3].match.and[1].regex: ...` (the caller prefixes the file), so `validate` and
`rules lint` show them all at once. A rule with any error is left out.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, cast

from kube_audit_shipper.model import SEVERITIES, Severity
from kube_audit_shipper.process.detect.getters import root_problem
from kube_audit_shipper.process.detect.mitre import tag_problem
from kube_audit_shipper.process.detect.paths import PathError, parse_path
from kube_audit_shipper.process.detect.spec import (
    NUMERIC_OPERATORS,
    OPERATORS,
    STRING_LIST_OPERATORS,
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    Dedup,
    Exceptions,
    Leaf,
    Not,
    RuleSpec,
)
from kube_audit_shipper.process.detect.template import Template, TemplateError

RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_FILE_KEYS = frozenset({"rules"})
_RULE_KEYS = frozenset({"id", "title", "description", "severity", "mitre", "tags", "enabled", "match", "exceptions", "output", "fields", "dedup", "aggregate"})
_EXCEPTION_KEYS = ("users", "groups", "namespaces", "user_agents", "source_cidrs")
_AGGREGATE_KEYS = frozenset({"group_by", "window_s", "tally", "distinct", "threshold", "dedup_s"})
_BOUND_KEYS = ("gt", "ge", "lt", "le")
_MAX_WINDOW_S = 7 * 86400
#: Output fields a rule gets when it names none.
DEFAULT_FIELDS: tuple[tuple[str, str], ...] = (
    ("user", "@user"),
    ("source_ip", "@source_ip"),
    ("verb", "verb"),
    ("resource", "@resource"),
    ("namespace", "objectRef.namespace"),
    ("name", "objectRef.name"),
    ("code", "@code"),
    ("user_agent", "userAgent"),
)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """Collects problems while converting one document."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value: object, where: str, known: frozenset[str] | tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(where, f"expected a mapping, got {_kind(value)}")
            return None
        for key in value:
            if key not in known:
                self.problem(f"{where}.{key}", f"unknown key; known keys: {', '.join(sorted(known))}")
        return value

    def string(self, value: object, where: str, *, empty: bool = False) -> str | None:
        if not isinstance(value, str) or (not empty and not value):
            self.problem(where, f"expected a {'' if empty else 'non-empty '}string, got {_kind(value)}")
            return None
        return value

    def strings(self, value: object, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problem(where, f"expected a list of strings, got {_kind(value)}")
            return ()
        out = []
        for index, item in enumerate(value):
            text = self.string(item, f"{where}[{index}]")
            if text is not None:
                out.append(text)
        return tuple(out)

    def number(self, value: object, where: str, *, low: float = 0.0, high: float | None = None) -> float | None:
        if not _is_number(value) or value <= low or (high is not None and value > high):  # type: ignore[operator]
            bounds = f"> {low:g}" + (f" and <= {high:g}" if high is not None else "")
            self.problem(where, f"expected a number {bounds}, got {_kind(value)}")
            return None
        return float(value)  # type: ignore[arg-type]

    def path(self, value: object, where: str) -> str | None:
        try:
            parsed = parse_path(value)
        except PathError as exc:
            self.problem(where, str(exc))
            return None
        why = root_problem(parsed)
        if why is not None:
            self.problem(where, why)
            return None
        return parsed.text

    # ---- conditions ------------------------------------------------------------------------------------------
    def condition(self, value: object, where: str) -> Condition | None:
        if not isinstance(value, dict) or not value:
            self.problem(where, f"expected a condition (a mapping with and/or/not, or field plus operators), got {_kind(value)}")
            return None
        combinators = [key for key in ("and", "or", "not") if key in value]
        if combinators:
            if len(value) != 1:
                self.problem(where, f"{combinators[0]!r} must be alone in its mapping; put the other tests inside it")
                return None
            key = combinators[0]
            if key == "not":
                inner = self.condition(value["not"], f"{where}.not")
                return Not(inner) if inner is not None else None
            items = value[key]
            if not isinstance(items, list) or not items:
                self.problem(f"{where}.{key}", f"expected a non-empty list of conditions, got {_kind(items)}")
                return None
            parts = [self.condition(item, f"{where}.{key}[{index}]") for index, item in enumerate(items)]
            if any(part is None for part in parts):
                return None
            cleaned = tuple(part for part in parts if part is not None)
            return AllOf(cleaned) if key == "and" else AnyOf(cleaned)
        return self.leaf(value, where)

    def leaf(self, value: dict[str, Any], where: str) -> Leaf | None:
        unknown = [key for key in value if key not in ("field", "ignore_case", *OPERATORS)]
        for key in unknown:
            self.problem(f"{where}.{key}", f"unknown key; a leaf has field, ignore_case and operators ({', '.join(OPERATORS)})")
        if "field" not in value:
            self.problem(where, "a leaf needs field: <path> (or use and/or/not)")
            return None
        path = self.path(value["field"], f"{where}.field")
        ignore_case = value.get("ignore_case", False)
        if not isinstance(ignore_case, bool):
            self.problem(f"{where}.ignore_case", f"expected true or false, got {_kind(ignore_case)}")
        ops = [(key, value[key]) for key in OPERATORS if key in value]
        if not ops:
            if not unknown:  # an unknown key is most likely the operator, misspelt: reported already
                self.problem(where, f"no operator; use one of {', '.join(OPERATORS)}")
            return None
        if "exists" in value and len(ops) > 1:
            self.problem(where, "exists cannot be combined with other operators (they imply exists: true)")
            return None
        checked = [self.operand(op, operand, f"{where}.{op}") for op, operand in ops]
        if path is None or unknown or not isinstance(ignore_case, bool) or any(item is None for item in checked):
            return None
        return Leaf(path=path, ops=tuple((op, operand) for (op, _), operand in zip(ops, checked, strict=True)), ignore_case=ignore_case)

    def operand(self, op: str, value: object, where: str) -> object:
        """The operand checked (lists become tuples); None (after a reported problem) when invalid."""
        if op == "exists":
            if isinstance(value, bool):
                return value
            self.problem(where, f"expected true or false, got {_kind(value)}")
            return None
        if op in NUMERIC_OPERATORS:
            if _is_number(value):
                return value
            self.problem(where, f"expected a number, got {_kind(value)}")
            return None
        if op == "equals":
            if value is None or isinstance(value, (str, bool, int, float)):
                if value is None:
                    self.problem(where, "null reads as absent; use exists: false")
                    return None
                return value
            self.problem(where, f"expected a string, number or boolean, got {_kind(value)}")
            return None
        if op == "in":
            if not isinstance(value, list) or not value or not all(isinstance(item, (str, bool, int, float)) for item in value):
                self.problem(where, f"expected a non-empty list of strings, numbers or booleans, got {_kind(value)}")
                return None
            return tuple(value)
        assert op in STRING_LIST_OPERATORS
        items = self.strings(value, where)
        if not items:
            if value is not None and not (isinstance(value, list) and value):
                self.problem(where, "expected a string or a non-empty list of strings")
            return None
        for index, item in enumerate(items):
            spot = where if isinstance(value, str) else f"{where}[{index}]"
            if op == "regex":
                try:
                    re.compile(item)
                except re.error as exc:
                    self.problem(spot, f"invalid regular expression: {exc}")
                    return None
            elif op == "cidr":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    self.problem(spot, f"not a CIDR or IP address: {item!r}")
                    return None
        return items[0] if isinstance(value, str) else items

    # ---- parts of a rule -------------------------------------------------------------------------------------
    def exceptions(self, value: object, where: str) -> Exceptions:
        if value is None:
            return Exceptions()
        fields = self.mapping(value, where, _EXCEPTION_KEYS)
        if fields is None:
            return Exceptions()
        found = {key: self.strings(fields.get(key), f"{where}.{key}") for key in _EXCEPTION_KEYS}
        for index, cidr in enumerate(found["source_cidrs"]):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                self.problem(f"{where}.source_cidrs[{index}]", f"not a CIDR or IP address: {cidr!r}")
        return Exceptions(**found)

    def bounds(self, value: object, where: str) -> tuple[tuple[Any, float], ...] | None:
        fields = self.mapping(value, where, _BOUND_KEYS)
        if fields is None:
            return None
        if not fields:
            self.problem(where, f"give at least one of {', '.join(_BOUND_KEYS)}")
            return None
        out = []
        for key in _BOUND_KEYS:
            if key in fields:
                if not _is_number(fields[key]):
                    self.problem(f"{where}.{key}", f"expected a number, got {_kind(fields[key])}")
                    return None
                out.append((key, float(fields[key])))
        return tuple(out)

    def aggregate(self, value: object, where: str) -> Aggregate | None:
        fields = self.mapping(value, where, _AGGREGATE_KEYS)
        if fields is None:
            return None
        before = len(self.problems)
        group_by = tuple(
            path
            for index, item in enumerate(self.strings(fields.get("group_by"), f"{where}.group_by"))
            if (path := self.path(item, f"{where}.group_by[{index}]"))
        )
        if not group_by and "group_by" not in fields:
            self.problem(f"{where}.group_by", 'required: the paths whose values form a group (e.g. ["@source_ip"])')
        window = self.number(fields.get("window_s"), f"{where}.window_s", high=_MAX_WINDOW_S)
        tally: list[tuple[str, Condition]] = []
        tally_fields = self.mapping(fields.get("tally", {}), f"{where}.tally", tuple(fields.get("tally") or {}))
        for name, condition in (tally_fields or {}).items():
            parsed = self.condition(condition, f"{where}.tally.{name}")
            if parsed is not None:
                tally.append((str(name), parsed))
        distinct: list[tuple[str, tuple[str, ...]]] = []
        distinct_fields = self.mapping(fields.get("distinct", {}), f"{where}.distinct", tuple(fields.get("distinct") or {}))
        for name, paths in (distinct_fields or {}).items():
            checked = [self.path(item, f"{where}.distinct.{name}[{index}]") for index, item in enumerate(self.strings(paths, f"{where}.distinct.{name}"))]
            if checked and all(checked):
                distinct.append((str(name), tuple(path for path in checked if path)))
            elif not checked:
                self.problem(f"{where}.distinct.{name}", "expected one path or a list of paths")
        dedup = fields.get("dedup_s")
        dedup_s = self.number(dedup, f"{where}.dedup_s", high=_MAX_WINDOW_S) if dedup is not None else None
        spec = Aggregate(group_by=group_by, window_s=window or 1.0, tally=tuple(tally), distinct=tuple(distinct), dedup_s=dedup_s)
        names = spec.metric_names()
        threshold: list[tuple[str, Any]] = []
        threshold_fields = self.mapping(fields.get("threshold"), f"{where}.threshold", names) if "threshold" in fields else None
        if "threshold" not in fields:
            self.problem(f"{where}.threshold", f"required: bounds on the metrics ({', '.join(names)})")
        for name, bounds in (threshold_fields or {}).items():
            if name in names:
                checked_bounds = self.bounds(bounds, f"{where}.threshold.{name}")
                if checked_bounds is not None:
                    threshold.append((name, checked_bounds))
        if len(self.problems) != before:
            return None
        return Aggregate(group_by=group_by, window_s=spec.window_s, tally=spec.tally, distinct=spec.distinct, threshold=tuple(threshold), dedup_s=dedup_s)

    def rule(self, value: object, where: str, source: str) -> RuleSpec | None:
        fields = self.mapping(value, where, _RULE_KEYS)
        if fields is None:
            return None
        before = len(self.problems)
        rule_id = self.string(fields.get("id"), f"{where}.id")
        if rule_id is not None and not RULE_ID.fullmatch(rule_id):
            self.problem(f"{where}.id", f"{rule_id!r}: use letters, digits, '.', '_', ':' and '-' (at most 128)")
        severity = fields.get("severity")
        if severity not in SEVERITIES:
            self.problem(f"{where}.severity", f"expected one of {', '.join(SEVERITIES)}, got {_kind(severity)}")
        title = self.string(fields.get("title", rule_id or "rule"), f"{where}.title")
        description = self.string(fields.get("description", ""), f"{where}.description", empty=True)
        mitre = self.strings(fields.get("mitre"), f"{where}.mitre")
        for index, tag in enumerate(mitre):
            why = tag_problem(tag)
            if why:
                self.problem(f"{where}.mitre[{index}]", why)
        tags = self.strings(fields.get("tags"), f"{where}.tags")
        enabled = fields.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem(f"{where}.enabled", f"expected true or false, got {_kind(enabled)}")
        match = self.condition(fields.get("match"), f"{where}.match") if "match" in fields else None
        if "match" not in fields:
            self.problem(f"{where}.match", "required: the condition an event must meet")
        exceptions = self.exceptions(fields.get("exceptions"), f"{where}.exceptions")
        aggregate = self.aggregate(fields["aggregate"], f"{where}.aggregate") if "aggregate" in fields else None
        dedup = self.dedup(fields.get("dedup"), f"{where}.dedup")
        if aggregate is not None and dedup is not None:
            self.problem(f"{where}.dedup", "an aggregate rule has aggregate.dedup_s instead")
        output_fields = self.output_fields(fields.get("fields"), f"{where}.fields", aggregate, invalid_aggregate="aggregate" in fields and aggregate is None)
        output = fields.get("output", "{title}: " + " ".join(f"{name}={{{name}}}" for name, _ in output_fields))
        output = self.string(output, f"{where}.output")
        if output is not None:
            try:
                template = Template(output)
            except TemplateError as exc:
                self.problem(f"{where}.output", str(exc))
            else:
                known = {name for name, _ in output_fields} | {"title", "rule", "severity"}
                for name in template.names:
                    if name not in known:
                        self.problem(f"{where}.output", f"{{{name}}} is not an output field; fields: {', '.join(sorted(known))}")
        if len(self.problems) != before:
            return None
        assert rule_id and title is not None and description is not None and output is not None and match is not None
        return RuleSpec(
            id=rule_id,
            title=title,
            description=description,
            severity=cast(Severity, severity),
            mitre=mitre,
            tags=tags,
            enabled=bool(enabled),
            match=match,
            exceptions=exceptions,
            output=output,
            fields=output_fields,
            dedup=dedup,
            aggregate=aggregate,
            source=source,
        )

    def dedup(self, value: object, where: str) -> Dedup | None:
        if value is None:
            return None
        fields = self.mapping(value, where, ("by", "period_s"))
        if fields is None:
            return None
        by = [self.path(item, f"{where}.by[{index}]") for index, item in enumerate(self.strings(fields.get("by"), f"{where}.by"))]
        period = self.number(fields.get("period_s"), f"{where}.period_s", high=_MAX_WINDOW_S)
        if not by:
            self.problem(f"{where}.by", "required: the paths whose values form the dedup key")
        if period is None or not by or not all(by):
            return None
        return Dedup(by=tuple(path for path in by if path), period_s=period)

    def output_fields(self, value: object, where: str, aggregate: Aggregate | None, *, invalid_aggregate: bool = False) -> tuple[tuple[str, str], ...]:
        if value is None:
            return DEFAULT_FIELDS
        fields = self.mapping(value, where, tuple(value) if isinstance(value, dict) else ())
        out: list[tuple[str, str]] = []
        for name, path in (fields or {}).items():
            spot = f"{where}.{name}"
            if isinstance(path, str) and path.startswith("$"):
                metrics = aggregate.metric_names() if aggregate is not None else ()
                if path[1:] not in metrics and not invalid_aggregate:  # an invalid aggregate is reported already
                    self.problem(
                        spot, f"{path}: not an aggregate metric" + (f" ({', '.join('$' + m for m in metrics)})" if metrics else " (the rule has no aggregate)")
                    )
                    continue
                out.append((str(name), path))
            elif (checked := self.path(path, spot)) is not None:
                out.append((str(name), checked))
        return tuple(out)


def parse_rule_document(document: object, source: str) -> tuple[list[RuleSpec], list[str]]:
    """The rules of one YAML document in our format, and every problem (key paths, without the file)."""
    checker = _Checker()
    top = checker.mapping(document, "<root>", _FILE_KEYS)
    rules: list[RuleSpec] = []
    if top is not None:
        raw_rules = top.get("rules")
        if not isinstance(raw_rules, list):
            checker.problem("rules", f"expected a list of rules, got {_kind(raw_rules)}")
        else:
            for index, raw in enumerate(raw_rules):
                spec = checker.rule(raw, f"rules[{index}]", source)
                if spec is not None:
                    rules.append(spec)
    return rules, checker.problems


def check_condition(value: object, where: str) -> tuple[Condition | None, list[str]]:
    """One condition checked on its own (for tuning and tests)."""
    checker = _Checker()
    return checker.condition(value, where), checker.problems


def check_exceptions(value: object, where: str) -> tuple[Exceptions, list[str]]:
    checker = _Checker()
    return checker.exceptions(value, where), checker.problems
