"""Per-group counts over a sliding event-time window, kept in ten buckets per window.

A group (the values of `group_by`) counts the events of its rule in buckets of `window_s / 10` seconds of event
time, aligned on the epoch; the window is the ten buckets ending at the engine's watermark (the latest event
time seen), so it covers between 0.9 and 1.0 × window_s. Each bucket holds the event count, one count per tally
and one set per distinct metric, so a group costs O(10) whatever the traffic, and the window closes as event
time advances (buckets older than the window are dropped when the group is next touched, whole groups by the
engine's sweep). An event older than the window (out of order by more than window_s) is not counted, and is
counted as late.

After an alert the group stays quiet until `dedup_s` of event time has passed (default: the window), so a
burst raises one alert, and a burst that goes on raises one per period. Groups are kept in least recently
touched order; past `max_groups` the least recent live group is dropped and counted (`overflow`).
Everything here is a function of the events in order: no clock, no randomness, so a snapshot restored
mid-stream gives the same alerts as an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kube_audit_shipper.process.detect.spec import Aggregate

BUCKETS_PER_WINDOW = 10
RECENT_IDS = 10


class Bucket:
    __slots__ = ("count", "index", "sets", "tallies")

    def __init__(self, index: int, tallies: int, distinct: int) -> None:
        self.index = index
        self.count = 0
        self.tallies = [0] * tallies
        self.sets: list[set[str]] = [set() for _ in range(distinct)]


class Group:
    __slots__ = ("buckets", "quiet_until", "recent")

    def __init__(self) -> None:
        self.buckets: list[Bucket] = []
        self.quiet_until = float("-inf")
        #: (bucket index, auditID) of the latest events counted, for the alert's audit_ids
        self.recent: list[tuple[int, str]] = []


class GroupState(msgspec.Struct, array_like=True):
    key: str
    buckets: list[tuple[int, int, list[int], list[list[str]]]]
    quiet_until: float | None
    recent: list[tuple[int, str]]


class WindowCounter:
    """The groups of one aggregate rule."""

    def __init__(self, spec: Aggregate, *, max_groups: int, max_distinct: int) -> None:
        self.spec = spec
        self.window_s = spec.window_s
        self.bucket_s = spec.window_s / BUCKETS_PER_WINDOW
        self.dedup_s = spec.window_s if spec.dedup_s is None else spec.dedup_s
        self.max_groups = max_groups
        self.max_distinct = max_distinct
        self.groups: dict[str, Group] = {}
        self.tallies = len(spec.tally)
        self.distinct = len(spec.distinct)
        self.overflow = 0
        self.distinct_overflow = 0
        self.late = 0

    def low_index(self, now: float) -> int:
        """The oldest bucket index still inside the window ending at `now`."""
        return int(now // self.bucket_s) - BUCKETS_PER_WINDOW + 1

    def add(self, key: str, time_s: float | None, now: float, tallies: list[bool], values: list[str | None], audit_id: str) -> Group | None:
        """Count one event in group `key`; the group, or None when the event is older than the window."""
        low = self.low_index(now)
        index = int((now if time_s is None else time_s) // self.bucket_s)
        if index < low:
            self.late += 1
            return None
        groups = self.groups
        group = groups.pop(key, None)
        if group is None:
            if len(groups) >= self.max_groups:
                self._make_room(now)
            group = Group()
        groups[key] = group  # most recently touched last
        buckets = group.buckets
        while buckets and buckets[0].index < low:
            del buckets[0]
        bucket = self._bucket(buckets, index)
        bucket.count += 1
        for position, hit in enumerate(tallies):
            if hit:
                bucket.tallies[position] += 1
        for position, value in enumerate(values):
            if value is not None:
                seen = bucket.sets[position]
                if value not in seen:
                    if len(seen) >= self.max_distinct:
                        self.distinct_overflow += 1
                    else:
                        seen.add(value)
        if audit_id:
            group.recent.append((index, audit_id))
            if len(group.recent) > RECENT_IDS:
                del group.recent[0]
        return group

    def _bucket(self, buckets: list[Bucket], index: int) -> Bucket:
        if buckets and buckets[-1].index == index:
            return buckets[-1]
        position = len(buckets)
        while position > 0 and buckets[position - 1].index > index:
            position -= 1
        if position > 0 and buckets[position - 1].index == index:
            return buckets[position - 1]
        bucket = Bucket(index, self.tallies, self.distinct)
        buckets.insert(position, bucket)
        return bucket

    def _make_room(self, now: float) -> None:
        """Drop groups that can no longer matter; if none, the least recently touched live group (counted)."""
        self.sweep(now)
        while len(self.groups) >= self.max_groups:
            del self.groups[next(iter(self.groups))]
            self.overflow += 1

    def sweep(self, now: float) -> None:
        """Forget every group whose buckets are all out of the window and whose quiet period is over.

        Such a group behaves exactly like a new one, so sweeping at any moment never changes an alert."""
        low = self.low_index(now)
        dead = [key for key, group in self.groups.items() if (not group.buckets or group.buckets[-1].index < low) and group.quiet_until <= now]
        for key in dead:
            del self.groups[key]

    def metrics(self, group: Group, now: float) -> dict[str, Any]:
        low = self.low_index(now)
        live = [bucket for bucket in group.buckets if bucket.index >= low]
        count = sum(bucket.count for bucket in live)
        out: dict[str, Any] = {"count": count}
        for position, (name, _) in enumerate(self.spec.tally):
            hits = sum(bucket.tallies[position] for bucket in live)
            out[name] = hits
            out[f"{name}_ratio"] = hits / count if count else 0.0
        for position, (name, _) in enumerate(self.spec.distinct):
            union: set[str] = set()
            for bucket in live:
                union |= bucket.sets[position]
            out[name] = len(union)
        return out

    def window_start_s(self, group: Group, now: float) -> float:
        low = self.low_index(now)
        first = next((bucket.index for bucket in group.buckets if bucket.index >= low), low)
        return first * self.bucket_s

    def recent_ids(self, group: Group, now: float) -> list[str]:
        low = self.low_index(now)
        return list(dict.fromkeys(audit_id for index, audit_id in group.recent if index >= low))

    # ---- state ------------------------------------------------------------------------------------------------
    def save(self) -> list[GroupState]:
        return [
            GroupState(
                key,
                [(bucket.index, bucket.count, list(bucket.tallies), [sorted(values) for values in bucket.sets]) for bucket in group.buckets],
                None if group.quiet_until == float("-inf") else group.quiet_until,
                list(group.recent),
            )
            for key, group in self.groups.items()
        ]

    def load(self, states: list[GroupState]) -> None:
        self.groups = {}
        for state in states:
            group = Group()
            for index, count, tallies, sets in state.buckets:
                if len(tallies) != self.tallies or len(sets) != self.distinct:
                    raise ValueError("the saved groups do not fit this rule's tallies and distinct metrics")
                bucket = Bucket(index, self.tallies, self.distinct)
                bucket.count = count
                bucket.tallies = list(tallies)
                bucket.sets = [set(values) for values in sets]
                group.buckets.append(bucket)
            group.quiet_until = float("-inf") if state.quiet_until is None else state.quiet_until
            group.recent = [(index, audit_id) for index, audit_id in state.recent]
            self.groups[state.key] = group
