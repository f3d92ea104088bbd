"""Cut a sink's queue of chunks into batches: at `max_events` records, `max_bytes` bytes, or `max_wait_ms`
after a batch's first record, whichever comes first.

Chunks are shared by every sink (records are not copied); a batch keeps, per file, the input range its
records stand for, which is what its acknowledgement moves the ledger over, and where each record was read
(for dead letters). A record larger than max_bytes makes a batch of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kube_audit_shipper.delivery.config import BatchConfig
from kube_audit_shipper.model import Chunk

Locate = Callable[[int], "tuple[str | None, int, int] | None"]  # record index -> (path, offset, length) it was read at


class Batch:
    """Records for one sink plus the input ranges they stand for, per file."""

    __slots__ = ("left", "nbytes", "oldest_read", "parts", "ranges", "records", "started")

    def __init__(self, started: float) -> None:
        self.records: list[bytes] = []
        self.parts: list[tuple[Any, int, int]] = []  # (chunk, i, j): records[...] came from chunk.records[i:j]
        self.ranges: dict[int, list[int]] = {}  # fid -> [start, end)
        self.nbytes = 0
        self.started = started
        self.oldest_read = started
        self.left: set[int] | None = None  # while being delivered: indices not yet delivered nor dead-lettered

    def locator(self, path_of: Callable[[int], str | None]) -> Locate:
        """Record index in the batch → (path, offset, length) of the input line it came from."""
        parts = self.parts

        def locate(k: int) -> tuple[str | None, int, int] | None:
            base = 0
            for chunk, i, j in parts:
                if k < base + j - i:
                    offset, length = chunk.location(i + k - base)
                    return path_of(chunk.fid), offset, length
                base += j - i
            return None

        return locate


async def cut_batches(queue: asyncio.Queue[Chunk | None], cfg: BatchConfig, flush: Callable[[Batch], Awaitable[None]]) -> None:
    """Consume chunks until the None sentinel, handing each full (or old enough) batch to `flush`; returns
    once the last one is handed off."""
    max_wait = cfg.max_wait_ms / 1000
    batch: Batch | None = None
    while True:
        if batch is None:
            chunk = await queue.get()
        else:
            timeout = batch.started + max_wait - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    chunk = await queue.get()
            except TimeoutError:
                await flush(batch)
                batch = None
                continue
        if chunk is None:
            break
        records, ends, n = chunk.records, chunk.ends, len(chunk.records)
        i = 0
        while i < n:
            if batch is None:
                batch = Batch(time.monotonic())
                batch.oldest_read = chunk.read_at
            room = cfg.max_events - len(batch.records)
            j = i
            nbytes = batch.nbytes
            limit = cfg.max_bytes
            while j < n and j - i < room:
                size = len(records[j]) + 1
                if nbytes + size > limit and (nbytes or j > i):
                    break
                nbytes += size
                j += 1
            if j == i:  # the next record does not fit: this batch is full
                await flush(batch)
                batch = None
                continue
            batch.records.extend(records[i:j])
            batch.parts.append((chunk, i, j))
            batch.nbytes = nbytes
            start = chunk.start if i == 0 else ends[i - 1]
            rng = batch.ranges.get(chunk.fid)
            if rng is None:
                batch.ranges[chunk.fid] = [start, ends[j - 1]]
            else:
                rng[1] = ends[j - 1]
            i = j
            if len(batch.records) >= cfg.max_events or batch.nbytes >= limit or j < n:
                await flush(batch)
                batch = None
    if batch is not None:
        await flush(batch)
