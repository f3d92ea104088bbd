"""The state machine of the model-based tailer test (tests/torture/test_tailer_model.py): the actions,
played on the real audit directory and the real agent at once, and the verdict at the end of each example.

Each rule is one thing that happens on a control-plane node, followed by `then` more lines (kube-apiserver
does not pause for rotations, kills or reloads). After every step the agent must be running (unless the
example killed it) and the model must equal the directory; the agent's checkpoint is read then (and right
after each SIGKILL) for the oracle. At the end: stop writing, free the disk, restart the agent if it is
down, wait until its checkpoint covers every file on disk and until it has reported what it lost, read its
counters, SIGTERM it (exit code 0), and ask the oracle (tests/support/model_oracle.py).
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.support.model_agent import AgentProcess, Knobs, Limits, StateDisk, agent_config, read_checkpoint, read_sinks
from tests.support.model_files import AuditDir
from tests.support.model_oracle import EMPTY_RECORD_MATCHES_ANY, Oracle, Verdict, count_records
from tests.support.wait import until_blocking

SINKS = ("a", "b")
LIMITS = Limits()
CATCH_UP_TIMEOUT_S = 120.0
REPORT_TIMEOUT_S = 15.0  # generous: after a full disk the checkpoint writer backs off up to 30 s
MAX_LINE_BYTES = 11_000  # the longest event in the corpus (tests/data/real-audit) is 10,944 bytes
# read but not yet acknowledged by every sink: the memory budget, overshot by at most one read (one chunk
# plus the partial line carried into it)
INFLIGHT_BOUND_BYTES = LIMITS.memory_limit_bytes + LIMITS.read_chunk_bytes + MAX_LINE_BYTES

LINES = st.integers(0, 25)  # lines written after an action
BACKLOG_LINES = 1500  # ~1 MB of the corpus's events


F = TypeVar("F", bound=Callable[..., None])


def step(fn: F) -> F:
    """One action, then `then` more whole lines written (kube-apiserver does not pause for rotations, kills or
    reloads: every action is followed by traffic). `ok` stays False if it raised (teardown then only cleans up)."""

    @functools.wraps(fn)
    def wrapper(self: TailerModel, *args: Any, then: int = 0, **kwargs: Any) -> None:
        self.model.next_step()
        self.ok = False
        self.history.append((fn.__name__, {**kwargs, "then": then}))
        fn(self, *args, **kwargs)
        if then:
            self.model.write_lines(then)
        self.ok = True

    return wrapper  # type: ignore[return-value]


class TailerModel(RuleBasedStateMachine):
    base: Path  # set by the test: where each example makes its directory
    known_bugs: frozenset[str]  # set by the test: bugs whose effect the verdict allows (model_oracle.py)
    summaries: list[dict[str, Any]]

    def __init__(self) -> None:
        super().__init__()
        self.started_at = time.monotonic()
        self.work = Path(tempfile.mkdtemp(prefix="ex-", dir=self.base))
        self.model = AuditDir(self.work / "log", prefix=f"m{len(self.summaries)}")
        self.disk = StateDisk(self.work)
        self.knobs = Knobs(workers=len(self.summaries) % 2)  # every other example with a worker process
        self.agent = AgentProcess(self.work, self.work / "config.yaml")
        self.oracle = Oracle(self.model, self.known_bugs)
        self.pipeline_stops: list[float] = []  # when a pipeline stopped reading: a SIGKILL, a reload that restarts it
        self.sinks_at_start: dict[str, Counter[bytes]] = {s: Counter() for s in SINKS}
        self.counts: Counter[str] = Counter()
        self.running = False
        self.ok = True
        self.history: list[tuple[str, dict[str, Any]]] = []  # the steps, kept in the example's directory

    def _write_config(self) -> None:
        self.agent.write_config(agent_config(self.work, self.disk.state_dir, self.model.active_path, self.knobs, LIMITS))

    def _start(self) -> None:
        self.agent.start(self.model.step)
        self.running = True

    @initialize()
    @step
    def start_agent(self) -> None:
        self._write_config()
        self._start()

    # -- kube-apiserver --------------------------------------------------------------------------
    @rule(n=st.integers(1, 40))
    @step
    def append_lines(self, n: int) -> None:
        self.model.write_lines(n)

    @rule(then=LINES)
    @step
    def write_backlog(self) -> None:
        """About 1 MB at once (the memory limit): the reader waits for memory while files keep changing."""
        self.model.write_lines(BACKLOG_LINES)
        self.counts["backlogs"] += 1

    @rule(fraction=st.floats(0.05, 0.95))
    @step
    def append_partial_line(self, fraction: float) -> None:
        self.model.write_partial(fraction)

    # lumberjack rotates before a write that would pass the size limit: never an empty file (an empty file
    # read to its end is what EMPTY_RECORD_MATCHES_ANY needs; its own test covers it meanwhile)
    @precondition(lambda self: EMPTY_RECORD_MATCHES_ANY not in self.known_bugs or self.model.active.whole_len > 0)
    @rule(then=LINES)
    @step
    def rotate(self) -> None:
        self.model.rotate()
        self.counts["rotations"] += 1

    @precondition(lambda self: bool(self.model.plain_backups()))
    @rule(pick=st.integers(0, 7), parts=st.integers(1, 3), then=LINES)
    @step
    def gzip_backup(self, pick: int, parts: int) -> None:
        plain = self.model.plain_backups()
        self.model.gzip_backup(plain[pick % len(plain)], parts)
        self.counts["gzips"] += 1

    @precondition(lambda self: bool(self.model.backups()))
    @rule(then=LINES)
    @step
    def delete_oldest_backup(self) -> None:
        self.model.delete_oldest_backup()
        self.counts["deletes"] += 1

    # -- a copytruncate rotator ------------------------------------------------------------------
    @rule(then=LINES)
    @step
    def copytruncate(self) -> None:
        self.model.copytruncate()
        self.counts["copytruncates"] += 1

    # -- the node ----------------------------------------------------------------------------------
    @precondition(lambda self: self.disk.can_fill and not self.disk.full)
    @rule(then=LINES)
    @step
    def fill_state_disk(self) -> None:
        self.disk.fill()
        self.counts["disk fills"] += 1

    @precondition(lambda self: self.disk.full)
    @rule(then=LINES)
    @step
    def free_state_disk(self) -> None:
        self.disk.free()

    @precondition(lambda self: self.running)
    @rule(then=LINES)
    @step
    def kill_agent(self) -> None:
        """SIGKILL; the agent stays down (the next steps happen while it is not running) until restarted."""
        self.agent.kill()
        self.agent.current.ended_step = self.model.step
        self.running = False
        self.pipeline_stops.append(self.model.step_times[self.model.step])
        after = read_sinks(self.work, SINKS)
        self.oracle.on_kill(self.model.step, self.agent.current.step, read_checkpoint(self.disk.state_dir), self.sinks_at_start, after)
        self.sinks_at_start = after
        self.counts["kills"] += 1

    @precondition(lambda self: not self.running)
    @rule(then=LINES)
    @step
    def restart_agent(self) -> None:
        self._start()

    @precondition(lambda self: self.running)
    @rule(change=st.sampled_from(["none", "sink", "pipeline"]), then=LINES)
    @step
    def reload(self, change: str) -> None:
        if change == "sink":
            self.knobs = replace(self.knobs, sink_b_variant=1 - self.knobs.sink_b_variant)
        elif change == "pipeline":
            self.knobs = replace(self.knobs, checkpoint_variant=1 - self.knobs.checkpoint_variant)
            self.pipeline_stops.append(self.model.step_times[self.model.step])
        self._write_config()
        self.agent.hup()
        self.counts[f"reloads ({change})"] += 1

    @precondition(lambda self: self.running and not self.disk.full)
    @rule(then=LINES)
    @step
    def wait_until_caught_up(self) -> None:
        """Every line on disk is checkpointed, so it is in every sink (the checkpoint covers only what
        every sink acknowledged, and the file sink acknowledges after fsync)."""
        self._catch_up()
        sinks = read_sinks(self.work, SINKS)
        for c in self.model.on_disk():
            for _, _, line in c.lines:
                for s in SINKS:
                    assert sinks[s][line.data] > 0, f"checkpointed but not in sink {s}: {line.data[:100]!r} of {c.path}"
        self.counts["catch-ups"] += 1

    # -- after every step --------------------------------------------------------------------------
    @invariant()
    def agent_runs_and_model_matches_disk(self) -> None:
        self.ok = False
        assert self.agent.alive() == self.running, f"the agent exited by itself ({self.agent.current.proc.returncode}):\n{self.agent.tail()}"
        self.model.check_disk()
        self.oracle.observe(read_checkpoint(self.disk.state_dir))
        self.ok = True

    # -- the verdict -------------------------------------------------------------------------------
    def _catch_up(self) -> None:
        def done() -> bool:
            if not self.agent.alive():
                return True
            cov = self.oracle.observe(read_checkpoint(self.disk.state_dir))
            return all(cov.get(c.cid, -1) >= c.whole_len for c in self.model.on_disk() if c.whole_len)

        def behind() -> str:
            checkpoint = read_checkpoint(self.disk.state_dir)
            cov = self.oracle.coverage(checkpoint)
            late = [
                f"{c.path} (inode {c.ino}) checkpointed at {cov.get(c.cid)} of {c.whole_len}; records of its inode: "
                f"{[e for e in (checkpoint or {}).get('files', []) if e['ino'] == c.ino]}"
                for c in self.model.on_disk()
                if c.whole_len and cov.get(c.cid, -1) < c.whole_len
            ]
            return f"the agent to catch up; behind: {late}\n{self.agent.tail()}"

        until_blocking(done, timeout_s=CATCH_UP_TIMEOUT_S, what=behind, max_poll_s=0.05)
        assert self.agent.alive(), f"the agent exited by itself ({self.agent.current.proc.returncode}):\n{self.agent.tail()}"

    def teardown(self) -> None:
        (self.work / "steps.json").write_text(json.dumps(self.history))
        try:
            if self.ok and self.agent.runs and self.agent.alive() == self.running:
                self._final_check()
        finally:
            self.agent.abandon()
            self.disk.close()

    def _final_check(self) -> None:
        self.model.finish_line()
        self.disk.free()
        if not self.running:
            self._start()
        self._catch_up()
        self.model.check_disk()
        # a truncation is noticed at the next poll, a deletion at the next rescan (and reported after a grace
        # period): wait until the agent has said what it is going to say about lines lost meanwhile
        until_blocking(
            lambda: self._verdict(read_sinks(self.work, SINKS), ended=False).unreported == 0,
            timeout_s=REPORT_TIMEOUT_S,
            what=lambda: "the agent to report the files lost:\n" + "\n".join(self._verdict(read_sinks(self.work, SINKS), ended=False).problems[:10]),
            max_poll_s=0.1,
        )
        # the counters of the running pipeline against its log: what was logged before they were read is
        # counted in them, and they count nothing that is not logged by the time it stopped (rate-limited
        # repeats are written at stop)
        segment_start = len(self.agent.current.records())
        metrics = self.agent.metrics()
        before = _pipeline_records(self.agent.current.records()[:segment_start])
        rc = self.agent.stop()
        after = _pipeline_records(self.agent.current.records())
        assert rc == 0, f"exit code {rc} after SIGTERM:\n{self.agent.tail()}"
        for r in self.agent.runs:
            assert "Traceback" not in r.text(), f"a traceback in the agent's stderr ({r.log.name}):\n{r.text()[-6000:]}"
        for metric, level, words in (("source_lost_files_total", "error", "lost"), ("source_truncations_total", None, "truncat")):
            value = metrics[f"kube_audit_shipper_{metric}"]
            low, high = count_records(before, level=level, words=words), count_records(after, level=level, words=words)
            assert low <= value <= high, f"{metric} is {value} but the log says {low}..{high}"
        leftovers = [p.name for s in SINKS for p in (self.work / f"out-{s}").iterdir() if p.name.startswith(".")]
        assert not leftovers, f"temp files left after a clean stop: {leftovers}"
        sinks = read_sinks(self.work, SINKS, include_tmp=False)
        verdict = self._verdict(sinks, ended=True)
        records = self._records()
        for k in self.oracle.kills:
            assert k.inflight_bytes <= INFLIGHT_BOUND_BYTES, (
                f"SIGKILL at step {k.step}: {k.inflight_bytes} bytes were in some sink but not all (held in memory), "
                f"over memory_limit_bytes + one read ({INFLIGHT_BOUND_BYTES})"
            )
        summary = {
            "steps": self.model.step,
            "workers": self.knobs.workers,
            "lines": len(self.model.lines),
            "files": len(self.model.containers),
            **self.counts,
            "missing": dict(verdict.missing),
            "duplicates": dict(verdict.duplicates),
            "known bugs": dict(verdict.known_bugs),
            "errors logged": dict(Counter(str(r.get("msg"))[:60] for r in records if r.get("level") == "error")),
            "max inflight bytes at a kill": max((k.inflight_bytes for k in self.oracle.kills), default=0),
            "max acked, not checkpointed bytes at a kill": max((k.acked_uncovered_bytes for k in self.oracle.kills), default=0),
            "ambiguous entries": self.oracle.ambiguous,
            "entries of truncated files unused": self.oracle.after_truncation,
            "seconds": round(time.monotonic() - self.started_at, 1),
        }
        self.summaries.append(summary)
        print(summary)
        if verdict.problems:
            (self.work / "problems.txt").write_text("\n".join(verdict.problems))
        assert not verdict.problems, "\n".join(verdict.problems) + f"\n{summary}"

    def _records(self) -> list[dict[str, Any]]:
        return [{**r, "_run": i} for i, run in enumerate(self.agent.runs) for r in run.records()]

    def _verdict(self, sinks: dict[str, Counter[bytes]], *, ended: bool) -> Verdict:
        records = self._records()
        ends = [self.model.step_times[run.ended_step] if run.ended_step is not None else float("inf") for run in self.agent.runs]
        return self.oracle.verdict(sinks, records, self.pipeline_stops, ends)


def _pipeline_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the newest pipeline of a process (a reload may restart it; it logs "serving metrics")."""
    starts = [i for i, r in enumerate(records) if r.get("msg") == "serving metrics"]
    return records[starts[-1] :] if starts else records
