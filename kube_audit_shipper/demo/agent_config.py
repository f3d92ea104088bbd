"""The files the demo gives the agent: its config and the audit Policy it trims with, written where the demo runs.

They are ordinary files, so what the demo ran can be read and run again (`kube-audit-shipper validate -c
DIR/config.yaml`, `kube-audit-shipper policy check --policy DIR/policy.yaml DIR/log/*`). The config is the one a
node would have, with small batches so that output shows up quickly: the audit log as input, the Policy, a
zstd file sink for the events, detection on (as by default) with the built-in rules, and a `file` alert target,
so alerts are delivered by the same engine as events and stored as JSON records.

The Policy is the sample one (config/policy/audit-policy.yaml) without its `level: None` rules: it trims bodies
and managedFields but drops nothing, so every event the demo writes is in the output and can be counted there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO_POLICY", "DemoFiles"]

DEMO_POLICY = """\
# The demo's audit Policy (policy.file): what the agent ships of what kube-apiserver recorded.
# A real policy would also drop (level: None) health checks, Events and lease renewals; this one
# only trims, so that every event the demo writes is in the output.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
omitManagedFields: true
rules:
  # Secrets, ConfigMaps and tokens: who touched them, never their content.
  - level: Metadata
    resources:
      - {group: "", resources: [secrets, configmaps, serviceaccounts/token]}
      - {group: authentication.k8s.io, resources: [tokenreviews]}
  # Interactive access to workloads: everything.
  - level: RequestResponse
    resources: [{group: "", resources: [pods/exec, pods/attach, pods/portforward, pods/ephemeralcontainers]}]
  # Reads: metadata only.
  - level: Metadata
    verbs: [get, list, watch]
  # RBAC changes: the full request and response.
  - level: RequestResponse
    resources: [{group: rbac.authorization.k8s.io}]
  # Heartbeats and status reports: who and when, not the body.
  - level: Metadata
    resources:
      - {group: "", resources: [nodes/status, pods/status, events]}
      - {group: coordination.k8s.io, resources: [leases]}
  # Every other write: the request body.
  - level: Request
    verbs: [create, update, patch, delete, deletecollection]
  # Anything else.
  - level: Metadata
"""

_CONFIG = """\
# The agent config the demo ran with (`kube-audit-shipper validate -c {config}` checks it).
state_dir: {state}
node_name: demo-node
input:
  paths: [{log}]
  poll_interval_ms: 200
policy:
  file: {policy}
batch: {{max_events: 2048, max_bytes: 2097152, max_wait_ms: 200}}
sinks:
  - {{name: archive, type: file, path: {events}, compression: zstd}}
detect:
  enabled: true        # the default: the built-in rules run on every event as recorded
alerts:
  - name: alerts
    type: file         # alerts stored as JSON records, delivered like events
    path: {alerts}
    compression: zstd
    batch: {{max_events: 256, max_bytes: 1048576, max_wait_ms: 200}}
metrics: {{listen: null}}
"""


@dataclass(frozen=True)
class DemoFiles:
    """Where everything of one demo run lives, under ``root``."""

    root: Path

    @property
    def log(self) -> Path:
        return self.root / "log" / "audit.log"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def events(self) -> Path:
        return self.root / "out"

    @property
    def alerts(self) -> Path:
        return self.root / "alerts"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def write(self) -> None:
        """Create the log directory and write the Policy and the config (paths quoted as JSON strings, valid YAML)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.policy.write_text(DEMO_POLICY, encoding="utf-8")
        quoted = {
            name: json.dumps(str(path))
            for name, path in (
                ("config", self.config),
                ("state", self.state),
                ("log", self.log),
                ("policy", self.policy),
                ("events", self.events),
                ("alerts", self.alerts),
            )
        }
        self.config.write_text(_CONFIG.format(**quoted), encoding="utf-8")
