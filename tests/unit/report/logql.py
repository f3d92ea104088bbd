"""A strict LogQL reader for the dashboard and ruler rules: parses the subset of LogQL they use and says which
names each query relies on. (No LogQL parser is published on PyPI; this one refuses anything it does not know
rather than guessing, so a query it accepts is one whose every name has been checked.)

Grammar: metric expressions (`sum|count|min|max|avg|topk by (...) (...)`, `count_over_time|rate|bytes_over_time|
bytes_rate(<log query> [<duration>])`, numbers, parentheses, `* / + - > >= < <= == !=` and `and or unless`);
log queries `{matchers} <pipeline>` where the pipeline holds line filters (`|= != |~ !~ "text"`), `| json` with
or without `name="path"` parameters, `| line_format "template"` and label filters (`name op "text"`,
`name op number`, joined by `and`, `or` or `,`).

`parse(text, known)` returns the `Query` found, or raises `LogQLError` naming the first problem: unknown syntax,
a stream label that is not one of `known.stream_labels`, a label used before anything provides it (stream label,
structured metadata, or a name a `json` stage extracted before), a `json` path outside `known.json_paths`, a name
extraction would collide with, an unknown value where the values are known, a `by` label the inner query has not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<duration>\d+(?:ms|s|m|h|d|w|y)\b)
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|\||=|>|<|\{|\}|\(|\)|\[|\]|,|/|\*|\+|-)
    | (?P<ident>[a-zA-Z_][a-zA-Z0-9_]*)
    )""",
    re.VERBOSE,
)
VECTOR_AGGREGATIONS = frozenset({"sum", "count", "min", "max", "avg", "topk", "bottomk", "stddev"})
RANGE_AGGREGATIONS = frozenset({"count_over_time", "rate", "bytes_over_time", "bytes_rate"})
BINARY_KEYWORDS = frozenset({"and", "or", "unless"})
_TEMPLATE_REF = re.compile(r"\{\{\s*\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_TEMPLATE_ANY = re.compile(r"\{\{(.*?)\}\}")


class LogQLError(ValueError):
    pass


@dataclass(frozen=True)
class Known:
    """What the Loki sink writes by default, and the values some names can take."""

    stream_labels: dict[str, frozenset[str] | None]  # name -> allowed values (None: any)
    structured_metadata: frozenset[str]
    json_paths: Callable[[str], bool]  # is this json path one an event line can have?
    values: dict[str, frozenset[str]]  # extracted or metadata name -> allowed values, by the path/name it holds
    path_values: dict[str, frozenset[str]]  # json path -> allowed values


@dataclass
class LogQuery:
    matchers: list[tuple[str, str, str]] = field(default_factory=list)
    extracted: dict[str, str] = field(default_factory=dict)  # label -> json path
    used: set[str] = field(default_factory=set)
    line_filters: list[str] = field(default_factory=list)


@dataclass
class Query:
    logs: list[LogQuery] = field(default_factory=list)
    groupings: list[tuple[str, ...]] = field(default_factory=list)
    output_labels: frozenset[str] | None = None  # labels of the result (None: a log query, every label)


class _Parser:
    def __init__(self, text: str, known: Known) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.known = known
        self.query = Query()

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise LogQLError(f"cannot read {text[pos : pos + 20]!r}")
            kind = match.lastgroup
            assert kind is not None
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        return tokens

    # -- token helpers -------------------------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        got_kind, got = self.peek()
        if (kind is not None and got_kind != kind) or (value is not None and got != value):
            raise LogQLError(f"expected {value or kind}, found {got!r}")
        self.pos += 1
        return got

    def at(self, value: str) -> bool:
        return self.peek()[1] == value and self.peek()[0] in ("op", "ident")

    # -- metric expressions --------------------------------------------------------------------------------------
    def parse(self) -> Query:
        labels = self.binary()
        if self.peek()[0] != "end":
            raise LogQLError(f"unexpected {self.peek()[1]!r}")
        self.query.output_labels = labels
        return self.query

    def binary(self, level: int = 0) -> frozenset[str] | None:
        levels = [("or", "unless"), ("and",), ("==", "!=", ">", ">=", "<", "<="), ("+", "-"), ("*", "/")]
        if level == len(levels):
            return self.operand()
        left = self.binary(level + 1)
        while self.peek()[1] in levels[level] and self.peek()[0] in ("op", "ident"):
            self.take()
            right = self.binary(level + 1)
            if left is not None and right is not None and level < 2 and left != right:
                raise LogQLError(f"`and`/`or` between results with different labels: {sorted(left)} vs {sorted(right)}")
            left = left if left is not None else right
        return left

    def operand(self) -> frozenset[str] | None:
        kind, value = self.peek()
        if kind == "number":
            self.take()
            return None
        if value == "(":
            self.take()
            labels = self.binary()
            self.take("op", ")")
            return labels
        if kind == "ident" and value in VECTOR_AGGREGATIONS:
            return self.vector_aggregation()
        if kind == "ident" and value in RANGE_AGGREGATIONS:
            return self.range_aggregation()
        if value == "{":
            self.log_query()
            return frozenset({"*"})  # a log query: every label it has
        raise LogQLError(f"unexpected {value!r}")

    def grouping(self) -> tuple[str, ...]:
        self.take("ident", "by")
        self.take("op", "(")
        names = [self.take("ident")]
        while self.at(","):
            self.take()
            names.append(self.take("ident"))
        self.take("op", ")")
        return tuple(names)

    def vector_aggregation(self) -> frozenset[str]:
        self.take("ident")
        grouping: tuple[str, ...] = ()
        if self.at("by"):
            grouping = self.grouping()
        self.take("op", "(")
        inner_start = len(self.query.logs)
        self.binary()
        self.take("op", ")")
        if self.at("by"):
            if grouping:
                raise LogQLError("two by clauses")
            grouping = self.grouping()
        for log in self.query.logs[inner_start:]:
            available = self._available(log)
            for name in grouping:
                if name not in available:
                    raise LogQLError(f"by ({name}): the inner query has no label {name!r}")
        self.query.groupings.append(grouping)
        return frozenset(grouping)

    def range_aggregation(self) -> frozenset[str]:
        self.take("ident")
        self.take("op", "(")
        self.log_query()
        self.take("op", "[")
        self.take("duration")
        self.take("op", "]")
        self.take("op", ")")
        return frozenset({"*"})

    # -- log queries ---------------------------------------------------------------------------------------------
    def _available(self, log: LogQuery) -> set[str]:
        return set(self.known.stream_labels) | set(self.known.structured_metadata) | set(log.extracted) | {"__error__"}

    def log_query(self) -> None:
        log = LogQuery()
        self.query.logs.append(log)
        self.take("op", "{")
        while True:
            name = self.take("ident")
            op = self.take("op")
            if op not in ("=", "!=", "=~", "!~"):
                raise LogQLError(f"matcher operator {op!r}")
            value = _string(self.take("string"))
            if name not in self.known.stream_labels:
                raise LogQLError(f"stream selector label {name!r} is not one the Loki sink writes ({sorted(self.known.stream_labels)})")
            self._check_values(name, op, value, self.known.stream_labels[name])
            log.matchers.append((name, op, value))
            if self.at(","):
                self.take()
                continue
            self.take("op", "}")
            break
        if not any(op in ("=", "=~") and value not in ("", ".*") for _, op, value in log.matchers):
            raise LogQLError("a stream selector needs at least one matcher that selects something")
        while True:
            kind, value = self.peek()
            if kind == "op" and value in ("|=", "!=", "|~", "!~"):
                self.take()
                log.line_filters.append(_string(self.take("string")))
            elif value == "|":
                self.take()
                self.stage(log)
            else:
                return

    def stage(self, log: LogQuery) -> None:
        kind, value = self.peek()
        if kind == "ident" and value == "json" and self.peek(1)[1] not in ("=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="):
            self.take()
            if not (self.peek()[0] == "ident" and self.peek(1)[1] == "="):
                raise LogQLError("`| json` without parameters extracts every field under flattened names: name the paths instead")
            while True:
                name = self.take("ident")
                self.take("op", "=")
                self._extract(log, name, _string(self.take("string")))
                if self.at(",") and self.peek(1)[0] == "ident" and self.peek(2)[1] == "=":
                    self.take()
                    continue
                return
        if kind == "ident" and value == "line_format":
            self.take()
            template = _string(self.take("string"))
            for expression in _TEMPLATE_ANY.findall(template):
                ref = _TEMPLATE_REF.fullmatch("{{" + expression + "}}")
                if ref is None:
                    raise LogQLError(f"line_format: only {{{{.label}}}} references are allowed, not {{{{{expression}}}}}")
                self._use(log, ref.group(1))
            return
        self.label_filter(log)

    def _extract(self, log: LogQuery, name: str, path: str) -> None:
        if name in self.known.stream_labels or name in self.known.structured_metadata:
            raise LogQLError(f"json {name}=: the name is taken by a stream label or structured metadata (Loki would rename it {name}_extracted)")
        if not self.known.json_paths(path):
            raise LogQLError(f"json {name}={path!r}: no audit event line the sink writes has that path")
        log.extracted[name] = path

    def _use(self, log: LogQuery, name: str) -> None:
        if name not in self._available(log):
            raise LogQLError(f"label {name!r} is neither a stream label, structured metadata nor extracted before its use")
        log.used.add(name)

    def label_filter(self, log: LogQuery) -> None:
        while True:
            if self.at("("):
                self.take()
                self.label_filter(log)
                self.take("op", ")")
            else:
                name = self.take("ident")
                self._use(log, name)
                op = self.take("op")
                kind, value = self.peek()
                if kind == "string" and op in ("=", "!=", "=~", "!~"):
                    text = _string(self.take())
                    allowed = self.known.values.get(name)
                    if name in log.extracted:
                        allowed = self.known.path_values.get(log.extracted[name])
                    self._check_values(name, op, text, allowed)
                elif kind in ("number", "duration") and op in ("==", "!=", ">", ">=", "<", "<="):
                    self.take()
                else:
                    raise LogQLError(f"label filter {name} {op} {value!r}")
            if self.at("and") or self.at("or") or (self.at(",") and self.peek(1)[0] == "ident"):
                self.take()
                continue
            return

    @staticmethod
    def _check_values(name: str, op: str, value: str, allowed: frozenset[str] | None) -> None:
        if allowed is None or value in ("", ".*", ".+") or "$" in value:
            return
        values = value.split("|") if op in ("=~", "!~") else [value]
        for item in values:
            if not re.fullmatch(r"[A-Za-z0-9_.:/-]*", item):
                raise LogQLError(f"{name} {op} {value!r}: only plain alternatives can be checked")
            if item not in allowed:
                raise LogQLError(f"{name} {op} {value!r}: {item!r} is not a value {name} takes ({sorted(allowed)})")


def _string(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def parse(text: str, known: Known) -> Query:
    return _Parser(text, known).parse()
