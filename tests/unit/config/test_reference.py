"""config/default.yaml is generated from the config structs and loads back into exactly their defaults.

A default lives in one place (the struct field); these tests fail when the committed reference file, a
commented-out example in it, or a description of a key drifts from the structs.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from kube_audit_shipper import config_reference
from kube_audit_shipper.config import Config, load, parse
from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.sinks.alert_registry import ALERT_TARGET_CONFIGS
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.sinks.registry import SINK_CONFIGS

REPO = Path(__file__).resolve().parents[3]
DEFAULT_YAML = REPO / "config" / "default.yaml"


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Key paths where two decoded configs differ, value by value."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                out.append(f"{sub}: only in {'the file' if key in a else 'the structs'}")
            else:
                out += _differences(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: file {a!r}, structs {b!r}"]


def test_the_committed_reference_is_what_the_structs_generate() -> None:
    assert DEFAULT_YAML.read_text() == config_reference.render(), (
        "config/default.yaml is out of date: python -m kube_audit_shipper.config_reference > config/default.yaml"
    )


def test_the_reference_loads_into_exactly_the_struct_defaults_key_by_key() -> None:
    from_file = msgspec.to_builtins(load(DEFAULT_YAML))
    sink = FileSinkConfig(name=config_reference.DEFAULT_SINK["name"], path=config_reference.DEFAULT_SINK["path"])
    from_structs = msgspec.to_builtins(Config(sinks=[sink]))
    assert _differences(from_file, from_structs) == []


def _commented_sink_blocks(text: str) -> dict[str, str]:
    """The commented-out sink examples, uncommented: sink type -> YAML of a one-item list."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if m := re.match(r"^  # - name: (\S+)$", line):
            current = blocks.setdefault(m.group(1), [])
        elif current is not None and not line.startswith("  # "):
            current = None
        if current is not None:
            current.append(line[4:])
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def test_every_other_sink_type_has_an_example_that_parses_into_its_defaults() -> None:
    blocks = {name: b for name, b in _commented_sink_blocks(DEFAULT_YAML.read_text()).items() if not name.startswith("alerts-")}
    assert set(blocks) == set(SINK_CONFIGS) - {"file"}
    for tag, block in blocks.items():
        [sink] = yaml.safe_load(block)
        assert sink["type"] == tag
        parsed = parse({"sinks": [sink]}).sinks[0]
        assert type(parsed) is SINK_CONFIGS[tag]


def test_every_alert_target_type_has_an_example_that_parses() -> None:
    blocks = {name: b for name, b in _commented_sink_blocks(DEFAULT_YAML.read_text()).items() if name.startswith("alerts-")}
    assert {name.removeprefix("alerts-") for name in blocks} == set(ALERT_TARGET_CONFIGS)
    sink = {"name": "archive", "type": "file", "path": "/x"}
    for name, block in blocks.items():
        [target] = yaml.safe_load(block)
        # ${VAR} examples of secrets: a URL for a variable named so, a token for the others
        env = {var: "https://hooks.example/T/B/x" if var.endswith("_URL") else "example-value" for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", block)}
        parsed = parse({"sinks": [sink], "alerts": [target]}, env=env).alerts[0]
        assert type(parsed) is ALERT_TARGET_CONFIGS[name.removeprefix("alerts-")]


def _structs(tp: Any, seen: set[type]) -> None:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    for arg in typing.get_args(tp):
        _structs(arg, seen)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and tp not in seen:
        seen.add(tp)
        for hint in typing.get_type_hints(tp, include_extras=True).values():
            _structs(hint, seen)


def test_every_key_says_what_it_does() -> None:
    seen: set[type] = set()
    _structs(Config, seen)
    for cls in [*SINK_CONFIGS.values(), *ALERT_TARGET_CONFIGS.values()]:
        _structs(cls, seen)
    missing = []
    for cls in seen:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in msgspec.structs.fields(cls):
            metas = typing.get_args(hints[f.name])[1:] if typing.get_origin(hints[f.name]) is typing.Annotated else ()
            if not any(isinstance(m, msgspec.Meta) and m.description for m in metas):
                missing.append(f"{cls.__name__}.{f.name}")
    assert sorted(missing) == []


@pytest.mark.parametrize("tag", ["file", "loki", "s3"])
def test_a_sink_that_keeps_batch_order_refuses_concurrency_above_one_with_the_reason(tag: str) -> None:
    sink = {"name": "x", "type": tag, **{"file": {"path": "/x"}, "loki": {"url": "http://127.0.0.1:3100"}, "s3": {"bucket": "bkt"}}[tag]}
    assert parse({"sinks": [sink]}).sinks[0].concurrency == 1
    with pytest.raises(ConfigError) as err:
        parse({"sinks": [{**sink, "concurrency": 4}]})
    assert f"concurrency 4: a {tag} sink sends one batch at a time" in str(err.value)


def test_a_sink_that_takes_batches_in_any_order_honours_concurrency() -> None:
    sink = {"name": "x", "type": "sls", "endpoint": "cn-hangzhou.log.aliyuncs.com", "project": "proj", "logstore": "audit"}
    assert parse({"sinks": [sink]}).sinks[0].concurrency == 4
    assert parse({"sinks": [{**sink, "concurrency": 16}]}).sinks[0].concurrency == 16
