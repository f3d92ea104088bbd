"""What a sink is to the delivery engine, and the four (five) answers a delivery attempt can get.

A sink turns a batch of records into wire requests (`encode`: CPU only, runs in a worker thread, may
split at backend limits), makes exactly one attempt per request (`send`: one HTTP call or one write;
transport errors propagate; never sleeps, loops or retries), and says what the answer means
(`classify`: a pure function). Batching, concurrency, backoff, Retry-After, spool, dead letters,
acknowledgements and the shipped/failed metrics live in the engine, once, for every sink.

    Delivered            every record of the request is stored
    Retry(reason, after) try again later: connection errors, timeouts, 5xx, 429, quota (after: Retry-After, s)
    Rejected(reason, indices, ...)  the backend refused these records for good (dead-lettered with the
                         reason); the others are delivered (`retry_rest=False`) or must be sent again
    Blocked(reason)      cannot work until an operator acts (credentials, missing bucket/logstore, TLS):
                         retry slowly, one error log per interval, sink state metric, keep the data
    Split(reason)        the request itself is too large for the backend: `sink.split` it and send the parts
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(slots=True)
class Request:
    """One wire request: its body, headers, and which records of the batch it carries."""

    payload: bytes
    indices: Sequence[int]  # positions in the batch's records list
    headers: dict[str, str] = field(default_factory=dict)
    raw_bytes: int = 0  # uncompressed size, for metrics and limits
    meta: dict[str, Any] = field(default_factory=dict)  # sink-specific (e.g. stream layout for partial rejections)


@dataclass(slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    after_s: float | None = None  # the backend's Retry-After, if it gave one


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    indices: Sequence[int]  # positions in the batch's records list (a subset of request.indices)
    retry_rest: bool = False  # True: the other records were NOT stored and must be sent again
    reasons: Mapping[int, str] | None = None  # per-record reason when the backend gives one


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: str


@dataclass(frozen=True, slots=True)
class Split:
    reason: str


Outcome = Delivered | Retry | Rejected | Blocked | Split


@runtime_checkable
class Sink(Protocol):
    name: str
    max_concurrency: int | None  # a backend that must see batches in order says 1

    def encode(self, records: list[bytes]) -> list[Request]: ...

    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        """Re-encode the records of a too-large request as two or more smaller requests."""
        ...

    async def send(self, request: Request) -> Reply: ...

    def classify(self, request: Request, result: Reply | BaseException) -> Outcome: ...

    async def aclose(self) -> None: ...


class Batch:
    """Records for one sink plus the input ranges they stand for, per file."""

    __slots__ = ("nbytes", "oldest_read", "parts", "ranges", "records", "started")

    def __init__(self, started: float) -> None:
        self.records: list[bytes] = []
        self.parts: list[tuple[Any, int, int]] = []  # (chunk, i, j): records[...] came from chunk.records[i:j]
        self.ranges: dict[int, list[int]] = {}  # fid -> [start, end)
        self.nbytes = 0
        self.started = started
        self.oldest_read = started


def split_in_half(request: Request) -> tuple[list[int], list[int]] | None:
    """The request's record indices in two halves, or None when it carries a single record."""
    idx = list(request.indices)
    if len(idx) < 2:
        return None
    mid = len(idx) // 2
    return idx[:mid], idx[mid:]
