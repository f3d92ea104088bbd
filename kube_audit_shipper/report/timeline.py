"""Event counts over time, for every trend chart of the report, in bounded memory whatever the log spans.

All series share one bucket width. It starts at a minute and doubles (every series re-bucketed) whenever more
than `max_buckets` distinct buckets are in use, so a report over an hour has minute bars and one over a month
has bars of a few hours, and a few events with absurd timestamps cost a few buckets, not a re-bucketing per
event. Charts resample the buckets to the bars they draw.
"""

from __future__ import annotations

START_WIDTH_S = 60
MAX_BUCKETS = 2048


class Timeline:
    """Named series of counts per time bucket; `bucket(ts)` once per event, then `add(series, b)` per series."""

    __slots__ = ("_max_buckets", "_used", "series", "width_s")

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self.width_s = START_WIDTH_S
        self.series: dict[str, dict[int, int]] = {}
        self._used: set[int] = set()
        self._max_buckets = max_buckets

    def bucket(self, ts: float) -> int:
        """The bucket of event time `ts` (epoch seconds), widening the buckets first if need be."""
        b = int(ts) // self.width_s
        if b not in self._used:
            self._used.add(b)
            if len(self._used) > self._max_buckets:
                self._widen()
                b = int(ts) // self.width_s
        return b

    def add(self, name: str, b: int, amount: int = 1) -> None:
        counts = self.series.get(name)
        if counts is None:
            counts = self.series[name] = {}
        counts[b] = counts.get(b, 0) + amount

    def _widen(self) -> None:
        while len(self._used) > self._max_buckets // 2:
            self.width_s *= 2
            self._used = {b // 2 for b in self._used}
            for name, counts in self.series.items():
                merged: dict[int, int] = {}
                for b, n in counts.items():
                    merged[b // 2] = merged.get(b // 2, 0) + n
                self.series[name] = merged

    def span(self) -> tuple[int, int] | None:
        """(first, last) bucket in use, None when nothing was counted."""
        if not self._used:
            return None
        return min(self._used), max(self._used)

    def resample(self, name: str, bars: int) -> tuple[list[int], int, int]:
        """The counts of series `name` in at most `bars` equal bars over the whole span: (counts, start_s, bar_width_s)."""
        span = self.span()
        if span is None:
            return [], 0, self.width_s
        first, last = span
        buckets = last - first + 1
        per_bar = max(1, -(-buckets // max(1, bars)))
        out = [0] * (-(-buckets // per_bar))
        for b, n in self.series.get(name, {}).items():
            out[(b - first) // per_bar] += n
        return out, first * self.width_s, per_bar * self.width_s
