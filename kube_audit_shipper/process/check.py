"""Is a line an audit event at all: valid UTF-8 holding one JSON object, however deeply nested.

A line msgspec cannot check for depth (it stops at Python's recursion limit) is checked by the iterative
scanner of jsonscan.py. Used where no transform decodes the line anyway (no policy, no enrichment, no
detection) and by `deadletter replay`.
"""

from __future__ import annotations

import msgspec

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.jsonscan import check_object


class _AnyObject(msgspec.Struct):
    """Decoding into a field-less Struct checks JSON syntax and that the top level is an object,
    without building any Python objects for the fields."""


_check_object = msgspec.json.Decoder(_AnyObject).decode


def check_utf8(line: bytes) -> None:
    """Raise MalformedEventError unless a non-ASCII line is valid UTF-8 (callers test isascii() first:
    C speed, no copy, and true for almost every audit line)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"invalid UTF-8 at byte {exc.start}") from None


def check_event(line: bytes) -> None:
    """Raise MalformedEventError unless `line` is valid UTF-8 holding one JSON object."""
    if not line.isascii():
        check_utf8(line)
    try:
        try:
            _check_object(line)
        except RecursionError:  # nested deeper than msgspec goes: the iterative check
            check_object(line)
    except msgspec.ValidationError:
        raise MalformedEventError("not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise MalformedEventError(f"malformed JSON: {exc}") from None
