"""SIGHUP reload of a running agent (a subprocess): in place for policy, restart for the rest, rejected when invalid."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import msgspec
import yaml

from kube_audit_shipper.app import reload
from tests.support.corpus import REPO, numbered_lines
from tests.support.harness import append, sink_lines
from tests.support.sink_context import context
from tests.support.wait import until_blocking


def _reloads(port: int, result: str) -> float:
    """kube_audit_shipper_config_reloads_total{result=...} of the running agent; 0 while it is not serving (a restart)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    prefix = f'kube_audit_shipper_config_reloads_total{{result="{result}"}} '
    return next((float(line[len(prefix) :]) for line in body.splitlines() if line.startswith(prefix)), 0.0)


def _ready(port: int) -> bool:
    try:
        return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200)
    except OSError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sighup_reload_applies_valid_config_and_rejects_invalid(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    out = tmp_path / "out"
    port = _free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n")
    base = {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(log)], "poll_interval_ms": 50},
        "batch": {"max_events": 50, "max_wait_ms": 50},
        "policy": {"file": str(policy)},
        "enrich": {"enabled": False},
        "sinks": [{"name": "a", "type": "file", "path": str(out)}],
        "checkpoint": {"flush_interval_ms": 100},
        "metrics": {"listen": f"127.0.0.1:{port}"},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base))
    append(log, numbered_lines(100))
    proc = subprocess.Popen([sys.executable, "-m", "kube_audit_shipper", "run", "-c", str(cfg)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        events = lambda: [msgspec.json.decode(x) for x in sink_lines(out, include_tmp=True)]  # noqa: E731
        until_blocking(lambda: len(events()) >= 100, what="first events")

        # 1. policy file changed: swapped in place; new events come out at the new level
        policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    verbs: [get]\n  - level: Metadata\n")
        proc.send_signal(signal.SIGHUP)
        until_blocking(lambda: _reloads(port, "applied") == 1, what="the policy reload applied")
        more = numbered_lines(100, start=100)
        append(log, more)
        gets = sum(1 for x in more if msgspec.json.decode(x).get("verb") == "get")
        until_blocking(lambda: len(events()) >= 200 - gets, what="events after the policy reload")

        # 2. an invalid config is rejected; the old one keeps running
        cfg.write_text(yaml.safe_dump({**base, "batch": {"max_events": 0}}))
        proc.send_signal(signal.SIGHUP)
        until_blocking(lambda: _reloads(port, "failed") == 1, what="the invalid config rejected")
        assert proc.poll() is None
        # 3. a batching change and a new sink apply while running: nothing lost, nothing twice;
        #    the new sink gets the events read from then on
        out2 = tmp_path / "out2"
        cfg.write_text(
            yaml.safe_dump({**base, "batch": {"max_events": 7, "max_wait_ms": 50}, "sinks": [*base["sinks"], {"name": "b", "type": "file", "path": str(out2)}]})
        )
        proc.send_signal(signal.SIGHUP)
        until_blocking(lambda: out2.exists(), what="the added sink")
        until_blocking(lambda: _reloads(port, "applied") == 2, what="the reload with a new sink applied")
        last = numbered_lines(50, start=200)
        gets += sum(1 for x in last if msgspec.json.decode(x).get("verb") == "get")  # the new policy drops them too
        append(log, last)
        until_blocking(lambda: len(events()) >= 250 - gets, what="events after the reload")
        last_kept = {msgspec.json.decode(x)["auditID"] for x in last if msgspec.json.decode(x).get("verb") != "get"}
        until_blocking(lambda: {msgspec.json.decode(x)["auditID"] for x in sink_lines(out2, include_tmp=True)} >= last_kept, what="the added sink's events")
        # 4. a change of state_dir-level settings restarts the pipeline from its checkpoint
        cfg.write_text(yaml.safe_dump({**base, "batch": {"max_events": 7, "max_wait_ms": 50}, "checkpoint": {"flush_interval_ms": 200}}))
        proc.send_signal(signal.SIGHUP)
        until_blocking(lambda: _reloads(port, "restarted") == 1 and _ready(port), what="the pipeline restarted and ready")
        tail = numbered_lines(20, start=250)
        gets += sum(1 for x in tail if msgspec.json.decode(x).get("verb") == "get")
        append(log, tail)
        until_blocking(lambda: len(events()) >= 270 - gets, what="events after the restart")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'kube_audit_shipper_config_reloads_total{result="applied"} 2.0' in body
        assert 'kube_audit_shipper_config_reloads_total{result="failed"} 1.0' in body
        assert 'kube_audit_shipper_config_reloads_total{result="restarted"} 1.0' in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "batch.max_events: expected int >= 1" in err.decode()
    ids = [e["auditID"] for e in (msgspec.json.decode(x) for x in sink_lines(out))]
    assert len(ids) == len(set(ids)) == 270 - gets  # nothing twice, nothing lost


def test_apply_removes_a_sink_and_checkpoints_stop_waiting_for_it(tmp_path: Path) -> None:
    """A reload that removes a down sink: its batches in flight are abandoned at the shutdown timeout,
    then the checkpoint follows the remaining sink; the reader never stopped."""
    import asyncio

    from kube_audit_shipper.config import parse
    from kube_audit_shipper.sinks.file.config import FileSinkConfig
    from kube_audit_shipper.sinks.file.sink import FileSink
    from tests.support.harness import Running
    from tests.support.wait import until

    log = tmp_path / "log" / "audit.log"
    lines = numbered_lines(300)
    append(log, lines)
    base = {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(log)], "poll_interval_ms": 50},
        "batch": {"max_events": 50, "max_wait_ms": 50},
        "enrich": {"enabled": False},
        "sinks": [{"name": "a", "type": "file", "path": str(tmp_path / "out")}, {"name": "b", "type": "file", "path": str(tmp_path / "outb")}],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
        "shutdown_timeout_s": 0.5,
    }
    cfg = parse(base)
    gate = asyncio.Event()

    class Down(FileSink):
        async def send(self, request):  # type: ignore[no-untyped-def]
            await gate.wait()  # never set: sink b is down
            return await super().send(request)

    sinks = [
        FileSink(FileSinkConfig(name="a", path=str(tmp_path / "out")), context(tmp_path / "state")),
        Down(FileSinkConfig(name="b", path=str(tmp_path / "outb")), context(tmp_path / "state")),
    ]

    async def scenario() -> int:
        async with Running(cfg, sinks=sinks) as run:
            agent = run.agent
            await until(lambda: len(sink_lines(tmp_path / "out", include_tmp=True)) == 300, what="sink a")
            assert agent.records.records[0].offset == 0  # type: ignore[union-attr]  # b holds the checkpoint
            new = parse({**base, "sinks": base["sinks"][:1]})
            assert await reload.apply(agent, new, agent.processor.transform)  # type: ignore[union-attr]
            await until(lambda: agent.records.records[0].offset == log.stat().st_size, what="checkpoint after removing b")  # type: ignore[union-attr]
            assert [r.name for r in agent.runners] == ["a"]
            await run.stop()
            return len(sink_lines(tmp_path / "out"))

    assert asyncio.run(scenario()) == 300


