"""Retries with exponential backoff and full jitter, honouring the CRM's ``Retry-After``.

Callers classify each failure: retry (with an optional server-given delay), refresh the
credentials and retry, or give up. Every attempt is one API call, so the call counter here is
what push and extract reports quote.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

RETRY = "retry"
REFRESH = "refresh"
FAIL = "fail"


class RetriesExhausted(RuntimeError):
    """A call kept failing with retryable errors; ``last`` is the final error."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{what}: gave up after {attempts} attempts; last error: {last}")
        self.last = last


@dataclass
class RetryPolicy:
    """How hard to retry. ``sleep`` and ``rng`` are injectable for deterministic runs."""

    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    seed: int | None = None
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self.rng = random.Random(self.seed)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))


@dataclass
class CallStats:
    """API calls made and what happened to them."""

    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    refreshes: int = 0
    waited_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Classification = tuple[str, float | None]


def call_with_retry(
    fn: Callable[[], T],
    classify: Callable[[BaseException], Classification],
    policy: RetryPolicy,
    stats: CallStats,
    *,
    what: str,
    refresh: Callable[[], None] | None = None,
    count_calls: bool = True,
) -> T:
    """Run ``fn`` until it succeeds, a failure is final, or attempts run out.

    ``classify`` maps an exception to ``(RETRY, retry_after_seconds | None)``,
    ``(REFRESH, None)`` (expired credentials: ``refresh`` is called once per such failure) or
    ``(FAIL, None)``. Server-given delays are honoured exactly (capped at max_retry_after);
    otherwise the backoff is jittered.
    """
    attempt = 0
    while True:
        if count_calls:
            stats.calls += 1
        try:
            return fn()
        except Exception as exc:
            kind, delay = classify(exc)
            if kind == FAIL:
                raise
            attempt += 1
            if attempt >= policy.max_attempts:
                raise RetriesExhausted(what, attempt, exc) from exc
            stats.retries += 1
            if kind == REFRESH:
                if refresh is None:
                    raise
                stats.refreshes += 1
                refresh()
                continue
            wait = min(delay, policy.max_retry_after) if delay is not None else policy.backoff(attempt)
            stats.waited_seconds += wait
            policy.sleep(wait)
