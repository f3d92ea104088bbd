"""Running the agent as the benchmark does: its own process (``python -m kube_audit_shipper run``), a config written here, and
the zstd file sink's output read back.

Three configurations, everything else at the defaults of ``config/default.yaml``:

* ``no_policy``: no ``policy.file``, ``enrich: {enabled: false}``, ``detect: {enabled: false}``: lines are shipped
  unchanged after the UTF-8 and JSON-object check (what Fluent Bit's tail → json → file is compared with);
* ``policy``: the sample policy ``config/policy/audit-policy.yaml`` and the default enrichment (static node field,
  derived fields, redaction), detection explicitly off;
* ``policy_detect``: the same with detection on (``detect: {enabled: true}``, the built-in rules): what a deployment
  runs by default. The difference to ``policy`` is the cost of detection.

``processing.workers`` is the agent's default (one worker process per core beyond the first) unless the
environment variable ``BENCH_WORKERS`` sets it (``BENCH_WORKERS=0``: everything in the agent's process).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.bench.measure import REPO

POLICY_FILE = REPO / "config" / "policy" / "audit-policy.yaml"
CONFIGS = ("no_policy", "policy", "policy_detect")
#: What each configuration is, for the tables.
LABELS = {"no_policy": "no policy", "policy": "policy + enrichment", "policy_detect": "policy + enrichment + detection"}
DEFAULT_MAX_WAIT_MS = 1000  # batch.max_wait_ms in config/default.yaml; the configs below leave it at the default


def agent_config(work: Path, name: str, log_path: Path, kind: str, *, backfill: bool, extra: dict[str, Any] | None = None) -> Path:
    """Write the agent config for one run under `work/<name>/`; returns its path."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown agent config {kind!r}")
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "node_name": "bench-node",
        "input": {"paths": [str(log_path)], "start_at": "beginning", "backfill_rotated": backfill},
        "sinks": [{"name": "archive", "type": "file", "path": str(root / "out"), "compression": "zstd"}],
        "metrics": {"listen": None},
    }
    if kind == "no_policy":
        cfg["enrich"] = {"enabled": False}
    else:
        cfg["policy"] = {"file": str(POLICY_FILE)}
    cfg["detect"] = {"enabled": kind == "policy_detect"}
    if os.environ.get("BENCH_WORKERS"):
        cfg["processing"] = {"workers": int(os.environ["BENCH_WORKERS"])}
    for key, value in (extra or {}).items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path = root / "config.yaml"
    path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is YAML
    return path


def agent_argv(config: Path, *, once: bool) -> list[str]:
    return [sys.executable, "-m", "kube_audit_shipper", "--log-level", "warning", "run", *(["--once"] if once else []), "-c", str(config)]


def output_dir(config: Path) -> Path:
    return config.parent / "out"


def output_bytes(out_dir: Path) -> int:
    return sum(p.stat().st_size for p in out_dir.iterdir()) if out_dir.exists() else 0
