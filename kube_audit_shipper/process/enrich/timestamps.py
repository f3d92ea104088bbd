"""Request latency from an event's two timestamps.

kube-apiserver writes RFC 3339 with microseconds in UTC (`2018-10-25T13:58:49.730588Z`). Third-party
events also carry other forms, which are accepted: a space instead of `T`, 0 to 9 fraction digits, a numeric
offset instead of `Z`, or no zone at all (read as UTC: `2022-11-29 00:09:04.38`). Anything else gives None:
a value out of range (month 13, an offset of `+99:99`, a year the difference cannot be computed for) or
anything that only looks like a timestamp (`00:00:9e9999999Z`).

Only `requestReceivedTimestamp` and `stageTimestamp` are used. Old v1beta1 events with only the
second-precision `timestamp`/`metadata.creationTimestamp` get no latency (it would read as 0 or 1000 ms).

Speed: two stamps of the same minute differ only in their seconds (most requests); two stamps in the form
kube-apiserver writes (`2006-01-02T15:04:05.999999Z`, ASCII digits) are read by slicing, with the day number
of each date memoised; anything else goes through the general parser. Each fast path gives what the general
parser gives for the stamps it takes (tests/unit/process/test_fast_paths.py compares them).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?")
#: `YYYY-MM-DDTHH:MM:` — two stamps sharing it differ only in their seconds (the usual case).
_MINUTE_PREFIX = 17
#: `2006-01-02T15:04:05.999999Z` exactly, ASCII digits only (RFC 3339 as kube-apiserver writes MicroTime).
_APISERVER = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_APISERVER_LENGTH = 27
_DAYS: dict[str, int | None] = {}
_DAYS_MAX = 4096
_US_PER_DAY = 86_400_000_000


def latency_ms(received: str | None, stage: str | None) -> float | None:
    """`stage - received` in milliseconds, rounded to the microsecond; None if either is missing or unreadable."""
    if not received or not stage:
        return None
    if (
        len(received) == len(stage)
        and received[-1] == "Z" == stage[-1]
        and stage.startswith(received[:_MINUTE_PREFIX])
        and received[_MINUTE_PREFIX - 1] == ":"
        and received[10] == "T"
        and received[4] == "-"
    ):
        # float() also reads `9e9999999` (inf), `nan` or `1_0`: only seconds of a minute are taken here, anything
        # else goes to the exact parser below (a range check costs less than checking the digits first).
        try:
            start_s, end_s = float(received[_MINUTE_PREFIX:-1]), float(stage[_MINUTE_PREFIX:-1])
        except ValueError:
            pass
        else:
            if 0.0 <= start_s < 61.0 and 0.0 <= end_s < 61.0:
                return round((end_s - start_s) * 1e6) / 1000
    if len(received) == _APISERVER_LENGTH == len(stage) and _APISERVER.fullmatch(received) and _APISERVER.fullmatch(stage):
        start_us, end_us = _apiserver_us(received), _apiserver_us(stage)
        if start_us is None or end_us is None:
            return None
        return (end_us - start_us) / 1000
    start = parse_timestamp(received)
    end = parse_timestamp(stage)
    if start is None or end is None:
        return None
    try:
        return ((end - start) // timedelta(microseconds=1)) / 1000
    except OverflowError:  # stamps at the ends of the calendar in different zones
        return None


def parse_timestamp(text: str) -> datetime | None:
    """An aware datetime (UTC when the text has no zone), truncated to microseconds; None if unreadable."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if zone is None or zone in ("Z", "z"):
        tz = UTC
    else:
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if zone[0] == "-" else offset)
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    except (ValueError, OverflowError):
        return None


def _apiserver_us(text: str) -> int | None:
    """Microseconds since 0001-01-01 of a stamp `_APISERVER` matched; None where `parse_timestamp` gives None (a
    date that does not exist, hour 24, minute or second 60)."""
    days = _DAYS.get(text[:10], -1)
    if days == -1:
        days = _day_number(text[:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if days is None or hour > 23 or minute > 59 or second > 59:
        return None
    return days * _US_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1_000_000 + int(text[20:26])


def _day_number(day: str) -> int | None:
    try:
        number: int | None = date(int(day[:4]), int(day[5:7]), int(day[8:10])).toordinal()
    except ValueError:
        number = None
    if len(_DAYS) >= _DAYS_MAX:
        _DAYS.clear()
    _DAYS[day] = number
    return number
