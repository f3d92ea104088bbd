"""The long-running service around the Agent: signals, hot reload, systemd notifications.

SIGTERM/SIGINT stop the agent cleanly (a second one forces). SIGHUP re-reads the config file and the
policy it names and validates both first; an invalid new config is rejected with every error logged and
counted (`kube_audit_shipper_config_reloads_total{result="failed"}`), and the old one keeps running.
A valid one takes effect without losing or duplicating events:
- only `policy`/`enrich` changed (or just the policy file's content): the new transform is swapped in
  between two chunks; reading, sinks and in-flight batches go on untouched;
- anything else (inputs, sinks, batching, ...): the running pipeline stops the way SIGTERM stops it
  (in-flight batches finish, the final checkpoint is written), and a new one starts from that
  checkpoint with the new config, in the same process. Nothing acknowledged is re-sent and nothing
  unacknowledged is checkpointed, so the swap neither loses nor duplicates events.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import msgspec

from agent.app import Agent, build_transform
from agent.config import Config, load
from agent.errors import ConfigError, PolicyError
from agent.obs.metrics import Metrics

log = logging.getLogger(__name__)


class Service:
    def __init__(self, config_path: str, cfg: Config, *, notifier: Any = None) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.notifier = notifier
        self.metrics = Metrics()
        self.agent: Agent | None = None
        self._next_cfg: Config | None = None
        self._reload_lock = asyncio.Lock()

    def _notify(self, method: str, *args: Any) -> None:
        if self.notifier is not None:
            getattr(self.notifier, method)(*args)

    async def reload(self) -> bool:
        """Validate the config file again and apply it. True if the new config was taken."""
        async with self._reload_lock:
            self._notify("reloading")
            try:
                new = await asyncio.to_thread(load, self.config_path)
                transform = await asyncio.to_thread(build_transform, new)
            except (ConfigError, PolicyError) as exc:
                self.metrics.config_reloads.labels("failed").inc()
                log.error("reload rejected; the running config stays in effect:\n%s", exc, extra={"config": self.config_path})
                self._notify("ready")
                return False
            agent = self.agent
            assert agent is not None
            same_pipeline = msgspec.structs.replace(new, policy=self.cfg.policy, enrich=self.cfg.enrich) == self.cfg
            if same_pipeline and agent.processor is not None:
                agent.processor.transform = transform  # taken by the next chunk the reader processes
                self.cfg = new
                agent.cfg = new
                self.metrics.config_reloads.labels("applied").inc()
                log.info("reload: policy and enrichment swapped in place", extra={"config": self.config_path})
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
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        try:
            while True:
                self.agent = Agent(self.cfg, metrics=self.metrics, notifier=self.notifier)
                rc = await self.agent.run(once=once, install_signals=False)
                if self._next_cfg is None:
                    self._notify("stopping")
                    return rc
                self.cfg, self._next_cfg = self._next_cfg, None
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        self._next_cfg = None
        self._notify("stopping")
        if self.agent is not None:
            self.agent.request_stop()
