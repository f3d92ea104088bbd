"""`config/default.yaml`, generated from the config structs: every key, its default and what it does.

A default lives in one place, the struct field (`msgspec.Meta(description=...)` says what it does,
`examples=` gives a value to show for a key that has no default). This module renders the root `Config`
as commented YAML: sections in field order, each key under its description; optional blocks that are
off by default (`spool`, `tls`, ...) as commented-out examples; the sinks list with the file sink as the
working default and every other sink type as a commented-out block. The file it writes loads back into
exactly the struct defaults (a test checks it, key by key), so the reference cannot drift.

    python -m kube_audit_shipper.config_reference > config/default.yaml
"""

from __future__ import annotations

import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any, Union

import msgspec
import yaml

from kube_audit_shipper.config import Config
from kube_audit_shipper.delivery.config import SinkConfigBase
from kube_audit_shipper.sinks.alert_registry import ALERT_TARGET_CONFIGS
from kube_audit_shipper.sinks.registry import SINK_CONFIGS

HEADER = """\
# kube-audit-shipper: every key, its default and what it does. Installed as /etc/kube-audit-shipper/config.yaml.
# Every key is optional except `sinks`. `kube-audit-shipper validate -c FILE` checks a file.
# Generated from the config structs (python -m kube_audit_shipper.config_reference > config/default.yaml):
# edit the structs, not this file.
"""
WIDTH = 118
#: the sink the reference file ships with: every event to zstd files on the node
DEFAULT_SINK = {"name": "archive", "type": "file", "path": "/var/log/kube-audit-shipper"}


class _Field:
    __slots__ = ("description", "examples", "has_default", "name", "tp", "value")

    def __init__(self, cls: type, info: msgspec.structs.FieldInfo, hints: dict[str, Any]) -> None:
        self.name = info.encode_name
        self.tp, metas = _strip(hints[info.name])
        self.description = next((m.description for m in metas if m.description), None)
        self.examples = next((m.examples for m in metas if m.examples), None)
        self.has_default = not info.required
        if info.default is not msgspec.NODEFAULT:
            self.value: Any = info.default
        elif info.default_factory is not msgspec.NODEFAULT:
            self.value = info.default_factory()
        else:
            self.value = self.examples[0] if self.examples else None


def _strip(tp: Any) -> tuple[Any, list[msgspec.Meta]]:
    metas: list[msgspec.Meta] = []
    while typing.get_origin(tp) is typing.Annotated:
        base, *extra = typing.get_args(tp)
        metas.extend(m for m in extra if isinstance(m, msgspec.Meta))
        tp = base
    return tp, metas


def _fields(cls: type) -> list[_Field]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [_Field(cls, info, hints) for info in msgspec.structs.fields(cls)]


def _struct_of(tp: Any) -> type | None:
    """The Struct class of `tp`, `Struct | None` or `Annotated[...]` of those (not of a tagged union)."""
    tp, _ = _strip(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [_strip(a)[0] for a in typing.get_args(tp) if a is not type(None)]
        tp = members[0] if len(members) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, msgspec.Struct) else None


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(msgspec.to_builtins(value), default_flow_style=True, width=10**6, sort_keys=False, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _comment(text: str | None, indent: str) -> Iterator[str]:
    if text:
        yield from textwrap.wrap(text, WIDTH - len(indent) - 2, initial_indent=indent + "# ", subsequent_indent=indent + "# ")


def _struct_lines(cls: type, indent: str, values: Any = None, *, skip: tuple[str, ...] = ()) -> Iterator[str]:
    """The keys of `cls` at `indent`, each under its description. `values` overrides the defaults."""
    for f in _fields(cls):
        if f.name in skip:
            continue
        value = getattr(values, f.name, f.value) if values is not None and not isinstance(values, dict) else f.value
        if isinstance(values, dict) and f.name in values:
            value = values[f.name]
        yield from _comment(f.description, indent)
        nested = _struct_of(f.tp)
        if nested is not None and value is not None and _fields(nested):
            yield f"{indent}{f.name}:"
            yield from _struct_lines(nested, indent + "  ", value)
        elif nested is not None and value is None:
            yield f"{indent}{f.name}: null"
            yield f"{indent}# {f.name}: {_scalar({g.name: g.value for g in _fields(nested)})}"
        elif f.name == "sinks":
            yield f"{indent}sinks:"
            yield from _sinks(indent + "  ")
        elif f.name == "alerts":
            yield f"{indent}alerts: []"
            yield from _alert_targets(indent + "  ")
        else:
            yield f"{indent}{f.name}: {_scalar(value)}"


def _commented(lines: list[str], indent: str) -> Iterator[str]:
    """A block to uncomment: each line behind `# `, so removing that prefix gives working YAML."""
    for line in lines:
        yield f"{indent}# {line}".rstrip()


def _sink_lines(tag: str, values: dict[str, Any], skip: tuple[str, ...] = ("name",), configs: dict[str, type] = SINK_CONFIGS) -> list[str]:
    return [f"- name: {values['name']}", f"  type: {tag}", *_struct_lines(configs[tag], "  ", values, skip=skip)]


#: the keys every sink has: shown once, on the default sink
COMMON_SINK_KEYS = tuple(f.name for f in _fields(SinkConfigBase))


def _sinks(indent: str) -> Iterator[str]:
    for line in _sink_lines("file", {k: v for k, v in DEFAULT_SINK.items() if k != "type"}):
        yield indent + line
    for tag in SINK_CONFIGS:
        if tag != "file":
            yield ""
            yield f"{indent}# Another sink type, {tag}: uncomment to add it (it has the keys every sink has too: {', '.join(COMMON_SINK_KEYS[1:])})."
            yield from _commented(_sink_lines(tag, {"name": tag}, COMMON_SINK_KEYS), indent)


def _alert_targets(indent: str) -> Iterator[str]:
    yield f"{indent}# Alert targets: replace [] with one or more of these (each also has the keys every sink has: {', '.join(COMMON_SINK_KEYS[1:])})."
    for tag in ALERT_TARGET_CONFIGS:
        yield ""
        yield f"{indent}# Alert target type {tag}:"
        yield from _commented(_sink_lines(tag, {"name": f"alerts-{tag}"}, COMMON_SINK_KEYS, ALERT_TARGET_CONFIGS), indent)


def render() -> str:
    lines = [HEADER.rstrip("\n")]
    for f in _fields(Config):
        lines.append("")
        lines.extend(_struct_lines(Config, "", skip=tuple(g.name for g in _fields(Config) if g.name != f.name)))
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
