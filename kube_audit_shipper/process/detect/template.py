"""Alert summary templates: `{field}` and `{field:spec}` placeholders resolving to a rule's output fields.

`{{` and `}}` are literal braces. `spec` is a Python format spec applied to the value (`{failure_rate:.0%}`,
`{count:d}`); only the value is formatted, so a template cannot reach attributes or call anything (unlike
`str.format`). A missing field renders as `-`, a list as its items joined by ", ", a mapping as compact JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)(?::([^{}]*))?\}|\{|\}")
MISSING_TEXT = "-"


class TemplateError(ValueError):
    pass


class Template:
    """A parsed template: literal text and (field, spec) placeholders, rendered against a dict of fields."""

    __slots__ = ("names", "parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str | tuple[str, str]] = []
        names: list[str] = []
        position = 0
        literal: list[str] = []
        for match in _PLACEHOLDER.finditer(text):
            literal.append(text[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            name = match.group(1)
            if name is None:
                raise TemplateError(f"unmatched {token!r} at position {match.start()} (write {token * 2} for a literal brace)")
            spec = match.group(2) or ""
            if spec and not _valid_spec(spec):
                raise TemplateError(f"{{{name}:{spec}}}: invalid format spec {spec!r}")
            self.parts.append("".join(literal))
            literal = []
            self.parts.append((name, spec))
            names.append(name)
        literal.append(text[position:])
        self.parts.append("".join(literal))
        self.names = tuple(dict.fromkeys(names))

    def render(self, fields: dict[str, Any]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(_text(fields.get(part[0]), part[1]))
        return "".join(out)


def _valid_spec(spec: str) -> bool:
    """Whether `spec` formats some kind of value (a number, a float or a string)."""
    for sample in (0, 0.5, ""):
        try:
            format(sample, spec)
        except (ValueError, TypeError):
            continue
        return True
    return False


def _text(value: Any, spec: str) -> str:
    if value is None:
        return MISSING_TEXT
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            pass
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_text(item, "") for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return str(value)
