"""`deadletter list|replay`: inspect the dead-letter store and send its events again after a fix.

`replay` sends each not-yet-replayed record that holds its event: a record a sink rejected goes to
that sink again; an input record (bad line, sink null) goes through the policy/enrichment again and
then to every sink. The same delivery engine is used, so a record the backend rejects again becomes a
new dead letter with the new reason. Replayed ids are appended to `deadletter/replayed.txt` once
delivered. It takes the state directory lock: stop the agent first (`systemctl stop`), then replay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any, TextIO

from kube_audit_shipper.app.build import load_transform, lock_state_dir
from kube_audit_shipper.checkpoint.ledger import Ledger
from kube_audit_shipper.config import Config
from kube_audit_shipper.deadletter.store import DeadLetterStore
from kube_audit_shipper.delivery.runner import SinkRunner
from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.process.check import check_event
from kube_audit_shipper.sinks.registry import build_sink, sink_context


def _store(cfg: Config) -> DeadLetterStore:
    return DeadLetterStore(cfg.state_dir, max_bytes=cfg.deadletter.max_bytes, max_event_bytes=cfg.deadletter.max_event_bytes)


def _event(record: dict[str, Any]) -> bytes | None:
    if "event" in record:
        return str(record["event"]).encode("utf-8")
    if "event_b64" in record:
        return base64.b64decode(record["event_b64"])
    return None


def list_deadletters(cfg: Config, *, sink: str | None, include_replayed: bool, as_json: bool, out: TextIO) -> int:
    records = [r for r in _store(cfg).iter_records(include_replayed=include_replayed) if sink is None or r.get("sink") == sink]
    if as_json:
        for r in records:
            out.write(json.dumps(r) + "\n")
        return 0
    out.write(f"{'ID':<26} {'SINK':<12} {'EVENT':>8}  {'SOURCE':<40} REASON\n")
    for r in records:
        src = r.get("source") or {}
        where = f"{src.get('path')}@{src.get('offset')}" if src else "-"
        ev = _event(r)
        out.write(f"{r['id']:<26} {r.get('sink') or '(input)':<12} {len(ev) if ev is not None else '-':>8}  {where:<40} {r.get('reason', '')}\n")
    out.write(f"{len(records)} record(s)\n")
    return 0


async def _replay(cfg: Config, records: list[dict[str, Any]], store: DeadLetterStore, out: TextIO) -> int:
    transform = load_transform(cfg)  # no detection: replayed events raised their alerts when first read
    ctx = sink_context(node=cfg.node, state_dir=cfg.state_dir, input_paths=cfg.input.paths)
    sinks = {s.name: build_sink(s, ctx) for s in cfg.sinks}
    ledger = Ledger(list(sinks))
    runners = {
        name: SinkRunner(sink, batch=cfg.batch_for(scfg), retry=scfg.retry, concurrency=1, ledger=ledger, deadletter=store)
        for (name, sink), scfg in zip(sinks.items(), cfg.sinks, strict=True)
    }
    per_sink: dict[str, list[tuple[str, bytes]]] = {name: [] for name in sinks}
    skipped = 0
    for r in records:
        event = _event(r)
        if event is None:
            skipped += 1  # stored as a location only (oversize): nothing to send
            continue
        if r.get("sink"):
            if r["sink"] not in sinks:
                out.write(f"{r['id']}: sink {r['sink']!r} is not in the config; left in the store\n")
                skipped += 1
                continue
            per_sink[r["sink"]].append((r["id"], event))
            continue
        try:  # an input record: it must be an event now (fixed by hand?) and goes through the policy again
            check_event(event)
            shipped = transform.apply(event) if transform is not None else event
        except MalformedEventError as exc:
            out.write(f"{r['id']}: still not an audit event ({exc.reason}); left in the store\n")
            skipped += 1
            continue
        except Exception as exc:  # contained to this record, as in the pipeline  # noqa: BLE001
            out.write(f"{r['id']}: processing failed ({type(exc).__name__}); left in the store\n")
            skipped += 1
            continue
        if shipped is None:
            out.write(f"{r['id']}: dropped by the policy; marked replayed\n")
            store.mark_replayed([r["id"]])
            continue
        for name in sinks:
            per_sink[name].append((r["id"], shipped))
    done: dict[str, int] = {}
    try:
        for name, items in per_sink.items():
            if items:
                await runners[name].deliver([e for _, e in items])
                done[name] = len(items)
        ids = sorted({rid for items in per_sink.values() for rid, _ in items})
        store.mark_replayed(ids)
    finally:
        deadline = time.monotonic() + cfg.shutdown_timeout_s  # sinks finish their own work (S3 uploads) within it
        for runner in runners.values():
            await runner.aclose(deadline)
        store.close()
    rejected = sum(r.rejected_events + r.gave_up_events for r in runners.values())
    out.write(
        f"replayed {sum(done.values())} event(s) ({', '.join(f'{k}: {v}' for k, v in done.items()) or 'none'}); "
        f"{rejected} rejected again (new dead letters); {skipped} left in the store\n"
    )
    return 0


def replay_deadletters(cfg: Config, *, sink: str | None, ids: list[str] | None, out: TextIO) -> int:
    lock_fd = lock_state_dir(Path(cfg.state_dir))
    try:
        store = _store(cfg)
        records = [r for r in store.iter_records(include_replayed=False) if (sink is None or r.get("sink") == sink) and (not ids or r["id"] in ids)]
        return asyncio.run(_replay(cfg, records, store, out))
    finally:
        os.close(lock_fd)
