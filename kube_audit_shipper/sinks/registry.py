"""The one place that knows every sink: type name → config class, and the sink class to build.

Config classes are imported eagerly (they only need msgspec); sink implementations are imported only
when a sink of that type is configured, so a missing optional dependency of an unused sink never matters.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

from kube_audit_shipper.delivery.config import SinkConfigBase
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.sinks.loki.config import LokiSinkConfig
from kube_audit_shipper.sinks.s3.config import S3SinkConfig
from kube_audit_shipper.sinks.sls.config import SlsSinkConfig

SINK_CONFIGS: dict[str, type] = {"file": FileSinkConfig, "sls": SlsSinkConfig, "loki": LokiSinkConfig, "s3": S3SinkConfig}
SINK_IMPLEMENTATIONS: dict[str, str] = {
    "file": "kube_audit_shipper.sinks.file.sink:FileSink",
    "sls": "kube_audit_shipper.sinks.sls.sink:SlsSink",
    "loki": "kube_audit_shipper.sinks.loki.sink:LokiSink",
    "s3": "kube_audit_shipper.sinks.s3.sink:S3Sink",
}

if TYPE_CHECKING:  # what every member of the union has, for the type checker
    SinkConfig = SinkConfigBase
else:  # a tagged union on `type`, built from the table above
    SinkConfig = Union[tuple(SINK_CONFIGS.values())]  # noqa: UP007


def sink_type(cfg: Any) -> str:
    return str(type(cfg).__struct_config__.tag)


# context a sink type needs beyond (cfg, node, state_dir): the SLS `__path__` tag names the input paths
SINK_CONTEXT: dict[str, tuple[str, ...]] = {"sls": ("input_paths",)}


def build_sink(cfg: Any, *, node: str, state_dir: str, input_paths: Sequence[str] = ()) -> Any:
    """Import the configured sink's implementation (only now) and build it: `XSink(cfg, node=, state_dir=)`.

    `state_dir` is the agent's; a sink that keeps files of its own (S3 staging) uses `<state_dir>/<kind>/<name>`.
    """
    kind = sink_type(cfg)
    module, _, attr = SINK_IMPLEMENTATIONS[kind].partition(":")
    context = {"input_paths": tuple(input_paths)}
    extra = {k: context[k] for k in SINK_CONTEXT.get(kind, ())}
    return getattr(importlib.import_module(module), attr)(cfg, node=node, state_dir=state_dir, **extra)
