"""Convert parsed YAML into frozen msgspec Structs, reporting *every* error with its key path.

msgspec stops at the first error of a call, so this walks the target type itself: for a Struct it
checks unknown and missing keys, converts each field on its own (recursing into nested Structs,
lists, dicts and tagged unions) and collects the problems. Leaves are converted by msgspec, and a
failure is rewritten into `path: expected <type and bounds>, got <value>`. Cross-field checks in a
Struct's `__post_init__` raise ValueError/TypeError, reported at that Struct's path.
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, Union

import msgspec

from kube_audit_shipper.obs.logs import Scrubber

_MISSING = object()


def convert_all(data: Any, tp: Any, path: str = "") -> tuple[Any, list[str]]:
    """Return (value, errors). `value` is meaningful only when `errors` is empty."""
    errors: list[str] = []
    value = _convert(data, tp, path, errors)
    return value, errors


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _last_key(path: str) -> str:
    return re.split(r"[.\[]", path)[-1]


def _got(value: Any, path: str = "") -> str:
    """The offending value as an error shows it; never the value of a key that names a secret, whatever
    its type (a secret given as a number is still a secret)."""
    if value is None:
        return "null"
    if Scrubber.is_secret_key(_last_key(path)):
        return f"a value of type {type(value).__name__} (hidden: the key names a secret)"
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    metas: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp = args[0]
        metas.extend(m for m in args[1:] if isinstance(m, msgspec.Meta))
    return tp, metas


def describe(tp: Any) -> str:
    """Human description of a type with its msgspec bounds: `int >= 1048576`, `"beginning" or "end"`."""
    base, metas = _strip_annotated(tp)
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in typing.get_args(base))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(base))
    if base is type(None):
        return "null"
    if isinstance(base, type) and issubclass(base, msgspec.Struct):
        return "mapping"
    if origin in (list, tuple, set, frozenset):
        (item,) = typing.get_args(base)[:1] or (Any,)
        return f"list of {describe(item)}" + "".join(f" with length >= {m.min_length}" for m in metas if m.min_length is not None)
    if origin is dict:
        return "mapping"
    name = getattr(base, "__name__", str(base))
    bounds = []
    for m in metas:
        for attr, op in (
            ("ge", ">="),
            ("gt", ">"),
            ("le", "<="),
            ("lt", "<"),
            ("min_length", "length >="),
            ("max_length", "length <="),
            ("pattern", "matching"),
        ):
            v = getattr(m, attr, None)
            if v is not None:
                bounds.append(f"{op} {v}")
    return name + (" " + " and ".join(bounds) if bounds else "")


def _leaf(data: Any, tp: Any, path: str, errors: list[str]) -> Any:
    try:
        return msgspec.convert(data, tp, strict=True)
    except msgspec.ValidationError:
        if isinstance(data, str):  # "${ROTATE}" substituted to "104857600" for an int field
            try:
                return msgspec.convert(data, tp, strict=False)
            except msgspec.ValidationError:
                pass
        errors.append(f"{path or '<root>'}: expected {describe(tp)}, got {_got(data, path)}")
        return _MISSING


def _struct_tag_field(cls: type) -> str | None:
    cfg = getattr(cls, "__struct_config__", None)
    return getattr(cfg, "tag_field", None) if cfg is not None else None


def _tagged_union(data: Any, members: list[type], path: str, errors: list[str]) -> Any:
    tag_field = _struct_tag_field(members[0])
    by_tag = {m.__struct_config__.tag: m for m in members}  # type: ignore[attr-defined]
    if not isinstance(data, dict):
        errors.append(f"{path}: expected mapping, got {_got(data, path)}")
        return _MISSING
    tag = data.get(tag_field, _MISSING)
    if tag is _MISSING:
        errors.append(f"{_join(path, str(tag_field))}: required key missing (one of {', '.join(sorted(map(str, by_tag)))})")
        return _MISSING
    cls = by_tag.get(tag)
    if cls is None:
        errors.append(f"{_join(path, str(tag_field))}: unknown {tag_field} {_got(tag)}; expected one of {', '.join(sorted(map(str, by_tag)))}")
        return _MISSING
    rest = {k: v for k, v in data.items() if k != tag_field}
    return _struct(rest, cls, path, errors)


def _struct(data: Any, cls: type, path: str, errors: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or '<root>'}: expected mapping, got {_got(data, path)}")
        return _MISSING
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    before = len(errors)
    for key in data:
        if key not in fields:
            close = [k for k in fields if k.replace("_", "") == str(key).replace("_", "").replace("-", "").lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(fields))}"
            errors.append(f"{_join(path, str(key))}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in data:
            if f.required:
                errors.append(f"{sub}: required key missing")
            continue
        value = _convert(data[name], hints[f.name], sub, errors)
        if value is not _MISSING:
            kwargs[f.name] = value
    if len(errors) != before:
        return _MISSING
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        errors.append(f"{path or '<root>'}: {exc}")
        return _MISSING


def _convert(data: Any, tp: Any, path: str, errors: list[str]) -> Any:
    base, metas = _strip_annotated(tp)
    origin = typing.get_origin(base)
    if isinstance(base, type) and issubclass(base, msgspec.Struct):
        if _struct_tag_field(base):
            return _tagged_union(data, [base], path, errors)
        return _struct(data, base, path, errors)
    if origin in (Union, types.UnionType):
        args = list(typing.get_args(base))
        structs = [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        if structs and len(structs) == len(args) and _struct_tag_field(structs[0]):
            return _tagged_union(data, structs, path, errors)
        if data is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            inner = non_none[0]
            inner_base, _ = _strip_annotated(inner)
            if (isinstance(inner_base, type) and issubclass(inner_base, msgspec.Struct)) or typing.get_origin(inner_base) in (list, dict):
                return _convert(data, inner, path, errors)
        return _leaf(data, tp, path, errors)
    if origin is list:
        if not isinstance(data, list):
            errors.append(f"{path}: expected {describe(tp)}, got {_got(data, path)}")
            return _MISSING
        (item_tp,) = typing.get_args(base)
        before = len(errors)
        items = [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(data)]
        if len(errors) != before:
            return _MISSING
        return _leaf(items, tp, path, errors) if metas else items
    if origin is dict:
        if not isinstance(data, dict):
            errors.append(f"{path}: expected mapping, got {_got(data, path)}")
            return _MISSING
        key_tp, val_tp = typing.get_args(base)
        before = len(errors)
        out = {}
        for k, v in data.items():
            ck = _leaf(k, key_tp, _join(path, str(k)), errors)
            cv = _convert(v, val_tp, _join(path, str(k)), errors)
            out[ck] = cv
        return _MISSING if len(errors) != before else out
    return _leaf(data, tp, path, errors)
