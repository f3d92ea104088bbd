"""From the config to the parts a pipeline is made of: the state directory's lock, the detection engine, the
per-line transform. Each raises the error the operator must act on (StateError, PolicyError, RulesError),
so `validate` and `run` report the same problems."""

from __future__ import annotations

import logging
from pathlib import Path

from kube_audit_shipper.config import Config
from kube_audit_shipper.durable import ensure_dir, lock_exclusive
from kube_audit_shipper.errors import StateError
from kube_audit_shipper.obs.state_writes import describe
from kube_audit_shipper.process.detect.build import build_engine
from kube_audit_shipper.process.detect.engine import DetectionEngine
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.transform import Transform, build_transform
from kube_audit_shipper.process.workers import ShapePool, ShapeSpec, log_settings

log = logging.getLogger(__name__)


def lock_state_dir(state_dir: Path) -> int:
    """Hold an exclusive lock on state_dir for the life of the process: one agent per state. A state_dir
    that cannot be created or written is a StateError (one clear line, exit code 2), not a traceback."""
    try:
        ensure_dir(state_dir, 0o700)
        return lock_exclusive(state_dir / "lock")
    except BlockingIOError:
        raise StateError(f"{state_dir} is in use by another kube-audit-shipper process (lock held on {state_dir / 'lock'})") from None
    except OSError as exc:
        where = exc.filename or state_dir
        raise StateError(f"state_dir {state_dir} cannot be used: {where}: {describe(exc)}; the agent needs a writable state directory") from None


def build_detection(cfg: Config) -> DetectionEngine | None:
    """The detection engine of the config's `detect:` section, or None when detection is off.

    Raises RulesError (a ConfigError) listing every problem of the rule files with its file and key path."""
    if not cfg.detect.enabled:
        return None
    derived = cfg.enrich.derived
    engine, _ = build_engine(cfg.detect, shared_admin_users=derived.shared_admin_users, system_user_prefixes=derived.system_user_prefixes)
    return engine


def load_transform(cfg: Config, detector: DetectionEngine | None = None) -> Transform | None:
    """Detection, policy trimming, redaction and enrichment; None when none is configured (lines ship unchanged).

    Raises PolicyError listing every problem of an invalid policy file; its warnings are logged.
    """
    policy = None
    if cfg.policy.file:
        policy, warnings = load_policy(cfg.policy.file)
        for w in warnings:
            log.warning("audit policy: %s", w, extra={"policy": cfg.policy.file})
        log.info("audit policy loaded", extra={"policy": cfg.policy.file, "rules": len(policy.policy.rules)})
    return build_transform(policy, cfg.enrich, node_name=cfg.node, detector=detector, decision_cache_size=cfg.policy.decision_cache_size)


def build_pool(cfg: Config, transform: Transform | None, running: ShapePool | None = None) -> ShapePool | None:
    """The worker processes that shape large reads with the same policy and enrichment as `transform`, or None
    (`processing.workers` is 0, or there is nothing to shape). `running`: a pool to keep if it would be the same."""
    workers = cfg.processing.worker_count()
    if workers == 0 or transform is None:
        return None
    level, fmt = log_settings()
    policy = transform.policy.policy if transform.policy is not None else None
    spec = ShapeSpec(policy, cfg.enrich, cfg.node, cfg.policy.decision_cache_size, level, fmt)
    if running is not None and running.spec == spec and running.workers == workers:
        return running
    return ShapePool(workers, spec)


def cluster_of(cfg: Config) -> str | None:
    """The cluster an alert names: enrichment's static `cluster_id` (or `cluster`) field, if configured."""
    fields = cfg.enrich.static_fields
    value = fields.get("cluster_id", fields.get("cluster"))
    return value if isinstance(value, str) else None
