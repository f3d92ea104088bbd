"""Encoding whatever one record holds: a record a sink cannot encode is that record's failure, not the batch's.

The pipeline ships any valid JSON object, however nested or whatever its values, so a sink's `encode` may fail
on one odd record. When a batch cannot be encoded and the sink can still encode a record it encoded before
(the *canary*; `{}` before the first batch), the batch is bisected down to the records that cannot be encoded
alone: those are reported by position with the exception (the runner dead-letters them as `unencodable`), the
rest is encoded again together. When not even the canary encodes, the sink itself is broken: the exception is
raised, and the runner keeps the batch and retries slowly (state blocked), as for any sink bug.

Everything here is CPU work for a worker thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from kube_audit_shipper.delivery.contract import Request, Sink, split_in_half

#: A dead-letter reason built from an exception keeps this many characters of its message.
MAX_REASON_CHARS = 300

Encoded = tuple[list[Request], dict[int, str]]  # requests, and why each record left out (by position) could not be encoded


class ContainedEncoder:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._canary = b"{}"  # a record this sink encoded: tells a broken sink from a record it cannot encode

    def encode(self, records: list[bytes], positions: Sequence[int] | None = None) -> Encoded:
        """Encode `records` (or only `records[positions]`), leaving out the records the sink cannot encode.

        Raises what the sink raised when the sink cannot even encode its canary: a broken sink."""
        try:
            requests = self.sink.encode(records) if positions is None else self.encode_subset(records, positions)
        except Exception as exc:  # noqa: BLE001  # one record's fault or the sink's: _isolate tells which
            return self._isolate(records, range(len(records)) if positions is None else positions, exc)
        if positions is None:
            if records:
                self._canary = records[-1]
        elif positions:
            self._canary = records[positions[-1]]
        return requests, {}

    def halves(self, request: Request, records: list[bytes]) -> list[Encoded]:
        """The records of a request (two or more) the sink failed to split, encoded again in two halves.
        Raises when the sink cannot encode at all."""
        return [self.encode(records, half) for half in split_in_half(request) or ()]

    def encode_subset(self, records: list[bytes], indices: Sequence[int]) -> list[Request]:
        """Encode some records of a batch again, keeping their positions in the batch."""
        subset = [records[i] for i in indices]
        out = []
        for req in self.sink.encode(subset):
            req.indices = [indices[k] for k in req.indices]
            out.append(req)
        return out

    def _isolate(self, records: list[bytes], positions: Sequence[int], exc: Exception) -> Encoded:
        """`records[positions]` failed to encode together: bisect down to the records that fail alone."""
        try:
            self.sink.encode([self._canary])
        except Exception:  # noqa: BLE001  # not even a record it encoded before: the sink is broken
            raise exc from None
        unencodable: dict[int, str] = {}
        parts: list[Request] = []
        self._bisect(records, list(positions), exc, unencodable, parts)
        if unencodable:
            rest = [i for i in positions if i not in unencodable]
            if rest:
                with contextlib.suppress(Exception):  # the others together, as the sink would; else the bisection's parts
                    parts = self.encode_subset(records, rest)
        return parts, unencodable

    def _bisect(self, records: list[bytes], positions: list[int], exc: Exception, unencodable: dict[int, str], parts: list[Request]) -> None:
        if len(positions) == 1:
            unencodable[positions[0]] = f"cannot encode the record: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
            return
        mid = len(positions) // 2
        for half in (positions[:mid], positions[mid:]):
            try:
                parts.extend(self.encode_subset(records, half))
            except Exception as half_exc:  # noqa: BLE001
                self._bisect(records, half, half_exc, unencodable, parts)
