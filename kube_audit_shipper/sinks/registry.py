"""The one place that knows every sink: type name → config class, and the sink class to build.

Config classes are imported eagerly (they only need msgspec); sink implementations are imported only
when a sink of that type is configured, so a missing optional dependency of an unused sink never matters.
Every sink is built here, as `XSink(cfg, ctx)`, with the SinkContext the agent made (`sink_context`).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from kube_audit_shipper.delivery.config import SinkConfigBase
from kube_audit_shipper.delivery.context import SinkContext
from kube_audit_shipper.delivery.contract import Sink
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


def implementation(path: str) -> type[Sink]:
    """The sink class named `module:Class` (its module imported only now)."""
    cls = pkgutil.resolve_name(path)
    if not (isinstance(cls, type) and Sink in cls.__mro__):  # (a Protocol with attributes: no issubclass)
        raise TypeError(f"{path} is not a Sink")
    return cls


def sink_context(*, node: str, state_dir: str | Path, input_paths: Sequence[str] = ()) -> SinkContext:
    """The context the agent hands every sink and alert target: this node, the state directory, the input
    paths, and the HTTP client factory every HTTP sink makes its client with."""
    from kube_audit_shipper.sinks.http.client import HttpClients  # (httpx only once a sink is built)

    return SinkContext(node=node, state_dir=Path(state_dir), input_paths=tuple(input_paths), http=HttpClients())


def build_sink(cfg: Any, ctx: SinkContext) -> Sink:
    """Import the configured sink's implementation (only now) and build it: `XSink(cfg, ctx)`."""
    return implementation(SINK_IMPLEMENTATIONS[sink_type(cfg)])(cfg, ctx)  # type: ignore[call-arg]
