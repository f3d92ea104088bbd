"""Bounded tables: per-key counters that never outgrow a cap, and most-recent lists.

A log holds as many distinct users, addresses, namespaces and user agents as an attacker cares to make up,
so no table may grow with its input. `KeyedTable` keeps at most `cap` keys; when it is full, the half with
the smallest first column is folded into an `(other)` row and the table goes on. Heavy hitters, the keys a
report is about, keep accumulating and are never the ones folded, also when they first show up late (a burst
from a new address after a day of quiet traffic); a folded key that comes back starts again from zero, so a
count read from the table is a lower bound once `folded` is non-zero, and every column's total stays exact.

`Recent` keeps the last `n` items and counts all of them, so a section can say "the last 200 of 3,412".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: The row every folded key is summed into.
OTHER = "(other)"
#: Longest key kept (user agents and URIs can be as long as the line); longer keys are cut and marked.
MAX_KEY_CHARS = 200


def clip(text: str, limit: int = MAX_KEY_CHARS) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class KeyedTable:
    """key -> row of `width` integers, at most `cap` keys plus `(other)`.

    Column 0 is the row's weight (what folding keeps the largest of). Columns listed in `max_columns` hold
    values merged by maximum (a last-seen time), every other column is summed.
    """

    __slots__ = ("_max_columns", "cap", "folded", "other", "rows", "width")

    def __init__(self, cap: int, width: int = 1, max_columns: tuple[int, ...] = ()) -> None:
        if cap < 2:
            raise ValueError("cap must be at least 2")
        self.cap = cap
        self.width = width
        self.rows: dict[str, list[int]] = {}
        self.other = [0] * width
        self.folded = 0  #: distinct keys folded into `other` so far
        self._max_columns = max_columns

    def row(self, key: str) -> list[int]:
        """The row of `key`, created (zeros) if absent; the caller adds to its columns."""
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= self.cap:
                self._fold()
            if len(key) > MAX_KEY_CHARS:
                key = clip(key)
                row = self.rows.get(key)
                if row is not None:
                    return row
            row = self.rows[key] = [0] * self.width
        return row

    def add(self, key: str, amount: int = 1) -> None:
        """Add `amount` to column 0 of `key`."""
        row = self.rows.get(key)
        if row is None:
            row = self.row(key)
        row[0] += amount

    def _fold(self) -> None:
        """Fold the lighter half of the keys into `other`."""
        ordered = sorted(self.rows.items(), key=lambda item: item[1][0])
        other = self.other
        for key, row in ordered[: max(1, len(ordered) // 2)]:
            for i, value in enumerate(row):
                if i in self._max_columns:
                    other[i] = max(other[i], value)
                else:
                    other[i] += value
            del self.rows[key]
            self.folded += 1

    def top(self, n: int, column: int = 0) -> list[tuple[str, list[int]]]:
        """The `n` rows with the largest `column`, largest first (ties by key, for a stable page)."""
        ordered = sorted(self.rows.items(), key=lambda item: (-item[1][column], item[0]))
        return ordered[:n]

    def rest(self, shown: list[tuple[str, list[int]]]) -> list[int]:
        """Column sums (or maxima) of every row not in `shown`, `other` included."""
        shown_keys = {key for key, _ in shown}
        rest = list(self.other)
        for key, row in self.rows.items():
            if key in shown_keys:
                continue
            for i, value in enumerate(row):
                rest[i] = max(rest[i], value) if i in self._max_columns else rest[i] + value
        return rest

    def total(self, column: int = 0) -> int:
        return self.other[column] + sum(row[column] for row in self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self.rows


class Recent(Generic[T]):
    """The last `n` items appended, and how many were appended in all."""

    __slots__ = ("count", "items")

    def __init__(self, n: int) -> None:
        self.items: deque[T] = deque(maxlen=n)
        self.count = 0

    def append(self, item: T) -> None:
        self.items.append(item)
        self.count += 1

    def newest_first(self) -> list[T]:
        return list(reversed(self.items))

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class SeenIds:
    """The last `n` ids seen, to count a request logged at several stages once (bounded, oldest forgotten first)."""

    __slots__ = ("_ids", "_order")

    def __init__(self, n: int) -> None:
        self._ids: set[str] = set()
        self._order: deque[str] = deque(maxlen=n)

    def first_time(self, audit_id: str) -> bool:
        """True the first time `audit_id` is seen (within the last `n`); an empty id is always new."""
        if not audit_id:
            return True
        if audit_id in self._ids:
            return False
        if len(self._order) == self._order.maxlen:
            self._ids.discard(self._order[0])
        self._order.append(audit_id)
        self._ids.add(audit_id)
        return True
