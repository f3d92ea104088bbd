"""The report's time window: `--since` / `--until` as RFC 3339 times or durations back from now.

A duration is a number and a unit, or several (`90s`, `15m`, `24h`, `7d`, `1w`, `1h30m`); it means that long
before now. A time is RFC 3339 (`2026-11-22T10:00:00Z`, an offset instead of `Z`, a space instead of `T`,
fraction digits optional; without a zone it is UTC) or a bare date (`2026-11-22`, its midnight UTC).
The window is half-open, [since, until); an event without a readable time is outside any bounded window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kube_audit_shipper.process.enrich.timestamps import parse_timestamp

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:w|d|h|m|s))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)")
_UNIT_S = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_bound(text: str, now_s: float) -> float:
    """Epoch seconds of a `--since`/`--until` value. Raises ValueError with what is accepted."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        return now_s - sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(value))
    if _DATE.fullmatch(value):
        value += "T00:00:00Z"
    moment = parse_timestamp(value)
    if moment is None:
        raise ValueError(f"{text!r} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration back from now (24h, 7d, 1h30m)")
    return moment.timestamp()


@dataclass(frozen=True)
class TimeWindow:
    since_s: float | None = None
    until_s: float | None = None

    def __post_init__(self) -> None:
        if self.since_s is not None and self.until_s is not None and self.since_s >= self.until_s:
            raise ValueError("--since must be before --until")

    @property
    def bounded(self) -> bool:
        return self.since_s is not None or self.until_s is not None

    def contains(self, ts: float | None) -> bool:
        if ts is None:
            return not self.bounded
        if self.since_s is not None and ts < self.since_s:
            return False
        return not (self.until_s is not None and ts >= self.until_s)