def test_changing_a_failing_sink_restarts_the_pipeline_instead_of_stranding_its_batches(tmp_path: Path) -> None:
    import asyncio

    from kube_audit_shipper.config import parse
    from kube_audit_shipper.sinks.file.config import FileSinkConfig
    from kube_audit_shipper.sinks.file.sink import FileSink
    from tests.support.harness import Running
    from tests.support.wait import until

    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(100))
    base = {
        "state_dir": str(tmp_path / "state"),
        "input": {"paths": [str(log)], "poll_interval_ms": 50},
        "batch": {"max_events": 50, "max_wait_ms": 50},
        "sinks": [{"name": "a", "type": "file", "path": str(tmp_path / "out"), "spool": None}],  # no spool: nothing may be checkpointed
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
        "shutdown_timeout_s": 0.3,
    }
    gate = asyncio.Event()
    sending: list[object] = []

    class Down(FileSink):
        async def send(self, request):  # type: ignore[no-untyped-def]
            sending.append(request)
            await gate.wait()
            return await super().send(request)

    async def scenario() -> tuple[bool, bool, int]:
        cfg = parse(base)
        async with Running(cfg, sinks=[Down(FileSinkConfig(name="a", path=str(tmp_path / "out")), context(tmp_path / "state"))]) as run:
            agent = run.agent
            await until(lambda: agent.metrics_state().events_read == 100, what="read")
            # read is not yet handed to the sink: wait until the failing sink holds a batch, which the change strands
            await until(lambda: sending, what="a batch in flight to the failing sink")
            fixed = parse({**base, "sinks": [{**base["sinks"][0], "compression": "none"}]})
            assert await reload.apply(agent, fixed, agent.processor.transform)  # type: ignore[union-attr]
            await until(lambda: agent.stop_event.is_set(), what="a restart requested")
            rc = await asyncio.wait_for(run.task, 10)  # type: ignore[arg-type]
            return agent.restart_with is fixed, agent.records.records[0].offset == 0, rc  # type: ignore[union-attr]

    same, nothing_checkpointed, rc = asyncio.run(scenario())
    assert same and nothing_checkpointed and rc == 0  # the new pipeline re-reads from 0
