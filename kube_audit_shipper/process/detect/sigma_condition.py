"""Sigma `condition` expressions parsed into our condition trees.

Grammar (Sigma specification 2.x, detection condition): `or` binds loosest, then `and`, then `not`;
parentheses group; `1 of X`, `any of X` and `all of X` take a selection name, a pattern with `*` over the
selection names, or `them` (every selection whose name does not start with `_`). Aggregations after a `|`
(`selection | count() > 5`) belong to the deprecated Sigma 1 syntax and are not supported.
"""

from __future__ import annotations

import fnmatch
import re

from kube_audit_shipper.process.detect.spec import AllOf, AnyOf, Condition, Not

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class SigmaConditionError(ValueError):
    """The condition cannot be used; the message says why (syntax or an unsupported feature)."""


def parse_condition(text: str, selections: dict[str, Condition | None]) -> Condition:
    """The condition tree of `text` over the named selections (None = a selection we cannot evaluate)."""
    if "|" in text:
        raise SigmaConditionError(f"aggregation in the condition ({text.split('|', 1)[1].strip()!r}) is not supported; Sigma correlation rules neither")
    tokens = [match.group(1) for match in _TOKEN.finditer(text)]
    if not tokens:
        raise SigmaConditionError("empty condition")
    parser = _Parser(tokens, selections)
    tree = parser.expression()
    if parser.position != len(tokens):
        raise SigmaConditionError(f"unexpected {tokens[parser.position]!r} in condition {text!r}")
    return tree


class _Parser:
    def __init__(self, tokens: list[str], selections: dict[str, Condition | None]) -> None:
        self.tokens = tokens
        self.position = 0
        self.selections = selections

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise SigmaConditionError("the condition ends too early")
        self.position += 1
        return token

    def expression(self) -> Condition:
        items = [self.conjunction()]
        while (self.peek() or "").lower() == "or":
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def conjunction(self) -> Condition:
        items = [self.negation()]
        while (self.peek() or "").lower() == "and":
            self.take()
            items.append(self.negation())
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def negation(self) -> Condition:
        if (self.peek() or "").lower() == "not":
            self.take()
            return Not(self.negation())
        return self.primary()

    def primary(self) -> Condition:
        token = self.take()
        if token == "(":
            inner = self.expression()
            if self.take() != ")":
                raise SigmaConditionError("missing ')'")
            return inner
        if token == ")":
            raise SigmaConditionError("unexpected ')'")
        lowered = token.lower()
        if (lowered in ("1", "any", "all")) and (self.peek() or "").lower() == "of":
            self.take()
            return self._quantified(lowered, self.take())
        return self._selection(token)

    def _selection(self, name: str) -> Condition:
        if name not in self.selections:
            raise SigmaConditionError(f"the condition names {name!r}, which is not a selection of this rule")
        selection = self.selections[name]
        if selection is None:
            raise SigmaConditionError(f"selection {name!r} uses a feature that is not supported (see above)")
        return selection

    def _quantified(self, quantifier: str, target: str) -> Condition:
        if target.lower() == "them":
            names = [name for name in self.selections if not name.startswith("_")]
        else:
            names = [name for name in self.selections if fnmatch.fnmatchcase(name, target)]
        if not names:
            raise SigmaConditionError(f"{quantifier} of {target}: no selection matches {target!r}")
        items = tuple(self._selection(name) for name in names)
        if len(items) == 1:
            return items[0]
        return AllOf(items) if quantifier == "all" else AnyOf(items)
