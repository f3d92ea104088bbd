"""Model-based test of the tailer and the whole agent (issue 13 item 7).

As Vector tests its file watcher (an interpreter of random actions checked against a model), random
sequences of what happens on a control-plane node are played against the REAL agent, run as
`python -m kube_audit_shipper run -c FILE` with two file sinks: kube-apiserver writing whole and partial
lines, rotating by rename, gzipping a backup and deleting the oldest one; a copytruncate rotator; the
state directory's disk filling up and freed; SIGKILL and restart; SIGHUP with a config that changes a
sink, restarts the pipeline, or changes nothing; a backlog of ~1 MB (the memory limit); waiting until the
agent caught up. Every other example runs with a worker process shaping every read (processing.workers 1,
worker_min_bytes 1): the guarantee must not depend on where lines are processed. The state machine is tests/support/model_machine.py; the model
(tests/support/model_files.py) knows every line ever written and where it was; the oracle
(tests/support/model_oracle.py) says at the end of each example what must have arrived at every sink,
what may be missing and for which reported reason, and how many duplicates each SIGKILL allows.

Deterministic: a fixed sequence of examples (derandomize, no example database), waits on conditions
with deadlines. The agent's own timing still varies from run to run; the oracle allows exactly what the
agent's guarantee allows, whatever the timing. Each example leaves its directory under the test's
tmp_path: steps.json (the actions, to replay) and, when it failed, problems.txt and the agent's logs.
TAILER_MODEL_EXAMPLES / TAILER_MODEL_STEPS change the size of the run (defaults: 50 x 40, ~2 minutes).

After it, each bug the model test found is reproduced on its own, deterministically: the seven found when it
was written, all fixed (a bug found later and not yet fixed is listed in KNOWN_BUGS, which makes the oracle
allow its effect, and its regression test is marked xfail(strict=True) until the fix).
"""

from __future__ import annotations

import gzip
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.support.corpus import audit_id, numbered_lines
from tests.support.harness import sink_lines
from tests.support.model_agent import AgentProcess, Run, StateDisk, new_file_on_inode, read_checkpoint, run_once
from tests.support.model_machine import TailerModel
from tests.support.wait import until_blocking

# Bugs found by this test and not fixed yet. While a bug is listed, the verdict allows exactly its effect
# (counted under its name in the summary), and its regression test at the end of this file is marked
# xfail(strict=True); once it is fixed, the name goes and the test is a plain test. The seven bugs found
# when the test was written are fixed (the regression tests below).
KNOWN_BUGS: frozenset[str] = frozenset()  # all fixed; each has its regression test below

