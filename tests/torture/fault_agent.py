"""Launcher for the spool SIGKILL torture test: the real Agent, with every sink whose name starts with
"flaky" replaced by a FaultSink that POSTs to URL (the test's FaultServer); other sinks are built from
the config as `kube-audit-shipper run` builds them. The "flaky" entries of the config give the engine
their retry, spool, batch and concurrency settings.

usage: python -m tests.torture.fault_agent CONFIG URL [--once] [--timeout SECONDS]

Exit code: the Agent's (0 after SIGTERM/SIGINT or a finished --once).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from kube_audit_shipper.app import Agent
from kube_audit_shipper.config import load
from kube_audit_shipper.obs import logs
from kube_audit_shipper.sinks.registry import build_sink, sink_context
from tests.support.fault_sink import FaultSink


def build_sinks(cfg: Any, url: str, timeout: float) -> list[Any]:
    ctx = sink_context(node=cfg.node, state_dir=cfg.state_dir, input_paths=cfg.input.paths)
    return [FaultSink(s.name, url, timeout=timeout) if s.name.startswith("flaky") else build_sink(s, ctx) for s in cfg.sinks]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fault_agent")
    p.add_argument("config")
    p.add_argument("url")
    p.add_argument("--once", action="store_true")
    p.add_argument("--timeout", type=float, default=2.0, help="FaultSink HTTP timeout")
    args = p.parse_args(argv)
    logs.setup("warning", "text")
    cfg = load(args.config)
    return asyncio.run(_run(Agent(cfg, sinks=build_sinks(cfg, args.url, args.timeout)), once=args.once))


async def _run(agent: Agent, *, once: bool) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # as the service does: a clean stop on SIGTERM
        loop.add_signal_handler(sig, agent.request_stop)
    return await agent.run(once=once)


if __name__ == "__main__":
    sys.exit(main())
