"""The verdict of the model-based tailer test: what must have arrived at every sink, what may be missing
and why, and how many duplicates each line may have.

The agent promises (README "What it guarantees", docs/ARCHITECTURE.md "Delivery guarantee"): every
complete line of every tracked file reaches every sink; a line may be missing only when its file left
the disk before the agent read it (deleted, or truncated by copytruncate), and then the agent says so
(an error "input file lost" / a warning "file truncated", and counters); after a crash the events sent
again are at most those not covered by the last checkpoint written.

What the test sees of the agent to judge that: its checkpoint file, read after every step and right
after every SIGKILL (then it is the last one written), mapped onto the model's files by (dev, inode)
and fingerprint. Three facts follow from the snapshots, each the only sound reading of them:
- a line a snapshot covers was acknowledged by every sink: it must be in every sink (never lost);
- a file that appeared in a snapshot is in the agent's persistent state: if its lines go missing, the
  agent must report that file; a file it never showed (created and gone between two looks, while it
  was down, or while its state directory was full) cannot be reported, and its missing lines are
  counted as "never seen";
- a line may be in a sink once more per SIGKILL whose snapshot did not cover it.
An entry that matches no file or several files of the model is not used (using it could only mean
guessing).

Known bugs (KNOWN_BUGS in the test) each widen the verdict by exactly the effect of that bug, counted
under its own name, so the rest stays strict until the bug is fixed and its name removed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.support.model_files import AuditDir, Container, Line

CLOCK_SLACK_S = 0.002  # log times have millisecond resolution
RATE_LIMIT_S = 60.0  # the agent writes a repeated log record once a minute (obs/logs.py); the rest at stop

# the reader reads on across a truncation it has not noticed yet (only the idle poll checks size and head): the
# new content from the old read offset is shipped, then again from 0 once noticed, the old partial line joined
# to new bytes may ship as one line, and a truncated file deleted before the poll saw it is "drained" at the old
# offset: its lost lines are not reported; the fingerprint of a file found empty can even grow over the new
# content, which is then read from the old offset: its first lines are skipped and the checkpoint covers them
READ_ACROSS_TRUNCATION = "reads across an unnoticed truncation"
# a checkpoint record whose inode holds other content at the next start (truncated, or deleted and the inode
# reused) is dropped without a word: what it had not shipped is lost unreported
SILENT_STALE_RECORD = "retires a replaced file's record silently"
# the record of an empty file read to its end matches any later file on its inode: that file is never read
EMPTY_RECORD_MATCHES_ANY = "an empty drained file's record matches any file on its inode"
# a record is dropped as stale as soon as its inode holds other content, even when that content is a .gz of
# another backup and its own content has moved to a .gz of its own: that .gz is then read again from 0
STALE_BEFORE_MOVED = "a record is retired by inode before its moved content is matched"
# the .gz of a file the agent tracks but has not fingerprinted yet (found empty, not polled since it grew) is not
# recognised as that file's content: it is read again from 0
GZIP_OF_UNFINGERPRINTED = "the .gz of a file not fingerprinted yet is read again"
# a reload that restarts the pipeline while the state directory is full: the old pipeline's final checkpoint
# fails and the new one starts from the last durable checkpoint, re-sending what was acknowledged since
RESTART_FROM_DURABLE_CHECKPOINT = "a pipeline restarted by a reload resumes from the last durable checkpoint"


@dataclass
class Kill:
    step: int
    run_started: int  # step in which the killed process started
    cov: dict[int, int]  # container id -> offset the last checkpoint covered
    inflight_bytes: int  # read and written to some sink but not all: held in memory at the kill
    acked_uncovered_bytes: int  # in every sink but not in the last checkpoint


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    missing: Counter[str] = field(default_factory=Counter)  # lines missing from a sink, by reason
    duplicates: Counter[str] = field(default_factory=Counter)  # extra copies per sink
    known_bugs: Counter[str] = field(default_factory=Counter)  # lines a known bug explains
    unreported: int = 0  # lines lost from files whose loss the agent has not reported (yet)

    def fail(self, msg: str) -> None:
        if len(self.problems) < 30:
            self.problems.append(msg)
        elif len(self.problems) == 30:
            self.problems.append("... (more problems left out)")


def count_records(records: list[dict[str, Any]], *, level: str | None, words: str) -> int:
    """Log records whose message holds `words` (a summary of rate-limited repeats counts for its repeats)."""
    n = 0
    for r in records:
        if words in str(r.get("msg", "")).lower() and (level is None or r.get("level") == level):
            n += int(r["repeated"]) if isinstance(r.get("repeated"), int) else 1
    return n


def record_time(r: dict[str, Any]) -> float:
    return dt.datetime.strptime(str(r["time"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class Report:
    path: str
    at: float
    run: int  # which process logged it
    run_ends: float  # when that process ended (inf: still running)

    def covers(self, names: set[str], went: float) -> bool:
        """This report stands for a file that had one of `names` and left the disk at `went`: it was logged
        after, or shortly before by the same process, which then writes a repeat of it only at stop (or
        never, if it is killed): the rate limit keys on logger, level, message and string fields."""
        if self.path not in names:
            return False
        return self.at >= went - CLOCK_SLACK_S or (went <= self.run_ends and went - self.at <= RATE_LIMIT_S)


def reports(records: list[dict[str, Any]], *, level: str | None, words: str, run_ends: list[float]) -> list[Report]:
    """The log records whose message holds `words` (records carry `_run`, the index of their process)."""
    return [
        Report(str(r["path"]), record_time(r), int(r["_run"]), run_ends[int(r["_run"])])
        for r in records
        if "path" in r and "time" in r and words in str(r.get("msg", "")).lower() and (level is None or r.get("level") == level)
    ]


def failed_final_checkpoints(records: list[dict[str, Any]]) -> list[float]:
    """When a pipeline stopped without writing its final checkpoint (the agent logs it as an error)."""
    return [record_time(r) for r in records if r.get("level") == "error" and "final checkpoint could not be written" in str(r.get("msg", ""))]


class Oracle:
    def __init__(self, model: AuditDir, known_bugs: frozenset[str] = frozenset()) -> None:
        self.model = model
        self.known_bugs = known_bugs
        self.ever: dict[int, int] = {}  # container id -> the highest offset any snapshot covered
        self.known: set[int] = set()  # containers some snapshot showed
        self.known_at: dict[int, int] = {}  # container id -> the step of the first snapshot that showed it
        self.kills: list[Kill] = []
        self.durable: dict[float, dict[int, int]] = {}  # coverage of every checkpoint seen, by its `written_at`
        self.ambiguous = 0  # entries matching no or several containers (left unused)
        self.after_truncation = 0  # entries of a truncated file left unused (READ_ACROSS_TRUNCATION)

    # -- snapshots -------------------------------------------------------------------------------
    def coverage(self, checkpoint: dict[str, Any] | None) -> dict[int, int]:
        """Container id -> acknowledged offset, for the entries that name exactly one container.
        Raises AssertionError for an offset the container cannot have (past its last whole line, or not
        at a line boundary): the checkpoint format promises both."""
        cov: dict[int, int] = {}
        for e in checkpoint["files"] if checkpoint else []:
            if e["fp_len"] == 0:  # nothing read yet: names no content
                continue
            match = [c for c in self.model.containers if (c.dev, c.ino) == (e["dev"], e["ino"]) and c.holds_head(e["fp_len"], e["fp"])]
            if len(match) != 1:
                self.ambiguous += 1
                continue
            c = match[0]
            if READ_ACROSS_TRUNCATION in self.known_bugs and c.how_gone == "truncated":
                # once truncated, the record may carry offsets of the new content under the old head
                self.after_truncation += 1
                continue
            offset = int(e["offset"])
            assert offset <= c.whole_len, f"checkpoint entry {e} is past the last whole line of {c.path} (at {c.whole_len})"
            assert offset == 0 or any(end == offset for _, end, _ in c.lines), f"checkpoint entry {e} is not at a line boundary of {c.path}"
            cov[c.cid] = max(cov.get(c.cid, 0), offset)
        return cov

    def observe(self, checkpoint: dict[str, Any] | None) -> dict[int, int]:
        cov = self.coverage(checkpoint)
        if checkpoint:
            self.durable.setdefault(float(checkpoint["written_at"]), cov)
        for cid, offset in cov.items():
            self.known.add(cid)
            self.known_at.setdefault(cid, self.model.step)
            self.ever[cid] = max(self.ever.get(cid, 0), offset)
        return cov

    @staticmethod
    def covered(cov: dict[int, int], places: list[tuple[Container, int, int]]) -> bool:
        return any(cov.get(c.cid, -1) >= end for c, _, end in places)

    def on_kill(
        self, step: int, run_started: int, checkpoint: dict[str, Any] | None, before: dict[str, Counter[bytes]], after: dict[str, Counter[bytes]]
    ) -> Kill:
        """Record what a SIGKILL left: the last checkpoint, and what the killed run wrote to each sink."""
        cov = self.observe(checkpoint)
        delta = {s: after[s] - before[s] for s in after}
        inflight = acked = 0
        for data in set().union(*delta.values()):
            places = self.model.places.get(data)
            if places is None:
                continue  # never written: the final verdict reports it
            counts = [d[data] for d in delta.values()]
            # a truncation releases the file's chunks from the memory budget while the sinks still send them
            truncated = any(self._truncated_in(c, run_started) for c, _, _ in places)
            if max(counts) != min(counts) and not truncated:
                inflight += len(data) + 1
            elif min(counts) > 0 and not self.covered(cov, places):
                acked += len(data) + 1
        kill = Kill(step, run_started, cov, inflight, acked)
        self.kills.append(kill)
        return kill

    def _truncated_in(self, c: Container, since_step: int) -> bool:
        """c, or the file it continues on the same inode, was truncated at or after `since_step`."""
        chain = [c, *([p] if (p := self.predecessor(c)) is not None else [])]
        return any(x.how_gone == "truncated" and x.gone is not None and x.gone >= since_step for x in chain)

    def inode_chain(self, c: Container) -> list[Container]:
        """c and the containers that continued it on its inode after copytruncates."""
        chain = [c]
        while chain[-1].how_gone == "truncated":
            nxt = next((n for n in self.model.containers if self.predecessor(n) is chain[-1]), None)
            if nxt is None:
                break
            chain.append(nxt)
        return chain

    def predecessor(self, c: Container) -> Container | None:
        """The container a copytruncate ended to start c (same inode), if any."""
        for p in self.model.containers:
            if p.how_gone == "truncated" and (p.dev, p.ino) == (c.dev, c.ino) and p.gone == c.born and p.cid < c.cid:
                return p
        return None

    # -- the final verdict -----------------------------------------------------------------------
    def verdict(self, sinks: dict[str, Counter[bytes]], records: list[dict[str, Any]], stops: list[float], run_ends: list[float]) -> Verdict:
        """`records`: every process's log records, each with `_run`, the index of its process, which ended at
        `run_ends[_run]`. `stops`: when a pipeline stopped reading (a SIGKILL, a reload that restarts it).
        Until the next one wrote its first checkpoint (only then does it read; a full state directory
        delays it), a file's content can change unseen: where SILENT_STALE_RECORD loses lines."""
        v = Verdict()
        gaps = [(g, min((w for w in self.durable if w > g), default=float("inf"))) for g in stops]
        # a final checkpoint that failed: the next pipeline starts from the last durable one (a kill, in effect)
        failed_finals = [(at, self.durable.get(max((w for w in self.durable if w <= at), default=-1.0), {})) for at in failed_final_checkpoints(records)]
        # the agent cannot always tell a truncated file from one deleted and replaced (while it was not
        # running, both are "this inode now holds other content"): either report stands for either
        said = reports(records, level="error", words="lost", run_ends=run_ends) + reports(records, level=None, words="truncat", run_ends=run_ends)
        written = {line.data: line for line in self.model.lines}
        for sink, got in sinks.items():
            for data in got:
                if data not in written:
                    if READ_ACROSS_TRUNCATION in self.known_bugs and self._splice(data):
                        v.known_bugs[READ_ACROSS_TRUNCATION] += got[data]
                    else:
                        v.fail(f"sink {sink}: a line that was never written: {data[:160]!r}")
            for line in self.model.lines:
                n = got.get(line.data, 0)
                if n == 0:
                    reason = self._missing(line, said, gaps)
                    v.missing[reason] += 1
                    if "reported no loss" in reason:
                        v.unreported += 1
                    if reason.startswith("BAD"):
                        v.fail(f"sink {sink}: {reason[4:]}: {_describe(line, self.model)}")
                elif n > 1:
                    places = self.model.places[line.data]
                    allowed = sum(1 for k in self.kills if line.step <= k.step and not self.covered(k.cov, places))
                    v.duplicates[sink] += n - 1
                    if n - 1 > allowed and RESTART_FROM_DURABLE_CHECKPOINT in self.known_bugs:
                        extra = sum(1 for at, cov in failed_finals if self.model.step_times[line.step] <= at and not self.covered(cov, places))
                        allowed += extra
                        v.known_bugs[RESTART_FROM_DURABLE_CHECKPOINT] += min(extra, n - 1)
                    if n - 1 > allowed and STALE_BEFORE_MOVED in self.known_bugs and self._moved_after_inode_reuse(places):
                        allowed += 1
                        v.known_bugs[STALE_BEFORE_MOVED] += 1
                    if n - 1 > allowed and GZIP_OF_UNFINGERPRINTED in self.known_bugs and self._gzip_of_unseen(places):
                        allowed += 1
                        v.known_bugs[GZIP_OF_UNFINGERPRINTED] += 1
                    if n - 1 > allowed and READ_ACROSS_TRUNCATION in self.known_bugs and any(self.predecessor(c) for c, _, _ in places):
                        allowed += 1
                        v.known_bugs[READ_ACROSS_TRUNCATION] += 1
                    if n - 1 > allowed:
                        v.fail(
                            f"sink {sink}: {n} copies of a line, but only {allowed} SIGKILL(s) happened while it was not covered by "
                            f"the last checkpoint: {_describe(line, self.model)}"
                        )
        return v

    def _missing(self, line: Line, said: list[Report], gaps: list[tuple[float, float]]) -> str:
        """Why a line is missing from a sink: a reason, or "BAD <what is wrong>". A report counts if it names
        one of the names its files had and was logged after the last of them left the disk (one report
        may stand for several files: the agent cannot tell two truncations it did not see apart)."""
        places = self.model.places[line.data]
        if READ_ACROSS_TRUNCATION in self.known_bugs and any((p := self.predecessor(c)) is not None and end <= len(p.content) for c, _, end in places):
            # the reader's offset in the old content went on in the new one: what lay before it is skipped
            return f"known bug: {READ_ACROSS_TRUNCATION}"
        if any(c.on_disk for c, _, _ in places):
            return "BAD missing although its file is still on disk and the checkpoint covers the file"
        if any(self.ever.get(c.cid, -1) >= end for c, _, end in places):
            return "BAD missing although a checkpoint covered it (acknowledged by every sink)"
        containers = [c for c, _, _ in places]
        # a truncation is reported under the name the file has when the agent notices it (maybe renamed since)
        names = {name for c in containers for x in self.inode_chain(c) for name in x.names}
        went = self.model.step_times[max(c.gone or 0 for c in containers)]
        how = "copytruncate window" if any(c.how_gone == "truncated" for c in containers) else "deleted before read"
        if any(r.covers(names, went) for r in said):
            return f"{how} (reported)"
        if not any(c.cid in self.known for c in containers):
            return f"{how} (file never seen by the agent)"
        if READ_ACROSS_TRUNCATION in self.known_bugs and any(c.how_gone == "truncated" and not self.inode_chain(c)[-1].on_disk for c in containers):
            return f"known bug: {READ_ACROSS_TRUNCATION}"
        if SILENT_STALE_RECORD in self.known_bugs and self._replaced_in_gap(containers, gaps):
            return f"known bug: {SILENT_STALE_RECORD}"
        return f"BAD {how}: the agent had the file in its checkpoint, and reported no loss or truncation after it went"

    def _replaced_in_gap(self, containers: list[Container], gaps: list[tuple[float, float]]) -> bool:
        """A container went before a pipeline that had not yet reported it stopped (or while none ran), and
        another file then held its inode: the next pipeline dropped its record as stale."""
        for c in containers:
            went = self.model.step_times[c.gone or 0]
            before_a_restart = any(went <= end + CLOCK_SLACK_S for _, end in gaps)
            reused = any((n.dev, n.ino) == (c.dev, c.ino) and n.cid > c.cid for n in self.model.containers)
            if before_a_restart and reused:
                return True
        return False

    def _moved_after_inode_reuse(self, places: list[tuple[Container, int, int]]) -> bool:
        """The line's plain file was gzipped, and a later file took the plain file's inode."""
        return any(c.how_gone == "gzipped" and any((n.dev, n.ino) == (c.dev, c.ino) and n.cid > c.cid for n in self.model.containers) for c, _, _ in places)

    def _gzip_of_unseen(self, places: list[tuple[Container, int, int]]) -> bool:
        """The line's plain file was gzipped before any checkpoint showed the agent had fingerprinted it."""
        return any(c.how_gone == "gzipped" and self.known_at.get(c.cid, c.gone or 0) >= (c.gone or 0) for c, _, _ in places)

    def _splice(self, data: bytes) -> bool:
        """data is what a reader that missed a truncation hands out: the old content's pending partial line
        from a line start `a`, continued by the new content on the same inode up to a newline."""
        for old in self.model.containers:
            if old.how_gone != "truncated":
                continue
            new = next((n for n in self.model.containers if self.predecessor(n) is old), None)
            if new is None:
                continue
            for a in [0, *(end for _, end, _ in old.lines)]:
                end = a + len(data)
                if end >= len(new.content) or new.content[end] != 0x0A:
                    continue
                prefix = _common_prefix(data, bytes(old.content[a:end]))
                suffix = _common_prefix(data[::-1], bytes(new.content[a:end])[::-1])
                if prefix + suffix >= len(data):
                    return True
        return False


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _describe(line: Line, model: AuditDir) -> str:
    where = "; ".join(
        f"{' -> '.join(n.rsplit('/', 1)[-1] for n in c.names)} [{start}, {end}) born at step {c.born}"
        + (f", {c.how_gone} at step {c.gone}" if c.gone is not None else "")
        for c, start, end in model.places[line.data]
    )
    head = line.data.split(b'"auditID":"', 1)[-1][:24].decode(errors="replace")
    return f"auditID {head.split(chr(34))[0]} written at step {line.step} in {where}"
