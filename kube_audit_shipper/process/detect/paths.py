"""The path syntax rules use to name a value of an audit event, parsed once into segments.

    verb                                            a top-level field
    objectRef.subresource                           a field of a field
    user.groups                                     a list: every element is tested (any one may match)
    requestObject.spec.containers[*].image          `[*]`: each element of a list, the rest of the path applied to each
    requestObject.spec.containers[0].image          `[N]`: one element (negative counts from the end)
    annotations["authorization.k8s.io/decision"]    a key with dots, slashes or other characters, quoted ("..." or '...';
                                                    a backslash escapes the quote or itself)
    @command                                        a value computed from the event (see `computed`), e.g. the exec command

A plain key is any run of characters other than `.`, `[`, `]`, quotes and whitespace. Paths are checked when a
rule is loaded; an error says where in the path it is.
"""

from __future__ import annotations

from typing import NamedTuple

#: Segment kinds.
KEY, INDEX, EACH = 0, 1, 2

_PLAIN_STOP = frozenset(".[]\"' \t\r\n")


class Segment(NamedTuple):
    kind: int
    key: str = ""
    position: int = 0

    def render(self) -> str:
        if self.kind == EACH:
            return "[*]"
        if self.kind == INDEX:
            return f"[{self.position}]"
        if self.key and not (_PLAIN_STOP & set(self.key)) and not self.key.startswith("@"):
            return f".{self.key}"
        return '["' + self.key.replace("\\", "\\\\").replace('"', '\\"') + '"]'


class Path(NamedTuple):
    """A parsed path: `root` is the first key (`@name` for a computed value), `rest` the segments after it."""

    text: str
    root: str
    rest: tuple[Segment, ...]

    @property
    def computed(self) -> bool:
        return self.root.startswith("@")


class PathError(ValueError):
    """A path that does not follow the syntax; the message says where."""


def parse_path(text: object) -> Path:
    """Parse `text`; raise PathError naming the position of the first problem."""
    if not isinstance(text, str):
        raise PathError(f"a path must be a string, got {type(text).__name__}")
    if not text:
        raise PathError("empty path")
    segments: list[Segment] = []
    pos = 0
    length = len(text)
    root_computed = text.startswith("@")
    if root_computed:
        pos = 1
    while pos < length:
        char = text[pos]
        if char == "[":
            segment, pos = _bracket(text, pos)
            if not segments:
                raise PathError(f"a path starts with a field name, not {text[:pos]!r}")
            segments.append(segment)
        elif char == ".":
            if not segments:
                raise PathError("a path cannot start with '.'")
            pos += 1
            key, pos = _plain(text, pos)
            segments.append(Segment(KEY, key))
        else:
            if segments:
                raise PathError(f"expected '.' or '[' at position {pos} of {text!r}")
            key, pos = _plain(text, pos)
            segments.append(Segment(KEY, key))
    if not segments or segments[0].kind != KEY:
        raise PathError(f"a path starts with a field name: {text!r}")
    root = ("@" if root_computed else "") + segments[0].key
    return Path(text, root, tuple(segments[1:]))


def _plain(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in _PLAIN_STOP:
        pos += 1
    if pos == start:
        where = f"position {pos}" if pos < len(text) else "the end"
        raise PathError(f'expected a field name at {where} of {text!r} (quote keys with special characters: ["a.b/c"])')
    return text[start:pos], pos


def _bracket(text: str, pos: int) -> tuple[Segment, int]:
    """Parse `[*]`, `[N]` or `["key"]` starting at the `[` at `pos`."""
    pos += 1
    if pos < len(text) and text[pos] in "\"'":
        quote = text[pos]
        pos += 1
        chars: list[str] = []
        while pos < len(text) and text[pos] != quote:
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            chars.append(text[pos])
            pos += 1
        if pos >= len(text):
            raise PathError(f"unterminated quoted key in {text!r}")
        pos += 1
        segment = Segment(KEY, "".join(chars))
    else:
        end = text.find("]", pos)
        if end < 0:
            raise PathError(f"missing ']' in {text!r}")
        inner = text[pos:end].strip()
        pos = end
        if inner == "*":
            segment = Segment(EACH)
        else:
            try:
                segment = Segment(INDEX, position=int(inner))
            except ValueError:
                raise PathError(f'[{inner}] in {text!r}: expected [*], [N] or a quoted key ["..."]') from None
    if pos >= len(text) or text[pos] != "]":
        raise PathError(f"missing ']' in {text!r}")
    return segment, pos + 1


def reads_body(path: Path) -> str | None:
    """The request body a path reads (`requestObject`/`responseObject`), if any."""
    return path.root if path.root in ("requestObject", "responseObject") else None
