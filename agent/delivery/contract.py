"""What a sink is to the delivery engine.

A sink turns a batch of records into one payload (`encode`: CPU only, run in a worker thread) and
makes one delivery attempt with it (`send`: raises on failure). Batching, concurrency, retries with
backoff, dead letters, acknowledgements and the shipped/failed counters live in the engine, once.
"""

from __future__ import annotations

from typing import Any, Protocol


class Sink(Protocol):
    name: str
    max_concurrency: int | None  # a backend that must see batches in order says 1

    def encode(self, records: list[bytes]) -> Any: ...

    async def send(self, payload: Any) -> None: ...

    async def aclose(self) -> None: ...


class Batch:
    """Records for one sink plus the input ranges they stand for, per file."""

    __slots__ = ("records", "ranges", "nbytes", "started", "oldest_read")

    def __init__(self, started: float) -> None:
        self.records: list[bytes] = []
        self.ranges: dict[int, list[int]] = {}  # fid -> [start, end)
        self.nbytes = 0
        self.started = started
        self.oldest_read = started