SETTINGS = settings(
    max_examples=int(os.environ.get("TAILER_MODEL_EXAMPLES", "50")),  # ~2 minutes on 2 cores (measured)
    stateful_step_count=int(os.environ.get("TAILER_MODEL_STEPS", "40")),
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@pytest.mark.timeout(1200)  # a failure is shrunk to a short sequence: that takes many runs of the agent
def test_random_actions_against_the_real_agent(tmp_path: Path) -> None:
    summaries: list[dict[str, Any]] = []

    class Machine(TailerModel):
        base = tmp_path
        known_bugs = KNOWN_BUGS

    Machine.summaries = summaries
    run_state_machine_as_test(Machine, settings=SETTINGS)
    assert summaries, "no example ran to its end"
    total: Counter[str] = Counter()
    for s in summaries:
        for k, v in s.items():
            if isinstance(v, int):
                total[k] = max(total[k], v) if k.startswith("max ") else total[k] + v
    print("examples:", len(summaries), dict(total))
    assert total["kills"] and total["lines"], "the examples never killed the agent or wrote a line"


# -- bugs the model test found, each as its smallest deterministic reproduction ------------------------------


def _plain_config(work: Path, **top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "state_dir": str(work / "state"),
        "input": {"paths": [str(work / "log" / "audit.log")], "poll_interval_ms": 20, "rescan_interval_ms": 100},
        "sinks": [{"name": "a", "type": "file", "path": str(work / "out-a")}],
        "checkpoint": {"flush_interval_ms": 50},
        "metrics": {"listen": None},
        "enrich": {"enabled": False},
        "detect": {"enabled": False},
    }
    for key, value in top.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def _lines(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def test_a_file_rewritten_while_the_reader_is_busy_is_read_from_its_start_once(tmp_path: Path) -> None:
    """What a copytruncate followed by a burst of writes looks like to a reader between two looks: the file
    starts over with other content and is already longer than the offset the reader had reached. Found by
    the model test as a copytruncate then 17 lines written while the agent was reading: a shipped line made
    of the first 1,334 bytes of one event and the rest of another."""
    work = tmp_path
    log = work / "log" / "audit.log"
    log.parent.mkdir()
    old = numbered_lines(60_000, prefix="old")  # ~40 MB: the reader is still busy with it when the file is rewritten
    new = numbered_lines(60_000, prefix="renewed")  # longer ids: line boundaries differ from the old content's
    log.write_bytes(_lines(old))
    agent = AgentProcess(work, work / "config.yaml")
    # no periodic rescan while reading; memory enough that the reader never waits: it reads on without a pause
    agent.write_config(
        _plain_config(work, input={"rescan_interval_ms": 600_000, "read_chunk_bytes": 16384}, metrics={"listen": "127.0.0.1:0"}, memory_limit_bytes=256 << 20)
    )
    agent.start(0)
    try:
        until_blocking(lambda: agent.metrics()["kube_audit_shipper_input_bytes_read_total"] >= 1 << 20, what="the agent reading the old content")
        with open(log, "r+b") as fh:  # the same inode starts over with other, longer content
            fh.write(_lines(new))
        size = log.stat().st_size
        until_blocking(
            lambda: any(e["offset"] == size for e in (read_checkpoint(work / "state") or {"files": []})["files"]),
            timeout_s=120,
            what="the new content checkpointed",
        )
        assert agent.stop() == 0
    finally:
        agent.abandon()
    got = Counter(sink_lines(work / "out-a"))
    written = set(old) | set(new)
    invented = [line[:100] for line in got if line not in written]
    twice = sum(1 for line in new if got[line] > 1)
    assert not invented and not twice and all(got[line] == 1 for line in new), f"{twice} new lines shipped twice; lines never written: {invented[:3]}"


@pytest.mark.parametrize("how", ["copytruncate", "deleted, inode reused"])
def test_a_file_truncated_or_replaced_while_the_agent_is_stopped_is_reported(tmp_path: Path, how: str) -> None:
    work = tmp_path
    d = work / "log"
    d.mkdir()
    log = d / "audit.log"
    agent = AgentProcess(work, work / "config.yaml")
    agent.write_config(_plain_config(work))
    log.write_bytes(_lines(numbered_lines(10, prefix="a")))
    assert run_once(agent.config_path, work / "first.log") == 0
    with open(log, "ab") as fh:  # written after the agent stopped: not shipped yet
        fh.write(_lines(numbered_lines(10, prefix="b")))
    if how == "copytruncate":
        (d / "audit.log.1").write_bytes(log.read_bytes())
        os.truncate(log, 0)
    else:
        ino = log.stat().st_ino
        log.unlink()
        reused = new_file_on_inode(d, ino)
        if reused is None:
            pytest.skip("the file system did not hand out the freed inode again")
        os.rename(reused, log)
    with open(log, "ab") as fh:
        fh.write(_lines(numbered_lines(3, prefix="c")))
    assert run_once(agent.config_path, work / "second.log") == 0
    shipped = {audit_id(line) for line in sink_lines(work / "out-a")}
    assert {f"c-{i:09d}" for i in range(3)} <= shipped
    records = Run(None, work / "second.log", 0).records()  # type: ignore[arg-type]
    said = [r for r in records if r.get("path") == str(log) and r.get("level") in ("warning", "error") and ("lost" in r["msg"] or "truncat" in r["msg"])]
    assert said, f"10 events of {log} were lost ({how} while the agent was stopped) and nothing said so"


def test_a_new_file_on_the_inode_of_an_empty_drained_file_is_read(tmp_path: Path) -> None:
    """Found by the model test (rotate an empty audit.log, delete that backup, the next audit.log gets its
    inode): the agent never read the new file, reported nothing, and its checkpoint said complete at 0."""
    work = tmp_path
    d = work / "log"
    d.mkdir()
    log = d / "audit.log"
    log.touch()
    agent = AgentProcess(work, work / "config.yaml")
    agent.write_config(_plain_config(work))
    assert run_once(agent.config_path, work / "first.log") == 0
    backup = d / "audit-2026-01-01T00-00-00.000.log"
    os.rename(log, backup)  # an empty file rotated
    log.touch()
    assert run_once(agent.config_path, work / "second.log") == 0  # reads the empty backup to its end: complete
    ino = backup.stat().st_ino
    backup.unlink()
    reused = new_file_on_inode(d, ino)
    if reused is None:
        pytest.skip("the file system did not hand out the freed inode again")
    lines = numbered_lines(5, prefix="x")
    reused.write_bytes(_lines(lines))
    os.rename(log, d / "audit-2026-01-01T00-00-01.000.log")  # rotation: the file on the reused inode is audit.log now
    os.rename(reused, log)
    assert run_once(agent.config_path, work / "third.log") == 0
    shipped = Counter(sink_lines(work / "out-a"))
    assert all(shipped[line] == 1 for line in lines), f"{sum(1 for line in lines if not shipped[line])} of 5 events never shipped"


def test_a_reload_that_restarts_the_pipeline_on_a_full_state_dir_sends_nothing_twice(tmp_path: Path) -> None:
    """Found by the model test: 8 events acknowledged before a reload that restarted the pipeline (the disk
    filled meanwhile) arrived twice in each sink, with no SIGKILL at all."""
    disk = StateDisk(tmp_path)
    if not disk.can_fill:
        pytest.skip("filling the state directory needs root (a tmpfs of its own)")
    log = tmp_path / "log" / "audit.log"
    log.parent.mkdir()
    agent = AgentProcess(tmp_path, tmp_path / "config.yaml")
    cfg = _plain_config(tmp_path, state_dir=str(disk.state_dir), metrics={"listen": "127.0.0.1:0"})
    first, second = numbered_lines(20, prefix="a"), numbered_lines(20, prefix="b")
    try:
        agent.write_config(cfg)
        agent.start(0)
        log.write_bytes(_lines(first))

        def checkpointed() -> int:
            return max((e["offset"] for e in (read_checkpoint(disk.state_dir) or {"files": []})["files"]), default=0)

        until_blocking(lambda: checkpointed() == log.stat().st_size, what="the first events checkpointed")
        disk.fill()
        with open(log, "ab") as fh:
            fh.write(_lines(second))
        until_blocking(lambda: all(line in set(sink_lines(tmp_path / "out-a", include_tmp=True)) for line in second), what="the second events delivered")
        agent.write_config({**cfg, "checkpoint": {"flush_interval_ms": 60}})  # a checkpoint change restarts the pipeline
        agent.hup()
        until_blocking(lambda: sum(r.get("msg") == "serving metrics" for r in agent.current.records()) == 2, what="the new pipeline")
        disk.free()
        until_blocking(lambda: checkpointed() == log.stat().st_size, what="everything checkpointed")
        assert agent.stop() == 0
    finally:
        agent.abandon()
        disk.close()
    got = Counter(sink_lines(tmp_path / "out-a"))
    assert all(got[line] == 1 for line in first + second), f"{sum(got[line] - 1 for line in second if got[line] > 1)} of 20 events sent twice"


def test_two_backups_gzipped_in_turn_are_not_read_again(tmp_path: Path) -> None:
    """lumberjack compresses the backups one after the other: `b1.gz` written, `b1` removed, then `b0.gz`
    created, which ext4 gives the inode `b1` just freed. Found by the model test: every event of `b1`
    shipped twice, with no SIGKILL."""
    work = tmp_path
    d = work / "log"
    d.mkdir()
    agent = AgentProcess(work, work / "config.yaml")
    agent.write_config(_plain_config(work, input={"backfill_rotated": True}))
    b0, b1 = d / "audit-2026-01-01T00-00-00.000.log", d / "audit-2026-01-01T00-00-01.000.log"
    first, second = numbered_lines(5, prefix="b0"), numbered_lines(7, prefix="b1")
    b0.write_bytes(_lines(first))
    b1.write_bytes(_lines(second))
    (d / "audit.log").touch()
    assert run_once(agent.config_path, work / "first.log") == 0  # both backups read to their end
    (d / (b1.name + ".gz")).write_bytes(gzip.compress(b1.read_bytes()))
    freed = b1.stat().st_ino
    b1.unlink()
    reused = new_file_on_inode(d, freed)
    if reused is None:
        pytest.skip("the file system did not hand out the freed inode again")
    reused.write_bytes(gzip.compress(b0.read_bytes()))
    os.rename(reused, d / (b0.name + ".gz"))
    b0.unlink()
    assert run_once(agent.config_path, work / "second.log") == 0
    got = Counter(sink_lines(work / "out-a"))
    assert all(got[line] == 1 for line in first + second), f"{sum(got[line] - 1 for line in first + second if got[line] > 1)} events shipped twice"


def test_the_gzip_of_a_file_found_empty_is_not_read_again(tmp_path: Path) -> None:
    """Found by the model test: 11 lines written to the audit.log the agent had found empty, rotated and
    gzipped within a few milliseconds; all 11 shipped twice. SIGSTOP holds the agent while that happens,
    for longer than rescan_interval_ms, so that its next look is a rescan (then the poll). Which comes first
    after SIGCONT still depends on the scheduler now and then: three rounds, so that the bug shows."""
    work = tmp_path
    d = work / "log"
    d.mkdir()
    log = d / "audit.log"
    log.touch()
    agent = AgentProcess(work, work / "config.yaml")
    agent.write_config(_plain_config(work, metrics={"listen": "127.0.0.1:0"}))
    agent.start(0)
    rounds = [numbered_lines(11, prefix=f"g{i}") for i in range(3)]

    def records() -> list[dict[str, Any]]:
        return list((read_checkpoint(work / "state") or {"files": []})["files"])

    try:
        for i, lines in enumerate(rounds):
            ino = log.stat().st_ino
            until_blocking(lambda: any(e["ino"] == ino for e in records()), what="audit.log found")  # noqa: B023
            agent.current.proc.send_signal(signal.SIGSTOP)
            try:
                log.write_bytes(_lines(lines))
                backup = d / f"audit-2026-01-01T00-00-0{i}.000.log"
                os.rename(log, backup)
                log.touch()
                (d / (backup.name + ".gz")).write_bytes(gzip.compress(backup.read_bytes()))
                backup.unlink()
                # not a wait for something to happen: the scenario is a pause of the agent longer than its
                # rescan_interval_ms (100), so that its first look once resumed is a rescan
                time.sleep(0.3)
            finally:
                agent.current.proc.send_signal(signal.SIGCONT)
            gz = str(backup) + ".gz"
            until_blocking(lambda: any(e["path"] == gz and e["complete"] for e in records()), what="the .gz read to its end")  # noqa: B023
        assert agent.stop() == 0
    finally:
        agent.abandon()
    got = Counter(sink_lines(work / "out-a"))
    twice = sum(got[line] - 1 for lines in rounds for line in lines if got[line] > 1)
    assert all(got[line] == 1 for lines in rounds for line in lines), f"{twice} of 33 events shipped twice"
