"""The demo's progress display: one line redrawn on a terminal, plain periodic lines elsewhere, and log records
that never land in the middle of the bar."""

from __future__ import annotations

import io
import logging

from kube_audit_shipper.demo.progress import LiveLineGuard, Progress, ProgressDisplay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def __init__(self, encoding: str = "utf-8") -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def test_plain_lines_come_every_interval_and_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, 3000, live=False, interval_s=1.0, clock=clock)
    for i in range(25):  # 3 s of updates every 0.125 s
        display.update(Progress(written=i * 100, shipped=i * 90, rotations=i // 20, alerts=i // 10))
        clock.now += 0.125
    display.finish(Progress(3000, 3000, 1, 5))
    lines = out.getvalue().splitlines()
    assert len(lines) == 5  # at 0, 1, 2 and 3 s, then the end
    assert lines[0] == "    0.0s  written 0/3,000  shipped 0  rotations 0  alerts 0"
    assert lines[-1].endswith("written 3,000/3,000  shipped 3,000  rotations 1  alerts 5")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_terminal_gets_one_line_redrawn_at_most_ten_times_a_second() -> None:
    out, clock = Terminal(), Clock()
    display = ProgressDisplay(out, 1000, live=True, width=100, clock=clock)
    for i in range(20):  # every 1/16 s: drawn every other time
        display.update(Progress(written=i * 50, shipped=i * 50))
        clock.now += 0.0625
    text = out.getvalue()
    assert text.count("\r") == 10 and "\n" not in text
    frames = [frame.removesuffix("\x1b[K") for frame in text.split("\r")[1:]]
    assert all(len(frame) < 100 for frame in frames)
    assert frames[-1].startswith("█" * 27 + "░" * 3) and " 90%  written 900/1,000  shipped 900" in frames[-1]
    display.finish(Progress(1000, 1000, 0, 4))
    assert out.getvalue().endswith("100%  written 1,000/1,000  shipped 1,000  rotations 0  alerts 4\x1b[K\n")


def test_a_narrow_terminal_gets_a_shorter_line_and_a_terminal_without_utf8_plain_characters() -> None:
    out = Terminal(encoding="ANSI_X3.4-1968")
    display = ProgressDisplay(out, 10, live=True, width=60, clock=Clock())
    display.update(Progress(written=10, shipped=5))
    frame = out.getvalue().split("\r")[-1].removesuffix("\x1b[K")
    assert len(frame) == 59 and frame.startswith("#####-----")
    frame.encode("ascii")


def test_the_guard_wipes_the_bar_before_a_log_record_and_the_next_update_draws_it_again() -> None:
    out, clock = Terminal(), Clock()
    display = ProgressDisplay(out, 100, live=True, width=80, clock=clock)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LiveLineGuard(display))
    logger = logging.getLogger("tests.demo.progress")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        display.update(Progress(written=50, shipped=10))
        logger.warning("something happened")
        assert out.getvalue().endswith("\r\x1b[K") and stream.getvalue() == "something happened\n"
        logger.warning("again")  # nothing shown: nothing to wipe
        assert out.getvalue().count("\r\x1b[K") == 1
        clock.now += 1
        display.update(Progress(written=60, shipped=20))
        assert out.getvalue().endswith("shipped 20  rotations 0  alerts 0\x1b[K")
    finally:
        logger.removeHandler(handler)


def test_plain_output_has_nothing_to_wipe() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, 10, live=False, clock=Clock())
    display.update(Progress(1, 1))
    display.clear()
    assert out.getvalue() == "    0.0s  written 1/10  shipped 1  rotations 0  alerts 0\n"


def test_no_events_is_complete_at_once() -> None:
    out = Terminal()
    display = ProgressDisplay(out, 0, live=True, width=80, clock=Clock())
    display.finish(Progress())
    assert "100%  written 0/0" in out.getvalue()
