"""A full or read-only state directory never makes the agent skip events (issue: no disk can blind the agent).

The state directory is a real, small tmpfs: the tests fill it with a file until the kernel answers ENOSPC,
then free it, while the real agent runs. Mounting needs root (CAP_SYS_ADMIN); elsewhere these tests skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_audit_shipper.app.pipeline import Agent
from kube_audit_shipper.config import Config
from kube_audit_shipper.delivery.spool import Spool
from tests.support.corpus import audit_id, numbered_lines
from tests.support.harness import Running, append, make_config, sink_lines
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the state directory needs root")
    state = tmp_path / "state"
    _mount(state, "size=1m,mode=0700")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False, capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full (ENOSPC); return it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * 4096
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == 28  # ENOSPC
    return filler


def checkpoint_offset(state: Path) -> int:
    doc = json.loads((state / "checkpoints.json").read_bytes())
    return max((f["offset"] for f in doc["files"]), default=0)


def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, state_dir=str(tmp_path / "state"))


@pytest.mark.asyncio
async def test_a_full_state_dir_holds_dead_letters_and_checkpoints_back_and_loses_nothing(tmp_path: Path, small_state_dir: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    first, second = numbered_lines(50, prefix="a"), numbered_lines(50, prefix="b")
    append(log, [*first[:25], b"not json 1", *first[25:]])
    async with Running(config(tmp_path)) as run:
        agent = run.agent
        await until(lambda: checkpoint_offset(small_state_dir) == log.stat().st_size, what="the first part checkpointed")
        assert agent.readiness()
        before = checkpoint_offset(small_state_dir)
        filler = fill(small_state_dir)
        # a dead letter larger than a page: the full tmpfs cannot take it in the last partial page of its segment
        append(log, [*second[:25], b"not json 2 " + b"x" * 20000, *second[25:]])
        await until(lambda: agent.state_writes.errors["deadletter"] > 0, what="a refused dead-letter write")
        await until(lambda: not agent.readiness(), what="not ready while state writes fail")
        metrics = agent.metrics.render().decode()
        assert 'kube_audit_shipper_state_write_errors_total{what="deadletter"}' in metrics
        await asyncio.sleep(0.3)  # several checkpoint intervals (50 ms): none may move past the refused dead letter
        assert checkpoint_offset(small_state_dir) == before
        filler.unlink()  # space returns: everything goes on, no restart
        await until(lambda: checkpoint_offset(small_state_dir) == log.stat().st_size, what="checkpoint at the end once space returned")
        await until(lambda: agent.readiness(), what="ready again")
        assert agent.state_writes.failing() == {}
    shipped = [audit_id(line) for line in sink_lines(tmp_path / "out", include_tmp=True)]
    assert sorted(shipped) == sorted(audit_id(line) for line in first + second)
    reasons = [r["reason"] for r in agent.deadletter.iter_records()] if agent.deadletter else []  # type: ignore[union-attr]
    assert len(reasons) == 2


@pytest.mark.asyncio
async def test_a_checkpoint_write_that_fails_is_retried_until_it_works(tmp_path: Path, small_state_dir: Path) -> None:
    log = tmp_path / "log" / "audit.log"
    lines = numbered_lines(40, prefix="c")
    append(log, lines[:20])
    async with Running(config(tmp_path)) as run:
        agent = run.agent
        await until(lambda: checkpoint_offset(small_state_dir) == log.stat().st_size, what="first checkpoint")
        filler = fill(small_state_dir)
        (small_state_dir / "checkpoints.json.tmp").unlink(missing_ok=True)
        append(log, lines[20:])
        await until(lambda: agent.state_writes.errors["checkpoint"] >= 2, what="two failed checkpoint writes: the writer keeps trying")
        assert not agent.readiness()
        filler.unlink()
        await until(lambda: checkpoint_offset(small_state_dir) == log.stat().st_size, what="checkpoint written once space returned")
        await until(lambda: agent.readiness(), what="ready again")
    assert sorted(audit_id(line) for line in sink_lines(tmp_path / "out", include_tmp=True)) == sorted(audit_id(line) for line in lines)


def _run_once(cfg_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kube_audit_shipper", "run", "--once", "-c", str(cfg_file)], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def _config_file(tmp_path: Path, state_dir: Path) -> Path:
    append(tmp_path / "log" / "audit.log", numbered_lines(3))
    cfg = {
        "state_dir": str(state_dir),
        "input": {"paths": [str(tmp_path / "log" / "audit.log")]},
        "sinks": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}],
        "metrics": {"listen": None},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_a_read_only_state_dir_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    ro = tmp_path / "ro"
    _mount(ro, "size=64k,ro")
    try:
        proc = _run_once(_config_file(tmp_path, ro / "state"))
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False, capture_output=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "state_dir" in x]
    assert "Read-only file system (EROFS)" in line


def test_a_state_dir_that_cannot_be_created_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    proc = _run_once(_config_file(tmp_path, Path("/proc/kube-audit-shipper-test/state")))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert any("state_dir /proc/kube-audit-shipper-test/state cannot be used" in x for x in proc.stderr.splitlines())


@pytest.mark.asyncio
async def test_a_pipeline_stopped_during_its_first_checkpoint_releases_its_spools(tmp_path: Path) -> None:
    """Regression (found by the model test): a pipeline stopped while the state directory refused its first
    checkpoint (a reload restarting it on a full disk) kept its runners' spool locks, so the pipeline restarted
    in the same process failed: "spool … is already open". The runners it never started release them."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoints.json.tmp").mkdir()  # every checkpoint write fails (IsADirectoryError)
    append(tmp_path / "log" / "audit.log", numbered_lines(5))
    agent = Agent(config(tmp_path))
    task = asyncio.get_running_loop().create_task(agent.run())
    await until(lambda: agent.state_writes.errors["checkpoint"] >= 1, what="the first checkpoint refused")
    agent.request_stop()
    await asyncio.wait_for(task, 30)
    Spool(state / "spool" / "archive", max_bytes=1 << 20, segment_bytes=1 << 20).close()  # the lock is free
