"""Acknowledged ranges per file per sink → the offset below which every sink holds every event.

Each sink's progress on a file is a contiguous prefix `upto` plus the ranges acknowledged ahead of
it (out of order: batch 7 before batch 6). A range that starts at or before `upto` extends it and
absorbs the ranges it now touches. The file's checkpoint is the minimum `upto` over all sinks, so it
can never pass a range some sink has not acknowledged. `on_advance(fid, offset)` fires when it moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class _Progress:
    __slots__ = ("ahead", "upto")

    def __init__(self, upto: int) -> None:
        self.upto = upto
        self.ahead: dict[int, int] = {}  # start -> end of ranges acknowledged past a gap

    def add(self, start: int, end: int) -> None:
        if end <= self.upto:
            return
        if start > self.upto:
            if end > self.ahead.get(start, -1):
                self.ahead[start] = end
            return
        self.upto = end
        ahead = self.ahead
        while ahead:
            absorbed = [s for s in ahead if s <= self.upto]
            if not absorbed:
                break
            for s in absorbed:
                self.upto = max(self.upto, ahead.pop(s))


class Ledger:
    def __init__(self, sinks: Iterable[str], on_advance: Callable[[int, int], None] | None = None) -> None:
        self.sinks = tuple(sinks)
        self._files: dict[int, dict[str, _Progress]] = {}
        self._offset: dict[int, int] = {}
        self._on_advance = on_advance

    def open(self, fid: int, offset: int) -> None:
        self._files[fid] = {s: _Progress(offset) for s in self.sinks}
        self._offset[fid] = offset

    def close(self, fid: int) -> None:
        self._files.pop(fid, None)
        self._offset.pop(fid, None)

    def add_sink(self, sink: str, start: dict[int, int]) -> None:
        """A sink added by a reload: its progress on each open file starts at `start[fid]` (what the
        reader has already handed to the other sinks is not its to acknowledge)."""
        self.sinks = (*self.sinks, sink)
        for fid, progress in self._files.items():
            progress[sink] = _Progress(max(start.get(fid, 0), self._offset[fid]))

    def remove_sink(self, sink: str) -> None:
        """A sink removed by a reload: checkpoints no longer wait for it."""
        self.sinks = tuple(s for s in self.sinks if s != sink)
        for fid, progress in self._files.items():
            progress.pop(sink, None)
            if progress:
                self._recompute(fid, progress)

    def offset(self, fid: int) -> int | None:
        return self._offset.get(fid)

    def ack(self, sink: str, fid: int, start: int, end: int) -> None:
        progress = self._files.get(fid)
        if progress is None:  # the file was retired (truncated, forgotten): nothing to move
            return
        progress[sink].add(start, end)
        self._recompute(fid, progress)

    def ack_all(self, fid: int, start: int, end: int) -> None:
        """A range with nothing to ship (every line dropped or dead-lettered): acknowledged by all sinks."""
        progress = self._files.get(fid)
        if progress is None:
            return
        for p in progress.values():
            p.add(start, end)
        self._recompute(fid, progress)

    def _recompute(self, fid: int, progress: dict[str, _Progress]) -> None:
        new = min(p.upto for p in progress.values())
        if new > self._offset[fid]:
            self._offset[fid] = new
            if self._on_advance is not None:
                self._on_advance(fid, new)

    def behind(self, fid: int) -> dict[str, int]:
        """Per sink: how many ranges wait past a gap (diagnostics)."""
        return {s: len(p.ahead) for s, p in self._files.get(fid, {}).items()}
