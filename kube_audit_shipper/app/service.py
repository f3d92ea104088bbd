"""The long-running service around the Agent: signals, hot reload, systemd notifications.

SIGTERM/SIGINT stop the agent cleanly (a second one forces). SIGHUP re-reads the config file and the
policy it names and validates both first; an invalid new config is rejected with every error logged and
counted (`kube_audit_shipper_config_reloads_total{result="failed"}`), and the old one keeps running.
A valid one takes effect without losing or duplicating events (app/reload.py):
- policy/enrichment (or just the policy file's content): the new transform is swapped in between two
  chunks; inputs: globs re-evaluated at once; memory limit: changed in place;
- sinks: an unchanged sink keeps running untouched; a changed one gets a new runner for the chunks
  read from now on while the old one delivers what it already had (same acknowledgements); a removed
  one finishes its batches in flight, then checkpoints stop waiting for it; an added one gets the
  events read from now on;
- state_dir, node_name, metrics, checkpoint, deadletter or processing changed: the running pipeline stops the way
  SIGTERM stops it (in-flight batches finish, final checkpoint) and a new one starts from that
  checkpoint with the new config, in the same process. Nothing acknowledged is re-sent and nothing
  unacknowledged is checkpointed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from kube_audit_shipper.app import reload
from kube_audit_shipper.app.build import build_detection, load_transform
from kube_audit_shipper.app.pipeline import Agent
from kube_audit_shipper.config import Config, load
from kube_audit_shipper.errors import ConfigError, PolicyError
from kube_audit_shipper.obs.metrics import Metrics

log = logging.getLogger(__name__)


class Service:
    def __init__(self, config_path: str, cfg: Config, *, notifier: Any = None, scrub: Callable[[str], str] | None = None) -> None:
        self.scrub = scrub
        self.config_path = config_path
        self.cfg = cfg
        self.notifier = notifier
        self.metrics = Metrics()
        self.agent: Agent | None = None
        self._next_cfg: Config | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_requested = asyncio.Event()  # SIGHUPs that arrive during a reload make one more, not many
        self._stopping = False

    def _notify(self, method: str, *args: Any) -> None:
        if self.notifier is not None:
            getattr(self.notifier, method)(*args)

    async def reload(self) -> bool:
        """Validate the config file again and apply it. True if the new config was taken."""
        async with self._reload_lock:
            self._notify("reloading")
            try:
                new = await asyncio.to_thread(load, self.config_path)
                transform = await asyncio.to_thread(lambda: load_transform(new, build_detection(new)))
            except (ConfigError, PolicyError) as exc:
                self.metrics.config_reloads.labels("failed").inc()
                log.error("reload rejected; the running config stays in effect:\n%s", exc, extra={"config": self.config_path})
                self._notify("ready")
                return False
            agent = self.agent
            assert agent is not None
            if self._stopping:  # SIGTERM came while the file was read: no reload, no restart
                return False
            if self._next_cfg is not None or agent.stop_event.is_set():  # a restart is under way: it takes the newest file
                self._next_cfg = new
                self.metrics.config_reloads.labels("restarted").inc()
                self._notify("ready")
                return True
            if await reload.apply(agent, new, transform):
                self.cfg = new
                self.metrics.config_reloads.labels("applied").inc()
                log.info("reload applied while running", extra={"config": self.config_path})
                self._notify("ready")
            else:
                self.metrics.config_reloads.labels("restarted").inc()
                log.info("reload: the pipeline restarts with the new config from its checkpoint", extra={"config": self.config_path})
                self._next_cfg = new
                agent.stop_event.set()
            return True

    async def run(self, *, once: bool = False) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        loop.add_signal_handler(signal.SIGINT, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        reloads = loop.create_task(self._reload_on_request(), name="reloads")
        try:
            resume = None
            while True:
                self.agent = Agent(self.cfg, metrics=self.metrics, notifier=self.notifier, scrub=self.scrub, resume=resume)
                rc = await self.agent.run(once=once)
                if self._next_cfg is None and self.agent.restart_with is not None and not self._stopping:
                    self._next_cfg = self.agent.restart_with
                if self._next_cfg is None:
                    self._notify("stopping")
                    return rc
                # the new pipeline starts where this one ended, even if the state directory refused its final checkpoint
                resume = self.agent.last_state if self._next_cfg.state_dir == self.cfg.state_dir else None
                self.cfg, self._next_cfg = self._next_cfg, None
        finally:
            reloads.cancel()
            await asyncio.gather(reloads, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _reload_on_request(self) -> None:
        """One reload at a time: a reload waits until a changed sink's old runner is done, and the SIGHUPs
        that arrive meanwhile are coalesced into one more reload of the file as it is then."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            if self._stopping:
                continue
            try:
                await self.reload()
            except Exception:  # a bug in applying must not end reloads; the running config stays
                self.metrics.config_reloads.labels("failed").inc()
                log.exception("reload failed; the running config stays in effect")

    def _stop(self) -> None:
        self._stopping = True
        self._next_cfg = None
        self._notify("stopping")
        if self.agent is not None:
            self.agent.request_stop()
