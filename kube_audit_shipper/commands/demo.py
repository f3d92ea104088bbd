"""`demo`: one command that shows what the agent is for: events shipped, trimmed, and understood.

Everything runs for real, in one directory (a new temporary one, or ``--dir``, which must be empty): a fake
kube-apiserver (`demo.feed`) writes realistic audit events (`demo.scenario`), with four suspicious actions among
them (`demo.incidents`), to ``log/audit.log``, rotating it by rename and gzipping the backups while the agent reads
it. The agent is the same `Agent` as `run`, with the config and audit Policy the demo writes next to the log
(`demo.agent_config`): it trims the events with the Policy, runs the built-in detection rules on every event as
recorded, ships the events to a zstd file sink (``out/``) and delivers the alerts to a `file` alert target
(``alerts/``). Then `report` runs over the recorded log and writes ``report.html``.

stdout gets a progress display (`demo.progress`: a bar on a terminal, plain lines otherwise) and, at the end, the
shipped summary, the alerts as delivered, and the report's path (`demo.summary`). The agent's own log goes to
stderr at WARNING (``-v``: at ``--log-level``, default info).

Exit codes: 0; 1 when an event written was not shipped, dropped or dead-lettered, a suspicious action raised
no alert, the fake apiserver failed or the report could not be written; 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kube_audit_shipper.commands import report
from kube_audit_shipper.config import load
from kube_audit_shipper.demo.agent_config import DemoFiles
from kube_audit_shipper.demo.apiserver import list_backups
from kube_audit_shipper.demo.feed import AuditFeed
from kube_audit_shipper.demo.progress import LiveLineGuard, Progress, ProgressDisplay
from kube_audit_shipper.demo.scenario import Scenario
from kube_audit_shipper.demo.summary import Shipped, alert_lines, caught, read_alerts, shipped_lines
from kube_audit_shipper.obs.metrics import Snapshot

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_BYTES = 4 << 20  # the apiserver's --audit-log-maxsize here: small, so that the demo shows rotations
SINK = "archive"  # the event sink's name in the config demo.agent_config writes
_TICK_S = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `demo` command's arguments (the CLI creates the subparser)."""
    parser.add_argument("--events", type=int, default=50_000, help="events to write (default: 50000)")
    parser.add_argument("--rate", type=float, default=0, help="events per second (default 0: as fast as possible)")
    parser.add_argument("--dir", help="an empty or new directory to run in (default: a new temporary directory)")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the generated traffic (default: 1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the agent's log at --log-level (default: its warnings only)")


def run(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> int:
    return run_demo(events=args.events, rate=args.rate, directory=args.dir, seed=args.seed, out=out, err=err, verbose=args.verbose)


def run_demo(
    *, events: int, rate: float, directory: str | None, seed: int, out: TextIO, err: TextIO | None = None, verbose: bool = False, live: bool | None = None
) -> int:
    """Run the demo; the exit code. ``live`` (default: whether ``out`` is a terminal) draws the progress bar."""
    err = sys.stderr if err is None else err
    if events < 0 or rate < 0:
        err.write("kube-audit-shipper demo: --events and --rate must be >= 0\n")
        return EXIT_USAGE
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="kube-audit-shipper-demo-"))
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        err.write(f"kube-audit-shipper demo: {root} is not an empty directory; give a new or empty one\n")
        return EXIT_USAGE
    files = DemoFiles(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        files.write()
    except OSError as exc:
        err.write(f"kube-audit-shipper demo: cannot write in {root}: {exc.strerror or exc}\n")
        return EXIT_FAILED
    scenario = Scenario(seed, events)
    display = ProgressDisplay(out, events, live=out.isatty() if live is None else live)
    _intro(out, files, scenario, rate)
    with _agent_logs(verbose, display):
        return asyncio.run(_run(files, scenario, rate, out, display))


@contextlib.contextmanager
def _agent_logs(verbose: bool, display: ProgressDisplay) -> Iterator[None]:
    """The agent's log at WARNING unless verbose; on a terminal, the progress line wiped before each record."""
    agent_log = logging.getLogger("kube_audit_shipper")
    level = agent_log.level
    if not verbose:
        agent_log.setLevel(max(logging.WARNING, agent_log.getEffectiveLevel()))
    guard = LiveLineGuard(display)
    handlers = logging.getLogger().handlers if display.live else []
    for handler in handlers:
        handler.addFilter(guard)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(guard)
        agent_log.setLevel(level)


def _intro(out: TextIO, files: DemoFiles, scenario: Scenario, rate: float) -> None:
    pace = f"{rate:,.0f} events/s" if rate else "as fast as it can"
    out.write(
        f"kube-audit-shipper demo in {files.root}\n"
        f"  a fake kube-apiserver writes {scenario.events:,} audit events to {files.log}, {pace},\n"
        f"  rotating it every {MAX_BYTES >> 20} MiB and gzipping the backups, while the agent ({files.config}) reads it,\n"
        "  trims the events with an audit Policy, runs the built-in detection rules and ships events and alerts\n"
    )
    if scenario.incidents:
        out.write("  among the normal traffic:\n")
        out.writelines(f"    - {incident.title}\n" for incident in scenario.incidents)
    else:
        out.write(f"  (too few events for the suspicious actions: they need at least {scenario.required})\n")
    out.write("\n")
    out.flush()


def _progress(feed: AuditFeed, state: Snapshot) -> Progress:
    return Progress(feed.written, state.shipped.get(SINK, (0, 0))[0], feed.rotations, sum(state.alerts_raised.values()))


def _accounted(state: Snapshot) -> int:
    """Events the agent is done with: shipped, dropped by the policy, or dead-lettered."""
    return state.shipped.get(SINK, (0, 0))[0] + sum(state.dropped.values()) + sum(state.deadlettered.values())


async def _run(files: DemoFiles, scenario: Scenario, rate: float, out: TextIO, display: ProgressDisplay) -> int:
    from kube_audit_shipper.app import Agent  # here: the CLI builds its parser from this module, and --help needs no agent

    agent = Agent(load(files.config))
    feed = AuditFeed(scenario, files.log, rate_per_s=rate, max_bytes=MAX_BYTES)
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(agent.run(on_ready=lambda _agent: ready.set()))
    waiter = asyncio.get_running_loop().create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():  # the agent ended before it was ready: its exit code, or its exception
        waiter.cancel()
        return await task
    started = time.monotonic()
    feed.start()
    try:
        while not task.done():
            state = agent.metrics_state()
            feed.read_up_to(state.bytes_read)
            display.update(_progress(feed, state))
            if feed.done and _accounted(state) >= feed.written:
                break
            await asyncio.sleep(_TICK_S)
        agent.request_stop()
        rc = await task
    finally:
        feed.stop()
        await asyncio.to_thread(feed.join)
    elapsed = time.monotonic() - started
    state = agent.metrics_state()
    display.finish(_progress(feed, state))
    out.write("\n")
    if feed.error is not None:
        out.write(f"demo: the fake kube-apiserver failed: {feed.error!r}\n")
        return EXIT_FAILED
    return _conclude(files, scenario, feed, state, elapsed, out, rc)


def _conclude(files: DemoFiles, scenario: Scenario, feed: AuditFeed, state: Snapshot, elapsed: float, out: TextIO, rc: int) -> int:
    """The shipped summary, the alerts as delivered, the report; the exit code."""
    outputs = sorted(files.events.glob("*.ndjson.zst"))
    backups = list_backups(files.log)
    measured = Shipped(feed.written, feed.written_bytes, len(backups), len(outputs), sum(p.stat().st_size for p in outputs), elapsed, files.events)
    out.writelines(line + "\n" for line in shipped_lines(state, measured, SINK))
    ok = rc == EXIT_OK and _accounted(state) == feed.written
    if rc != EXIT_OK:
        out.write(f"  the agent stopped with exit code {rc}\n")
    elif not ok:
        out.write("  not every event written was accounted for (shipped, dropped or dead-lettered)\n")
    alerts = read_alerts(files.alerts)
    found = caught(alerts, scenario.incidents, scenario.audit_ids)
    out.write("\n")
    out.writelines(line + "\n" for line in alert_lines(alerts, sum(state.alerts_raised.values()), files.alerts, found))
    ok = ok and all(not c.missing for c in found)
    out.write("\nreport\n")
    logs = [*backups, files.log] if files.log.exists() else backups
    if logs:
        written, message = _write_report(files, logs)
        out.write(f"  {message}\n")
        ok = ok and written
    else:
        out.write("  no events were written, so there is nothing to report\n")
    out.write(
        "\nlook at it\n"
        f"  events    zstd -dc {files.events}/*.zst | head -1\n"
        f"  alerts    zstd -dc {files.alerts}/*.zst\n"
        f"  policy    kube-audit-shipper policy check --policy {files.policy} {files.log.parent}/*\n"
    )
    out.flush()
    return EXIT_OK if ok else EXIT_FAILED


def _write_report(files: DemoFiles, logs: list[Path]) -> tuple[bool, str]:
    """Run `report` over the recorded log (oldest backup first) with the demo's Policy and detection config."""
    options = argparse.ArgumentParser(prog="kube-audit-shipper report", add_help=False)
    report.add_arguments(options)
    argv = [*map(str, logs), "-o", str(files.report), "--policy", str(files.policy), "-c", str(files.config), "--title", "kube-audit-shipper demo", "-q"]
    said, problems = io.StringIO(), io.StringIO()
    rc = report.run(options.parse_args(argv), said, problems)
    if rc != report.EXIT_OK:
        return False, f"the report failed (exit {rc}): {problems.getvalue().strip() or said.getvalue().strip()}"
    return True, f"{files.report}: overview, resource operations, who, cost and policy; open it in a browser"
