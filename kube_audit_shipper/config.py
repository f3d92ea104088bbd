"""The root config: one YAML file composing each component's own config struct.

`load(path)` reads YAML, substitutes `${VAR}` / `${file:/path}`, converts into frozen msgspec Structs
and raises ConfigError listing every problem with its key path. Only `cli` turns that into an exit code.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from kube_audit_shipper.checkpoint.config import CheckpointConfig
from kube_audit_shipper.config_convert import convert_all
from kube_audit_shipper.config_subst import substitute
from kube_audit_shipper.deadletter.config import DeadLetterConfig
from kube_audit_shipper.delivery.config import BatchConfig
from kube_audit_shipper.errors import ConfigError
from kube_audit_shipper.obs.config import MetricsConfig
from kube_audit_shipper.process.config import ProcessingConfig
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.policy.config import PolicyConfig
from kube_audit_shipper.sinks.alert_registry import AlertTargetConfig, name_problems
from kube_audit_shipper.sinks.registry import SinkConfig
from kube_audit_shipper.source.config import InputConfig


class Config(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    state_dir: Annotated[str, msgspec.Meta(min_length=1, description="checkpoints, dead letters, spool")] = "/var/lib/kube-audit-shipper"
    node_name: Annotated[str | None, msgspec.Meta(description="this node's name in metrics, file names and enrichment; default: hostname")] = None
    input: Annotated[InputConfig, msgspec.Meta(description="which files to tail and how")] = msgspec.field(default_factory=InputConfig)
    policy: Annotated[PolicyConfig, msgspec.Meta(description="the audit Policy events are trimmed to")] = msgspec.field(default_factory=PolicyConfig)
    enrich: Annotated[EnrichConfig, msgspec.Meta(description="fields added to every event, and secrets masked")] = msgspec.field(default_factory=EnrichConfig)
    batch: Annotated[BatchConfig, msgspec.Meta(description="how events are grouped for a sink (a sink's own batch block overrides it)")] = msgspec.field(
        default_factory=BatchConfig
    )
    sinks: Annotated[list[SinkConfig], msgspec.Meta(min_length=1, description="where events go; every sink gets every event")]
    detect: Annotated[DetectConfig, msgspec.Meta(description="detection rules evaluated on every event as recorded (docs/rules.md)")] = msgspec.field(
        default_factory=DetectConfig
    )
    alerts: Annotated[
        list[AlertTargetConfig], msgspec.Meta(description="where alerts go: every target gets every alert, each with its own batch, retry and spool")
    ] = msgspec.field(default_factory=list)
    checkpoint: Annotated[CheckpointConfig, msgspec.Meta(description="where reading resumes: written under state_dir")] = msgspec.field(
        default_factory=CheckpointConfig
    )
    deadletter: Annotated[DeadLetterConfig, msgspec.Meta(description="lines and records no sink can take, kept with the reason")] = msgspec.field(
        default_factory=DeadLetterConfig
    )
    metrics: Annotated[MetricsConfig, msgspec.Meta(description="Prometheus metrics and health endpoints")] = msgspec.field(default_factory=MetricsConfig)
    memory_limit_bytes: Annotated[
        int, msgspec.Meta(ge=1 << 20, description="bytes of events in memory (read, not yet acknowledged by every sink); the reader waits above it")
    ] = 16 << 20
    shutdown_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600, description="SIGTERM: time to finish in-flight batches before exit")] = 30.0
    processing: Annotated[ProcessingConfig, msgspec.Meta(description="where the per-line work runs: worker processes for backlogs")] = msgspec.field(
        default_factory=ProcessingConfig
    )

    @property
    def node(self) -> str:
        return self.node_name or socket.gethostname()

    def batch_for(self, sink: Any) -> BatchConfig:
        return sink.batch or self.batch


def _duplicate_sink_names(sinks: Any) -> list[str]:
    """Checked on the raw data, so it is reported along with every other error."""
    seen: set[str] = set()
    errors = []
    for i, sink in enumerate(sinks if isinstance(sinks, list) else []):
        name = sink.get("name") if isinstance(sink, dict) else None
        if isinstance(name, str):
            if name in seen:
                errors.append(f"sinks[{i}].name: duplicate sink name {name!r}")
            seen.add(name)
    return errors


def parse(data: Any, *, env: dict[str, str] | None = None, source: str | None = None) -> Config:
    data, errors = substitute(data, env)
    config: Config
    config, conv_errors = convert_all(data, Config)
    errors += conv_errors
    errors += _duplicate_sink_names(data.get("sinks") if isinstance(data, dict) else None)
    errors += name_problems(data.get("alerts") if isinstance(data, dict) else None, data.get("sinks") if isinstance(data, dict) else None)
    if errors:
        raise ConfigError(errors, source)
    return config


def load(path: str | Path, *, env: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror or exc}"], str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config file is not UTF-8: {exc}"], str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(exc, 'problem', None) or exc}"], str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"<root>: expected a mapping of keys, got {type(data).__name__}"], str(path))
    return parse(data, env=env, source=str(path))
