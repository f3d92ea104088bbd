"""webhook/throttle.py: at most N messages in any window of W seconds, counted from when answers came back; pauses."""

from __future__ import annotations

import pytest

from kube_audit_shipper.sinks.http.throttle import LocalThrottle, SendWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send(window: SendWindow, clock: Clock, duration_s: float = 0.0) -> None:
    window.start()
    clock.now += duration_s
    window.finish()


def test_twenty_a_minute_and_the_twenty_first_waits_for_the_oldest_to_leave() -> None:
    clock = Clock()
    window = SendWindow(20, 60.0, clock=clock)
    for _ in range(20):
        send(window, clock, 0.5)  # 20 answers within 10 s
    with pytest.raises(LocalThrottle) as exc:
        window.start()
    assert exc.value.after_s == pytest.approx(60.0 - 10.0 + 0.5)  # the first answer came back at +0.5 s
    assert window.throttled == 1
    clock.now += exc.value.after_s - 0.01
    with pytest.raises(LocalThrottle):
        window.start()
    clock.now += 0.01
    window.start()  # the oldest left the window


def test_any_window_holds_at_most_n_answers() -> None:
    clock = Clock()
    window = SendWindow(3, 10.0, clock=clock)
    answers: list[float] = []
    for step in range(200):
        clock.now += 0.7
        try:
            window.start()
        except LocalThrottle:
            continue
        clock.now += 0.1 * (step % 3)
        window.finish()
        answers.append(clock.now)
    assert len(answers) > 30
    for i, t in enumerate(answers):
        assert sum(1 for u in answers[i:] if u - t < 10.0) <= 3


def test_attempts_in_flight_hold_their_slot() -> None:
    clock = Clock()
    window = SendWindow(1, 5.0, clock=clock)
    window.start()
    with pytest.raises(LocalThrottle) as exc:
        window.start()
    assert exc.value.after_s == 5.0
    clock.now += 2
    window.finish()
    with pytest.raises(LocalThrottle) as exc:
        window.start()
    assert exc.value.after_s == 5.0


def test_a_pause_stops_every_message_until_it_ends() -> None:
    clock = Clock()
    window = SendWindow(20, 60.0, clock=clock)
    window.pause(600.0, "errcode 130101")
    with pytest.raises(LocalThrottle) as exc:
        window.start()
    assert exc.value.after_s == 600.0 and "paused by the backend (errcode 130101)" in str(exc.value)
    window.pause(10.0, "shorter")  # a shorter pause never cuts a longer one
    clock.now += 599.0
    with pytest.raises(LocalThrottle):
        window.start()
    clock.now += 1.0
    window.start()
