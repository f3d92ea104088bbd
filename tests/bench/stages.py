"""Stages: the throughput of each step of the agent's per-event work alone, in one thread, to show where time goes.

The sample is the first ``--stages-mb`` of the same stream as the backlog of each input mix, in one file. It is
processed chunk by chunk and line by line as the agent's reader thread does (`LineReader` chunks of
``input.read_chunk_bytes``), with a clock reading between the steps (its cost subtracted):

policy path (the ``policy_detect`` config: sample policy + default enrichment + detection), the steps of
`kube_audit_shipper.process.transform` with detection where the pipeline runs it, on the event as recorded:
    read+split   `LineReader.read`: pread of one chunk, split into whole lines
    decode       blank-line and UTF-8 checks + `decode_event` (top level typed, bodies kept raw)
    detect       `DetectionEngine.evaluate` (the built-in rules), before the policy trims the event
    policy+trim  `DecisionCache.evaluate_event` + `trim_event` (drops, level cut, omitManagedFields)
    redact       `Redactor.apply` (Secret data, tokens, token query parameters)
    enrich       `Enricher.members` (node + derived fields)
    encode       `RecordedEvent.encode` (splice or re-encode)
    compress     batches as the file sink gets them (``batch.max_events``/``max_bytes``), joined and zstd'd
                 (what the file sink's encode does: level ``compression_level``, one frame per batch, checksums on)

no-policy path (the ``no_policy`` config): read+split, check (`check_event`: UTF-8 + JSON object), compress.

The components are built from the very config file the backlog agent runs with, and a check first asserts that
the composed steps give byte for byte what the agent's own `Transform` gives, so the decomposition cannot drift
from the code it stands for. Each pass runs ``--stages-repeat`` times; a step's time is its best pass.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from kube_audit_shipper.config import Config, load
from kube_audit_shipper.process.detect.build import build_engine
from kube_audit_shipper.process.enrich.fields import Enricher
from kube_audit_shipper.process.enrich.redact import Redactor
from kube_audit_shipper.process.policy.event import decode_event
from kube_audit_shipper.process.policy.load import load_policy
from kube_audit_shipper.process.policy.match import DecisionCache
from kube_audit_shipper.process.policy.trim import KEPT, trim_event
from kube_audit_shipper.sinks.file.config import FileSinkConfig
from kube_audit_shipper.source.reader import LineReader
from tests.bench.inputs import AuditLog
from tests.bench.measure import MB, REPO

# The stage module's names moved when the pipeline was restructured (issue 17); `--agent-src` may name a tree
# from before, so both spellings are accepted.
try:
    from kube_audit_shipper.app.build import load_transform as build_transform
    from kube_audit_shipper.process.check import check_event
except ImportError:  # a tree from before the restructuring (538421f and older)
    from kube_audit_shipper.app import build_transform  # type: ignore[attr-defined,no-redef,unused-ignore]
    from kube_audit_shipper.process.decode import check_event  # type: ignore[import-not-found,no-redef,unused-ignore]

POLICY_STEPS = ("read+split", "decode", "detect", "policy+trim", "redact", "enrich", "encode", "compress")
NO_POLICY_STEPS = ("read+split", "check", "compress")
CHECK_LINES = 2000


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, dt: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + dt


class _Batcher:
    """Cuts records into the batches the engine hands the file sink (max_events, max_bytes), encodes them timed."""

    def __init__(self, cfg: Config, encode: Callable[[list[bytes]], bytes], timer: _Timer) -> None:
        self.max_events, self.max_bytes = cfg.batch.max_events, cfg.batch.max_bytes
        self.encode, self.timer = encode, timer
        self.records: list[bytes] = []
        self.nbytes = 0
        self.out_bytes = 0
        self.out_records = 0

    def add(self, records: list[bytes]) -> None:
        for record in records:
            size = len(record) + 1
            if self.records and (len(self.records) >= self.max_events or self.nbytes + size > self.max_bytes):
                self.flush()
            self.records.append(record)
            self.nbytes += size

    def flush(self) -> None:
        if self.records:
            t = time.perf_counter()
            payload = self.encode(self.records)
            self.timer.add("compress", time.perf_counter() - t)
            self.out_bytes += len(payload)
            self.out_records += len(self.records)
            self.records, self.nbytes = [], 0


def _file_sink_encoder(cfg: Config) -> Callable[[list[bytes]], bytes]:
    """What the zstd file sink does to a batch before writing it: NDJSON, one zstd frame with its checksum, at the
    config's ``compression_level`` (the sink's encode, without its request bookkeeping)."""
    sink_cfg = cfg.sinks[0]
    assert isinstance(sink_cfg, FileSinkConfig) and sink_cfg.compression == "zstd"
    compress = zstandard.ZstdCompressor(level=sink_cfg.compression_level, write_checksum=True).compress

    def encode(records: list[bytes]) -> bytes:
        return compress(b"\n".join(records) + b"\n")

    return encode


def _chunks(path: Path, cfg: Config, timer: _Timer) -> list[list[bytes]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LineReader(fd, offset=0, gz=False, chunk_bytes=cfg.input.read_chunk_bytes, max_line_bytes=cfg.input.max_line_bytes)
        chunks = []
        while True:
            t = time.perf_counter()
            lines = reader.read()
            timer.add("read+split", time.perf_counter() - t)
            if lines.lines:
                chunks.append(lines.lines)
            if lines.eof and not lines.lines:
                return chunks
    finally:
        os.close(fd)


class _PolicyPath:
    def __init__(self, cfg: Config) -> None:
        if not cfg.policy.file:
            raise ValueError("the policy path needs a config with policy.file")
        policy, _ = load_policy(cfg.policy.file)
        self.cache = DecisionCache(policy, cfg.policy.decision_cache_size)
        enrich = cfg.enrich
        self.redactor = Redactor(enrich.redact) if enrich.enabled and enrich.redact.enabled else None
        if self.redactor is not None and not self.redactor.active:
            self.redactor = None
        self.enricher = Enricher(enrich, cfg.node) if enrich.enabled else None
        if self.enricher is not None and not self.enricher.active:
            self.enricher = None
        self.added = self.enricher.added_keys if self.enricher is not None else frozenset()
        self.encoder = msgspec.json.Encoder()
        self.cfg = cfg
        self.alerts = 0

    def detection(self) -> Any:
        """A fresh detection engine of the config (one per pass: the same events give the same work), or None."""
        if not self.cfg.detect.enabled:
            return None
        derived = self.cfg.enrich.derived
        engine, _ = build_engine(self.cfg.detect, shared_admin_users=derived.shared_admin_users, system_user_prefixes=derived.system_user_prefixes)
        return engine

    def one(self, line: bytes) -> bytes | None:
        """The composed steps for one line (for the consistency check)."""
        event = decode_event(line)
        if trim_event(event, self.cache.evaluate_event(event)) != KEPT:
            return None
        if self.redactor is not None:
            self.redactor.apply(event)
        extra = self.enricher.members(event) if self.enricher is not None else b""
        return event.encode(self.encoder, line, extra, self.added)

    def run(self, chunks: list[list[bytes]], timer: _Timer, batcher: _Batcher) -> None:
        """Line by line, as the agent's reader thread does (each event is garbage as soon as it is encoded, as in
        the agent: timing each step over a whole chunk would keep hundreds of events alive and time the garbage
        collector instead); one clock reading between steps, its own cost subtracted."""
        cache, redactor, enricher, encoder, added = self.cache, self.redactor, self.enricher, self.encoder, self.added
        evaluate = cache.evaluate_event
        engine = self.detection()
        detect = engine.evaluate if engine is not None else None
        redact = redactor.apply if redactor is not None else None
        members = enricher.members if enricher is not None else None
        clock = time.perf_counter
        tick = _clock_cost()
        decode_s = detect_s = policy_s = redact_s = enrich_s = encode_s = 0.0
        decoded = kept = alerts = 0
        for lines in chunks:
            records = []
            t0 = clock()
            for line in lines:
                if not line.strip():
                    continue
                if not line.isascii():
                    line.decode("utf-8")
                event = decode_event(line)
                t1 = clock()
                decode_s += t1 - t0
                decoded += 1
                if detect is not None:
                    alerts += len(detect(event))
                    t0 = clock()
                    detect_s += t0 - t1
                    t1 = t0
                if trim_event(event, evaluate(event)) != KEPT:
                    t0 = clock()
                    policy_s += t0 - t1
                    continue
                t2 = clock()
                policy_s += t2 - t1
                if redact is not None:
                    redact(event)
                t3 = clock()
                redact_s += t3 - t2
                extra = members(event) if members is not None else b""
                t4 = clock()
                enrich_s += t4 - t3
                records.append(event.encode(encoder, line, extra, added))
                t0 = clock()
                encode_s += t0 - t4
                kept += 1
            batcher.add(records)
        batcher.flush()
        timer.add("decode", decode_s - decoded * tick)
        timer.add("detect", detect_s - decoded * tick if detect is not None else 0.0)
        timer.add("policy+trim", policy_s - decoded * tick)
        self.alerts = alerts
        timer.add("redact", redact_s - kept * tick)
        timer.add("enrich", enrich_s - kept * tick)
        timer.add("encode", encode_s - kept * tick)


def _clock_cost() -> float:
    """The cost of one `time.perf_counter()` reading (best of a few rounds)."""
    clock = time.perf_counter
    best = float("inf")
    for _ in range(5):
        t = clock()
        for _ in range(10_000):
            clock()
        best = min(best, (clock() - t) / 10_001)
    return best


def _no_policy_run(chunks: list[list[bytes]], timer: _Timer, batcher: _Batcher) -> None:
    clock = time.perf_counter
    for lines in chunks:
        t0 = clock()
        records = []
        for line in lines:
            if line.strip():
                check_event(line)
                records.append(line)
        timer.add("check", clock() - t0)
        batcher.add(records)
    batcher.flush()


def _naive_run(chunks: list[list[bytes]], timer: _Timer) -> None:
    decode, encode = msgspec.json.decode, msgspec.json.encode
    t0 = time.perf_counter()
    for lines in chunks:
        for line in lines:
            encode(decode(line))
    timer.add("naive decode+encode", time.perf_counter() - t0)


def check_consistency(cfg: Config, path: _PolicyPath, lines: list[bytes]) -> int:
    """Compare the composed steps with the agent's own Transform on the first lines; returns lines compared."""
    transform = build_transform(cfg)
    if transform is None:
        raise RuntimeError("the policy config builds no transform")
    n = 0
    for line in lines[:CHECK_LINES]:
        ours, theirs = path.one(line), transform.apply(line)
        if ours != theirs:
            raise RuntimeError(
                "the stage decomposition no longer matches kube_audit_shipper.process.transform.Transform "
                f"(line {n}: {('dropped' if ours is None else ours[:120])!r} != {('dropped' if theirs is None else theirs[:120])!r}); "
                "update tests/bench/stages.py"
            )
        n += 1
    return n


