"""Event time: the moment a request happened, read from the event itself, never from the clock.

Windows, dedup periods and alert times all use it, so `detect` over recorded logs and the live pipeline give
the same alerts. The first readable of `stageTimestamp`, `requestReceivedTimestamp` and v1beta1's `timestamp`
is used. RFC 3339 as kube-apiserver writes it (`2026-11-22T10:00:00.123456Z`) and the variants third-party
events carry (a space for `T`, 0-9 fraction digits, a numeric offset, no zone = UTC) are read; anything else
(`…00:00:9e9999999Z`, an offset `+99:99`, day 31 of February, year 0) is unreadable and gives None, never an
exception.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?")
_MINUTES: dict[str, int | None] = {}
_MINUTES_MAX = 4096


def parse_time_s(text: str) -> float | None:
    """Seconds since the Unix epoch (UTC) of an RFC 3339 timestamp, or None when it cannot be read."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    minute = _minute_s(text[:16], match)
    if minute is None:
        return None
    second = int(match.group(6))
    if second > 60:  # 60: a leap second, read as the next minute's 0
        return None
    fraction = match.group(7)
    seconds = minute + second + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    zone = match.group(8)
    if zone is None or zone in ("Z", "z"):
        return seconds
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        return None
    offset = hours * 3600 + minutes * 60
    return seconds - offset if zone[0] == "+" else seconds + offset


def _minute_s(prefix: str, match: re.Match[str]) -> int | None:
    """Epoch seconds of `YYYY-MM-DDTHH:MM` (cached: most events of a log share a few minutes)."""
    cached = _MINUTES.get(prefix, -1)
    if cached != -1:
        return cached
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    value: int | None
    try:
        datetime(year, month, day, hour, minute)  # validates the calendar date and the ranges
        value = calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0))
    except ValueError:
        value = None
    if len(_MINUTES) >= _MINUTES_MAX:
        _MINUTES.clear()
    _MINUTES[prefix] = value
    return value


def event_time_s(view: Any) -> float | None:
    """The event time of a decoded event view (see the module docstring), or None when no timestamp is readable."""
    for text in (view.stageTimestamp, view.requestReceivedTimestamp, view.timestamp):
        if text and type(text) is str:
            value = parse_time_s(text)
            if value is not None:
                return value
    return None


def format_time(seconds: float) -> str:
    """RFC 3339 UTC with microseconds, as kube-apiserver writes timestamps."""
    micros = round(seconds * 1_000_000)
    whole, micro = divmod(micros, 1_000_000)
    try:
        stamp = datetime.fromtimestamp(whole, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return "1970-01-01T00:00:00.000000Z"
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{micro:06d}Z"
