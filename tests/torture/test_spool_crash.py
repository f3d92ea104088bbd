"""Crash torture for the disk spool: SIGKILL a writer at random moments, reopen, check nothing durable is lost."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from kube_audit_shipper.delivery.spool import Spool
from tests.support.wait import until_blocking

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("spool_writer.py")
MAX_BYTES = 1_500_000
SEGMENT_BYTES = 120_000
KILLS = 20


def parse(out: bytes) -> tuple[list[int], list[int], list[int], bool]:
    """(durable, maybe acked, durably acked numbers, ready) from complete lines of a child's stdout."""
    durable, maybe_acked, acked, ready = [], [], [], False
    for line in out.split(b"\n")[:-1]:  # the last piece is empty or a partial line
        kind, _, n = line.partition(b" ")
        if kind == b"R":
            ready = True
        elif kind == b"D":
            durable.append(int(n))
        elif kind == b"a":
            maybe_acked.append(int(n))
        elif kind == b"A":
            acked.append(int(n))
        else:
            raise AssertionError(f"unexpected child output {line!r}")
    return durable, maybe_acked, acked, ready


def check_record(meta: bytes, payload: bytes) -> int:
    n = int(meta)
    head, _, _ = payload.partition(b":")
    assert head == meta, f"payload of record {n} names {head!r}"
    assert hashlib.sha256(payload[:-32]).digest() == payload[-32:], f"payload of record {n} damaged"
    return n


def test_sigkill_never_loses_a_durable_unacked_record(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    rng = random.Random(20240611)
    durable: set[int] = set()
    maybe_acked: set[int] = set()
    acked: set[int] = set()
    torn = ready_runs = 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    for run in range(KILLS):
        out_path = tmp_path / f"run{run}.out"
        with open(out_path, "wb") as out:
            args = [str(spool_dir), str(run), str(run * 1_000_000), str(MAX_BYTES), str(SEGMENT_BYTES)]
            child = subprocess.Popen([sys.executable, str(WRITER), *args], stdout=out, env=env, cwd=tmp_path)
        try:
            # most kills land while writing; some during start-up and recovery
            if rng.random() < 0.8:  # the writer ready (or gone: asserted below)
                until_blocking(
                    lambda out_path=out_path, child=child: parse(out_path.read_bytes())[3] or child.poll() is not None,
                    timeout_s=10,
                    what="the writer ready",
                    max_poll_s=0.005,
                )
            time.sleep(rng.uniform(0.0, 0.35))  # the kill point, at random: what this test varies
            assert child.poll() is None, f"writer exited early with {child.returncode}"
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        d, maybe_a, a, ready = parse(out_path.read_bytes())
        durable.update(d)
        maybe_acked.update(maybe_a)
        acked.update(a)
        assert acked <= maybe_acked
        ready_runs += ready

        with Spool(spool_dir, max_bytes=MAX_BYTES, segment_bytes=SEGMENT_BYTES) as sp:
            replayed, after = [], None
            while batch := sp.next_unacked(64, after=after):
                replayed.extend(check_record(r.meta, r.payload) for r in batch)
                after = batch[-1].id
            assert sp.stats["corrupt_records"] == 0 and sp.stats["quarantined_segments"] == 0
            torn += sp.stats["torn_tails_cut"]
        assert replayed == sorted(set(replayed)), f"run {run}: replay out of order or duplicated"
        missing = durable - maybe_acked - set(replayed)
        assert not missing, f"run {run}: durable unacked records lost: {sorted(missing)[:20]}"
        resurrected = acked & set(replayed)
        assert not resurrected, f"run {run}: durably acked records replayed: {sorted(resurrected)[:20]}"
        on_disk = sum(p.stat().st_size for p in spool_dir.glob("*.spool"))
        assert on_disk <= MAX_BYTES
        assert not list(spool_dir.glob("*.corrupt"))
    elapsed = time.monotonic() - started
    print(f"spool torture: {KILLS} kills in {elapsed:.1f}s, {len(durable)} durable appends, {len(acked)} durable acks, {torn} torn tails cut")
    assert ready_runs >= KILLS // 2 and len(durable) > 100 and len(acked) > 20  # the loop did real work