def _rows(steps: tuple[str, ...], best: dict[str, float], sample: AuditLog) -> list[dict[str, Any]]:
    total = sum(best[s] for s in steps)
    return [
        {
            "step": s,
            "seconds": round(best[s], 4),
            "mb_per_s": round(sample.bytes / MB / best[s], 1) if best[s] else None,
            "us_per_event": round(best[s] / sample.events * 1e6, 2),
            "share": round(best[s] / total, 4) if total else 0.0,
        }
        for s in steps
    ]


def run_stages(sample: AuditLog, policy_config: Path, no_policy_config: Path, repeat: int) -> dict[str, Any]:
    """Time every step on `sample` (one file); `repeat` passes, best time per step."""
    cfg_p, cfg_n = load(policy_config), load(no_policy_config)
    policy_path = _PolicyPath(cfg_p)
    encode_p, encode_n = _file_sink_encoder(cfg_p), _file_sink_encoder(cfg_n)
    best: dict[str, dict[str, float]] = {"policy": {}, "no_policy": {}, "naive": {}}
    compared = 0
    kept_events = out_bytes_p = out_bytes_n = 0
    for _ in range(max(1, repeat)):
        timer = _Timer()
        chunks = _chunks(sample.files[0], cfg_p, timer)
        if not compared:
            compared = check_consistency(cfg_p, policy_path, [line for lines in chunks for line in lines])
        gc.collect()
        batcher = _Batcher(cfg_p, encode_p, timer)
        policy_path.run(chunks, timer, batcher)
        kept_events, out_bytes_p = batcher.out_records, batcher.out_bytes
        for step in POLICY_STEPS:
            best["policy"][step] = min(best["policy"].get(step, float("inf")), timer.seconds.get(step, 0.0))
        timer_n = _Timer(seconds={"read+split": timer.seconds["read+split"]})
        gc.collect()
        batcher_n = _Batcher(cfg_n, encode_n, timer_n)
        _no_policy_run(chunks, timer_n, batcher_n)
        out_bytes_n = batcher_n.out_bytes
        for step in NO_POLICY_STEPS:
            best["no_policy"][step] = min(best["no_policy"].get(step, float("inf")), timer_n.seconds.get(step, 0.0))
        timer_r = _Timer()
        gc.collect()
        _naive_run(chunks, timer_r)
        best["naive"]["naive decode+encode"] = min(best["naive"].get("naive decode+encode", float("inf")), timer_r.seconds["naive decode+encode"])
        del chunks
    policy_total = sum(best["policy"].values())
    no_policy_total = sum(best["no_policy"].values())
    naive = best["naive"]["naive decode+encode"]
    return {
        "sample": sample.as_dict(),
        "repeat": repeat,
        "consistency_checked_lines": compared,
        "policy": {
            "steps": _rows(POLICY_STEPS, best["policy"], sample),
            "total_s": round(policy_total, 4),
            "mb_per_s": round(sample.bytes / MB / policy_total, 1),
            "events_kept": kept_events,
            "alerts": policy_path.alerts,
            "bytes_out": out_bytes_p,
        },
        "no_policy": {
            "steps": _rows(NO_POLICY_STEPS, best["no_policy"], sample),
            "total_s": round(no_policy_total, 4),
            "mb_per_s": round(sample.bytes / MB / no_policy_total, 1),
            "bytes_out": out_bytes_n,
        },
        "naive_msgspec_in_process": {"seconds": round(naive, 4), "mb_per_s": round(sample.bytes / MB / naive, 1)},
    }


