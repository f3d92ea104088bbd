"""The one retry policy of delivery: how long to wait before the next attempt, and when to give up.

Retry: exponential backoff with full jitter (tenacity's wait_random_exponential: anywhere in
[0, min(max_ms, initial_ms * multiplier^(attempt-1))]), and never sooner than the backend's Retry-After.
Blocked: one attempt per `retry.max_ms` (an operator must act; trying faster only fills logs). With
`retry.max_retry_age_s` set, a request failing for that long is given up (the runner dead-letters it) and
no wait runs past that moment.

Used by the sink runner for sends and by every piece of a sink that retries on its own (the S3 uploader's
calls), so they all wait alike.
"""

from __future__ import annotations

from tenacity import RetryCallState, wait_random_exponential

from kube_audit_shipper.delivery.config import RetryConfig
from kube_audit_shipper.delivery.contract import Blocked, Failure


class Backoff:
    def __init__(self, retry: RetryConfig) -> None:
        self._jitter = wait_random_exponential(multiplier=retry.initial_ms / 1000, max=retry.max_ms / 1000, exp_base=retry.multiplier)
        self.blocked_s = retry.max_ms / 1000  # the wait of a blocked attempt, and of anything that waits for an operator
        self.max_age_s = float(retry.max_retry_age_s) if retry.max_retry_age_s else None

    def jitter_s(self, attempt: int) -> float:
        """The full-jitter wait after failed attempt number `attempt` (1, 2, ...)."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._jitter(state))

    def delay_s(self, outcome: Failure, attempt: int, *, age_s: float = 0.0) -> float:
        """The wait after failed attempt number `attempt`, which failed with `outcome`, `age_s` after the first try."""
        delay = self.blocked_s if isinstance(outcome, Blocked) else max(self.jitter_s(attempt), outcome.after_s or 0.0)
        if self.max_age_s is not None:
            delay = min(delay, max(0.0, self.max_age_s - age_s))
        return delay

    def expired(self, age_s: float) -> bool:
        """Whether a request failing for `age_s` seconds is to be given up (only with max_retry_age_s)."""
        return self.max_age_s is not None and age_s >= self.max_age_s
