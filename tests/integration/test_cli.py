"""The command line as a user runs it: exit codes, messages, status, metrics endpoint."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from kube_audit_shipper.cli import main
from tests.support.corpus import REPO, numbered_lines
from tests.support.harness import Running, append, make_config
from tests.support.wait import until, until_blocking


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kube_audit_shipper", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_version_and_help() -> None:
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("kube-audit-shipper ")
    r = _cli("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "run --once" in r.stdout


def test_validate_reports_every_error_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input: {start_at: middle, bogus: 1}\nsinks:\n  - {name: a, type: file, path: /x, rotate_bytes: big}\n")
    r = _cli("validate", "-c", str(cfg))
    assert r.returncode == 2
    assert 'input.start_at: expected "beginning" or "end", got "middle"' in r.stderr
    assert "input.bogus: unknown key" in r.stderr
    assert 'sinks[0].rotate_bytes: expected int >= 1048576, got "big"' in r.stderr
    assert "3 config error(s)" in r.stderr


def test_validate_ok_for_shipped_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_POLICY_FILE", str(REPO / "config" / "policy" / "audit-policy.yaml"))
    for f in sorted((REPO / "config").glob("*.yaml")):
        assert main(["validate", "-c", str(f)]) == 0, f


def test_run_once_then_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(50))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "input": {"paths": [str(log)]},
                "sinks": [{"name": "a", "type": "file", "path": str(tmp_path / "out")}],
                "metrics": {"listen": None},
            }
        )
    )
    assert _cli("run", "--once", "-c", str(cfg_file)).returncode == 0
    append(log, numbered_lines(10, start=50))
    r = _cli("status", "--json", "-c", str(cfg_file))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["files"]
    size = log.stat().st_size
    assert row["path"] == str(log) and row["size"] == size
    assert row["bytes_behind"] == size - row["checkpoint"] > 0
    r = _cli("status", "-c", str(cfg_file))
    assert str(log) in r.stdout and "BEHIND" in r.stdout


def test_state_dir_is_locked_against_a_second_agent(tmp_path: Path) -> None:
    append(tmp_path / "log" / "audit.log", numbered_lines(5))
    cfg = make_config(tmp_path)

    async def scenario() -> None:
        async with Running(cfg):
            from kube_audit_shipper.app import Agent
            from kube_audit_shipper.errors import StateError

            with pytest.raises(StateError, match="in use by another"):
                await Agent(cfg).run()

    asyncio.run(scenario())


def test_metrics_endpoint_serves_prometheus_text(tmp_path: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(40) + [b"not json"])
    cfg = make_config(tmp_path, metrics={"listen": "127.0.0.1:0"})

    async def scenario() -> str:
        async with Running(cfg) as run:
            await until(lambda: run.agent.metrics_state().shipped["archive"][0] == 40, what="shipping")
            await run.agent.write_checkpoint()
            port = run.agent_server_port()  # type: ignore[attr-defined]
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
            health = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status)
            assert health == 200
            return body

    body = asyncio.run(scenario())
    assert "kube_audit_shipper_events_read_total 41.0" in body
    assert 'kube_audit_shipper_events_shipped_total{sink="archive"} 40.0' in body
    assert 'kube_audit_shipper_events_deadlettered_total{reason="malformed"} 1.0' in body
    assert f'kube_audit_shipper_file_bytes_behind{{path="{log}"}} 0.0' in body
    assert "kube_audit_shipper_checkpoint_writes_total" in body


def test_demo_command_ships_every_event(tmp_path: Path) -> None:
    r = _cli("--log-level", "warning", "demo", "--events", "3000", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "events shipped      3000" in r.stdout and "dead-lettered       0" in r.stdout
    assert list((tmp_path / "out").glob("*.ndjson.zst"))


def test_sigterm_stops_cleanly_with_a_final_checkpoint(tmp_path: Path) -> None:
    import signal

    log = tmp_path / "log" / "audit.log"
    append(log, numbered_lines(200))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "input": {"paths": [str(log)]},
                "sinks": [{"name": "a", "type": "file", "path": str(tmp_path / "out")}],
                "checkpoint": {"flush_interval_ms": 60000},  # only the final write at stop can save it
                "metrics": {"listen": None},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kube_audit_shipper", "run", "-c", str(cfg_file)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    until_blocking(lambda: list((tmp_path / "out").glob(".*.tmp")), what="the agent writing its first output file")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    checkpoint = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert checkpoint["files"][0]["offset"] == log.stat().st_size
    assert list((tmp_path / "out").glob("*.ndjson.zst")) and not list((tmp_path / "out").glob(".*"))


def test_validate_lists_every_policy_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Loud\n  - level: None\n    omitStages: [Sometime]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policy: {{file: {policy}}}\nsinks: [{{name: a, type: file, path: {tmp_path / 'out'}}}]\n")
    r = _cli("validate", "-c", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Loud" in r.stderr and "Sometime" in r.stderr


def test_policy_check_reports_savings_on_the_real_corpus() -> None:
    from tests.support.corpus import REAL_AUDIT

    logs = sorted(str(p) for p in REAL_AUDIT.glob("*.jsonl"))
    r = _cli("policy", "check", "--json", "--policy", str(REPO / "config" / "policy" / "audit-policy.yaml"), *logs)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    total = report["total"]
    assert report["valid"] and total["matched"] == 330  # every corpus event went through
    assert total["events_after"] + total["dropped_level_none"] + total["dropped_omitted_stage"] == 330
    assert 0 < total["bytes_after"] < total["bytes_before"]
    assert sum(rule["matched"] for rule in report["rules"]) + report["no_match"]["matched"] == 330
