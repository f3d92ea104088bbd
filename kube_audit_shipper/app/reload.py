"""A reloaded config applied to a running pipeline, without losing or repeating an event.

In place: the transform (policy, enrichment, detection rules) is swapped between two chunks; inputs are
re-evaluated at once; the memory limit changes in place; sinks and alert targets are diffed by name
(RunnerGroup: removed, replaced, added). A change of state_dir, node_name, metrics, checkpoint, deadletter or
processing needs a new pipeline: `apply` says so and the service restarts it from its checkpoint.

`apply` returns once every changed or removed runner has retired, so reloads are serialized (the service
coalesces the SIGHUPs that arrive meanwhile into one more reload).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kube_audit_shipper.app.build import build_pool
from kube_audit_shipper.config import Config

if TYPE_CHECKING:
    from kube_audit_shipper.app.pipeline import Agent
    from kube_audit_shipper.app.runners import RunnerGroup
    from kube_audit_shipper.process.transform import Transform

log = logging.getLogger(__name__)

#: keys whose change needs a new pipeline (restarted from its checkpoint in the same process)
RESTART_KEYS = ("state_dir", "node_name", "metrics", "checkpoint", "deadletter", "processing")


def needs_restart(old: Config, new: Config) -> bool:
    return any(getattr(old, k) != getattr(new, k) for k in RESTART_KEYS)


async def apply(agent: Agent, new: Config, transform: Transform | None) -> bool:
    """Take `new` while running; False when it needs a new pipeline (the caller restarts it)."""
    old = agent.cfg
    if needs_restart(old, new) or agent.tailer is None or agent.processor is None or agent.ledger is None:
        return False
    assert agent.stage is not None
    pool = build_pool(new, transform, running=agent.stage.pool)
    agent.detector = await agent.stage.swap_transform(transform, agent.detector, pool)  # between two chunks, windows carried over
    if new.input != old.input:
        agent.tailer.reconfigure(new.input)
    if new.memory_limit_bytes != old.memory_limit_bytes:
        agent.budget.limit = new.memory_limit_bytes  # wakes the reader if the limit went up
    changes: list[str] = []
    retiring: list[asyncio.Task[None]] = []
    for group, old_list, new_list in ((agent.sinks, old.sinks, new.sinks), (agent.alert_targets, old.alerts, new.alerts)):
        retiring += _diff(agent, group, old, new, old_list, new_list, changes)
    agent.cfg = new
    if retiring:
        await asyncio.gather(*retiring)
    log.info("config applied while running", extra={"sinks": " ".join(changes) or "unchanged", "input_changed": new.input != old.input})
    return True


def _diff(
    agent: Agent, group: RunnerGroup, old: Config, new: Config, old_list: Sequence[Any], new_list: Sequence[Any], changes: list[str]
) -> list[asyncio.Task[None]]:
    assert agent.ledger is not None
    old_by = {s.name: s for s in old_list}
    new_by = {s.name: s for s in new_list}
    retiring = []
    for runner in list(group.runners):
        cfg = new_by.get(runner.name)
        before = old_by.get(runner.name)
        if cfg is None:  # removed: checkpoints stop waiting for it once its batches in flight are done
            retiring.append(agent.supervisor.start(f"retire:{runner.name}", _retire(agent, group, runner, None), ends=True))
            changes.append(f"-{runner.name}")
        elif cfg != before or new.batch_for(cfg) != old.batch_for(before):
            group.hold(runner.name)  # chunks read from now on wait for the new runner
            retiring.append(agent.supervisor.start(f"retire:{runner.name}", _retire(agent, group, runner, cfg), ends=True))
            changes.append(f"~{runner.name}")
    for name, cfg in new_by.items():
        if name not in old_by:  # added: it gets the events read from now on
            agent.ledger.add_sink(name, agent.emitted_offsets())
            group.start(group.add(cfg))
            changes.append(f"+{name}")
    return retiring


async def _retire(agent: Agent, group: RunnerGroup, runner: Any, replacement: Any) -> None:
    """Retire `runner`; then start its replacement, or (removed) take it out of the ledger. A replaced runner
    that could not deliver in time restarts the pipeline from its checkpoint with the config it has."""
    assert agent.ledger is not None
    try:
        delivered = await group.retire(runner, agent.cfg.shutdown_timeout_s)
    except Exception:
        log.exception("stopping a sink replaced by a reload failed", extra={"sink": runner.name})
        delivered = replacement is None
    if replacement is None:
        agent.ledger.remove_sink(runner.name)
    elif delivered:
        group.replace(replacement)
    else:
        log.warning("a sink changed by a reload could not deliver its batches in time; the pipeline restarts from its checkpoint", extra={"sink": runner.name})
        agent.restart_with = agent.cfg
        agent.stop_event.set()
