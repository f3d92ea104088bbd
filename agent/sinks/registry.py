"""The one place that knows every sink: type name → config class, and the sink class to build.

Config classes are imported eagerly (they only need msgspec); sink implementations are imported only
when a sink of that type is configured, so a missing optional dependency of an unused sink never matters.
"""

from __future__ import annotations

import importlib
from typing import Any, Union

from agent.sinks.file.config import FileSinkConfig

SINK_CONFIGS: dict[str, type] = {"file": FileSinkConfig}
SINK_IMPLEMENTATIONS: dict[str, str] = {"file": "agent.sinks.file.sink:FileSink"}

SinkConfig = Union[tuple(SINK_CONFIGS.values())]  # type: ignore[valid-type]  # a tagged union on `type`


def sink_type(cfg: Any) -> str:
    return str(type(cfg).__struct_config__.tag)


def build_sink(cfg: Any, *, node: str, state_dir: str) -> Any:
    """Import the configured sink's implementation (only now) and build it: `XSink(cfg, node=, state_dir=)`.

    `state_dir` is the agent's; a sink that keeps files of its own (S3 staging) uses `<state_dir>/<kind>/<name>`.
    """
    module, _, attr = SINK_IMPLEMENTATIONS[sink_type(cfg)].partition(":")
    return getattr(importlib.import_module(module), attr)(cfg, node=node, state_dir=state_dir)
