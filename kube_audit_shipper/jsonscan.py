"""The top level of a JSON value nested deeper than msgspec goes, without recursion.

msgspec recurses on nested values (even to skip one or keep it raw) and stops at Python's recursion limit,
about 1,000 levels; kube-apiserver records deeper objects, so any user who may write an object logged at
Request level can write such a line. `object_members` and `array_items` give the top-level members of any
JSON value, raw: msgspec first, and when it gives up on depth an iterative scanner that validates the whole
value as strictly as msgspec (escapes, surrogate pairs, numbers, no trailing data). The event decoder,
trimming and the sinks' encoders read values one level at a time through these, so nothing in the agent
depends on how deep a value is.
"""

from __future__ import annotations

import re

import msgspec
from msgspec import Raw

_WHITESPACE = b" \t\r\n"
_OPEN_BRACE = ord("{")
_TOP = msgspec.json.Decoder(dict[str, Raw])
_ARRAY = msgspec.json.Decoder(list[Raw])
_STR = msgspec.json.Decoder(str)

_WS = rb"[ \t\n\r]*"
# A JSON string as msgspec accepts it: no control characters, known escapes, surrogates only in valid pairs.
_STRING = (
    rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4}'
    rb'|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})*+"'
)
_PLAIN_KEY = rb'"[^"\\{\x00-\x1f]*+"'  # a key without `{` or escapes: runs of `{"key":` count their `{`
_TOKEN = re.compile(
    _WS + rb"(?:(" + _STRING + rb")"  # 1 a string
    rb"|((?:\{" + _WS + _PLAIN_KEY + _WS + rb":" + _WS + rb")++)"  # 2 a run of `{"key":` (deep objects)
    rb"|(\[(?:" + _WS + rb"\[)*+)"  # 3 a run of `[`
    rb"|([\]}](?:" + _WS + rb"[\]}])*+)"  # 4 a run of `]` and `}`
    rb"|(,)|(:)|(\{)"  # 5, 6, 7
    rb"|(-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?|true|false|null))"  # 8 a scalar
)
_OPENER_OF = bytes.maketrans(b"]}", b"[{")
_OPEN_BRACKET = ord("[")
# parser states: what may come next
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _KEY, _COLON, _AFTER = range(6)


def _malformed(data: bytes, pos: int, what: str = "invalid character") -> msgspec.DecodeError:
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    if pos == len(data):
        return msgspec.DecodeError("Input data was truncated")
    return msgspec.DecodeError(f"JSON is malformed: {what} (byte {pos})")


def _scan(data: bytes) -> list[tuple[str | None, int, int]]:
    """(key, start, end) of every top-level member of the JSON object or array `data` (key None in an array).

    Validates all of `data` and raises `msgspec.DecodeError` as msgspec would; never recurses: the nesting is a
    bytearray stack, and runs of `[`, of `{"key":` and of closing brackets are taken in one regex match each, so
    the deep shapes cost one step per run, not per level.
    """
    pos = 0
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    if pos == len(data) or data[pos] not in (_OPEN_BRACE, _OPEN_BRACKET):
        raise _malformed(data, pos)
    stack = bytearray(data[pos : pos + 1])
    state = _KEY_OR_CLOSE if data[pos] == _OPEN_BRACE else _VALUE_OR_CLOSE
    pos += 1
    members: list[tuple[str | None, int, int]] = []
    key: str | None = None
    start = 0
    match = _TOKEN.match
    while True:
        m = match(data, pos)
        if m is None:
            raise _malformed(data, pos)
        kind = m.lastindex
        depth = len(stack)
        if kind == 1 and state in (_KEY, _KEY_OR_CLOSE):
            if depth == 1:
                key = _STR.decode(m.group(1))
            state = _COLON
        elif kind in (1, 8) and state in (_VALUE, _VALUE_OR_CLOSE):
            if depth == 1:
                members.append((key, m.start(kind), m.end(kind)))
            state = _AFTER
        elif kind in (2, 3, 7) and state in (_VALUE, _VALUE_OR_CLOSE):
            if depth == 1:
                start = m.start(kind)
            if kind == 2:
                stack.extend(b"{" * m.group(2).count(b"{"))
                state = _VALUE
            elif kind == 3:
                stack.extend(b"[" * m.group(3).count(b"["))
                state = _VALUE_OR_CLOSE
            else:
                stack.append(_OPEN_BRACE)
                state = _KEY_OR_CLOSE
        elif kind == 4 and state in (_AFTER, _VALUE_OR_CLOSE, _KEY_OR_CLOSE):
            closers = m.group(4).translate(None, _WHITESPACE)
            count = len(closers)
            if count > depth or stack[depth - count :] != closers.translate(_OPENER_OF)[::-1]:
                raise _malformed(data, pos, "mismatched bracket")
            if depth >= 2 and depth - count <= 1:  # a top-level member ends in this run
                end = m.end(4)
                if depth - count == 0:  # ... before the run's last closer, which closes the top level
                    end -= 1
                    while data[end - 1] in _WHITESPACE:
                        end -= 1
                members.append((key, start, end))
            del stack[depth - count :]
            state = _AFTER
            if not stack:
                pos = m.end()
                break
        elif kind == 5 and state == _AFTER:
            state = _KEY if stack[-1] == _OPEN_BRACE else _VALUE
        elif kind == 6 and state == _COLON:
            state = _VALUE
        else:
            raise _malformed(data, pos, "unexpected token")
        pos = m.end()
    if data[pos:].strip(_WHITESPACE):
        raise _malformed(data, pos, "trailing characters")
    return members


def object_members(data: Raw | bytes) -> dict[str, Raw] | None:
    """The members of a JSON object with their values raw; None when `data` is JSON but no object.

    msgspec first; when the value is nested deeper than it goes, the iterative `_scan`. Raises
    `msgspec.DecodeError` when `data` is not JSON.
    """
    try:
        return _TOP.decode(data)
    except msgspec.ValidationError:
        return None
    except RecursionError:
        pass
    buf = bytes(data)
    if buf.lstrip(_WHITESPACE)[:1] != b"{":
        _scan(buf)  # raises unless it is a (deep) array: JSON, but no object
        return None
    return {key: Raw(buf[a:b]) for key, a, b in _scan(buf) if key is not None}


def array_items(data: Raw | bytes) -> list[Raw] | None:
    """The elements of a JSON array, raw; None when `data` is JSON but no array. As `object_members`."""
    try:
        return _ARRAY.decode(data)
    except msgspec.ValidationError:
        return None
    except RecursionError:
        pass
    buf = bytes(data)
    if buf.lstrip(_WHITESPACE)[:1] != b"[":
        _scan(buf)
        return None
    return [Raw(buf[a:b]) for _, a, b in _scan(buf)]


def check_object(data: bytes) -> None:
    """Raise `msgspec.DecodeError` unless `data` is JSON, `msgspec.ValidationError` unless it is an object.

    For a line msgspec could not check for depth: validated by the iterative scanner.
    """
    if data.lstrip(_WHITESPACE)[:1] != b"{":
        _scan(data)
        raise msgspec.ValidationError("Expected `object`, got `array`")
    _scan(data)


# -- the lenient view: every field read on its own, a value that does not fit reads as absent ----------------