def run_in_child(sample: AuditLog, policy_config: Path, no_policy_config: Path, repeat: int, agent_src: Path, timeout: float) -> dict[str, Any]:
    """`run_stages` in a child process that imports the agent from `agent_src` (and the benchmark from this
    repository), so that another tree's code can be timed step by step (``--agent-src``); one fresh process per mix
    also keeps one mix's caches and heap out of the next one's figures."""
    request = {
        "sample": {**sample.as_dict(), "files": [str(p) for p in sample.files]},
        "policy_config": str(policy_config),
        "no_policy_config": str(no_policy_config),
        "repeat": repeat,
    }
    with tempfile.TemporaryDirectory(prefix="kas-stages-") as only_package:
        # The agent's package from agent_src, everything else (this benchmark) from this repository.
        os.symlink(agent_src.resolve() / "kube_audit_shipper", Path(only_package) / "kube_audit_shipper")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((only_package, str(REPO)))}
        done = subprocess.run(
            [sys.executable, "-P", "-m", "tests.bench.stages"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"stages child failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    """The child of `run_in_child`: a JSON request on stdin, the JSON result as the last line of stdout."""
    request = json.loads(sys.stdin.read())
    s = request["sample"]
    sample = AuditLog(Path(s["path"]), s["mix"], s["events"], s["bytes"], s["rotations"], s["dropped_oversize"], s["blake2b"], [Path(p) for p in s["files"]])
    result = run_stages(sample, Path(request["policy_config"]), Path(request["no_policy_config"]), request["repeat"])
    import kube_audit_shipper

    result["agent_package"] = str(Path(kube_audit_shipper.__file__).resolve().parent)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
