"""What a sink is to the delivery engine, and the five answers a delivery attempt can get.

A sink turns a batch of records into wire requests (`encode`: CPU only, runs in a worker thread, may
split at backend limits), makes exactly one attempt per request (`send`: one HTTP call or one write;
transport errors propagate; never sleeps, loops or retries), and says what the answer means
(`classify`: a pure function of the request and the answer; whatever the sink learns from an answer, it
learns in `send`). Batching, concurrency, backoff, Retry-After, spool, dead letters, acknowledgements and
the shipped/failed metrics live in the engine (delivery/runner.py), once, for every sink.

    Delivered            every record of the request is stored
    Retry(reason, after) try again later: connection errors, timeouts, 5xx, 429, quota (after: Retry-After, s)
    Rejected(reason, indices, ...)  the backend refused these records for good (dead-lettered with the
                         reason); the others are delivered (`retry_rest=False`) or must be sent again
    Blocked(reason)      cannot work until an operator acts (credentials, missing bucket/logstore, TLS):
                         retry slowly, one error log per interval, sink state metric, keep the data
    Split(reason)        the request itself is too large for the backend: `sink.split` it and send the parts

A sink subclasses `Sink` and is built by its registry as `XSink(cfg, ctx)` (delivery/context.py). The
capabilities below the core methods are optional: their defaults say "none", so the engine and the
pipeline call them on every sink without asking whether it has them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
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
Failure = Retry | Blocked  # an attempt that must be made again, after a wait


@runtime_checkable
class Sink(Protocol):
    """The sink interface. Subclass it: the abstract methods are the contract, the rest are capabilities
    with defaults that mean "none"."""

    name: str
    max_concurrency: int | None = None  # a backend that must see batches in order says 1

    @abstractmethod
    def encode(self, records: list[bytes]) -> list[Request]:
        """The batch as wire requests whose indices cover every record once (CPU only, in a worker thread)."""

    @abstractmethod
    def split(self, request: Request, records: list[bytes]) -> list[Request]:
        """Re-encode the records of a too-large request as two or more smaller requests; [] when it cannot."""

    @abstractmethod
    async def send(self, request: Request) -> Reply:
        """One attempt; transport errors propagate."""

    @abstractmethod
    def classify(self, request: Request, result: Reply | BaseException) -> Outcome:
        """What the answer to `send` means. Pure: the same request and answer give the same outcome, and
        neither the sink nor the request changes."""

    @abstractmethod
    async def aclose(self, deadline: float | None = None) -> None:
        """Release what the sink holds, finishing its own work (an upload of what it staged) by `deadline`
        (a time.monotonic() value; None: no bound). Called once, after the last `send`."""

    # -- capabilities: defaults mean "none" ------------------------------------------------------
    async def run_background(self) -> None:
        """The sink's own long-running work (the S3 uploader), run by its runner from the start until
        `aclose` has asked it to end (it then returns, or is cancelled past the deadline). An exception
        fails the runner, so it never vanishes."""
        return None

    async def tick(self, now: float) -> None:
        """Time-based housekeeping (the file sink finishes a file that is old enough), called every few
        seconds with time.monotonic()."""
        return None

    def blocked_for_s(self) -> float:
        """How long the sink's own work (not its sends) has been blocked: readiness and metrics."""
        return 0.0

    def metric_families(self) -> Iterable[Any]:
        """The sink's own Prometheus metric families, collected at scrape time."""
        return ()


def split_in_half(request: Request) -> tuple[list[int], list[int]] | None:
    """The request's record indices in two halves, or None when it carries a single record."""
    idx = list(request.indices)
    if len(idx) < 2:
        return None
    mid = len(idx) // 2
    return idx[:mid], idx[mid:]
