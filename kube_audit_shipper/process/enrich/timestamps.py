"""Request latency from an event's two timestamps.

kube-apiserver writes RFC 3339 with microseconds in UTC (`2018-10-25T13:58:49.730588Z`). Third-party
events also carry other forms, which are accepted: a space instead of `T`, 0 to 9 fraction digits, a numeric
offset instead of `Z`, or no zone at all (read as UTC: `2022-11-29 00:09:04.38`). Anything else gives None.

Only `requestReceivedTimestamp` and `stageTimestamp` are used. Old v1beta1 events with only the
second-precision `timestamp`/`metadata.creationTimestamp` get no latency (it would read as 0 or 1000 ms).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?")
#: `YYYY-MM-DDTHH:MM:` — two stamps sharing it differ only in their seconds (the usual case).
_MINUTE_PREFIX = 17


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
        try:
            micros = round((float(stage[_MINUTE_PREFIX:-1]) - float(received[_MINUTE_PREFIX:-1])) * 1e6)
        except ValueError:
            pass
        else:
            return micros / 1000
    start = parse_timestamp(received)
    end = parse_timestamp(stage)
    if start is None or end is None:
        return None
    return ((end - start) // timedelta(microseconds=1)) / 1000


def parse_timestamp(text: str) -> datetime | None:
    """An aware datetime (UTC when the text has no zone), truncated to microseconds; None if unreadable."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if zone is None or zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    except ValueError:
        return None
