"""Limits and faults the sandbox imposes, so connector code meets what real CRMs do.

Everything is configurable (``prox sandbox up --faults ...`` or the admin endpoint
``PUT /__sandbox/faults``) and deterministic for a seed. Kinds:

- **rate limits**: HubSpot's rolling 10-second window per app (100 Free/Starter, 190
  Pro/Enterprise) and the search endpoints' 5 requests a second, answered 429 with
  ``Retry-After``; Salesforce's daily request allocation
  answered 403 ``REQUEST_LIMIT_EXCEEDED`` and reported in ``Sforce-Limit-Info``.
- **5xx**: a fraction of API requests fail before doing anything (503 by default).
- **slow responses**: a fraction of answers is delayed.
- **dropped connections**: a fraction of requests is applied and then the connection is cut
  before the answer arrives (the case that makes exactly-once hard).
- **partial batch failures**: a fraction of records in batch writes fails with the CRM's
  transient per-record error (Salesforce ``UNABLE_TO_LOCK_ROW``; HubSpot a 207 error entry).
- **CRM exports**: HubSpot's exports per rolling 24 h, how many status polls an export stays
  in progress, and whether it completes or is canceled.
- **expired tokens**: access tokens expire after N API calls (401, then the client refreshes).
- **a held write**: the Nth write request is applied and its answer held, so a test can kill
  the client mid-push at a known point.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class FaultConfig:
    """The sandbox's limits and fault rates; defaults are the real APIs' limits, no faults."""

    seed: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    slow_rate: float = 0.0
    slow_seconds: float = 0.2
    drop_rate: float = 0.0
    partial_failure_rate: float = 0.0
    hubspot_rate_limit: int | None = 100  # requests per rolling window; None = no limit
    hubspot_window_seconds: float = 10.0
    hubspot_search_per_second: int | None = 5  # the search endpoints' own limit
    hubspot_exports_per_day: int = 30  # CRM exports API: exports started per rolling 24 h
    hubspot_export_polls: int = 0  # status polls an export stays in progress (0: done at the first)
    hubspot_export_outcome: str = "COMPLETE"  # how exports end: COMPLETE or CANCELED
    salesforce_daily_limit: int = 100_000
    token_ttl_requests: int | None = None
    hang_on_write: int | None = None
    hang_seconds: float = 120.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fault setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        config = cls(**data)
        for name in ("error_rate", "slow_rate", "drop_rate", "partial_failure_rate"):
            value = getattr(config, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"fault setting {name} must be within [0, 1], got {value!r}")
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Decision:
    """What to do with one request."""

    fail_status: int | None = None
    delay: float = 0.0
    drop_after: bool = False
    hold: float = 0.0


class Faults:
    """Per-process fault state: RNG, rolling windows and counters (thread-safe)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._windows: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
            self._writes = 0
            self.counters: collections.Counter[str] = collections.Counter()

    # ---- limits -----------------------------------------------------------------------
    def hubspot_admit(
        self, app: str, now: float | None = None, *, search: bool = False
    ) -> tuple[bool, int, int]:
        """Record one call in ``app``'s rolling windows: (admitted, remaining, retry_after_s).

        Every call counts against the 10-second window; search calls also against the
        search endpoints' per-second limit.
        """
        now = time.monotonic() if now is None else now
        c = self.config
        if search and c.hubspot_search_per_second is not None:
            ok, _, retry_after = self._admit(
                f"{app}:search", c.hubspot_search_per_second, 1.0, now, record=False
            )
            if not ok:
                return False, 0, retry_after
        if c.hubspot_rate_limit is None:
            if search and c.hubspot_search_per_second is not None:
                self._admit(f"{app}:search", c.hubspot_search_per_second, 1.0, now)
            return True, 1_000_000, 0
        admitted = self._admit(app, c.hubspot_rate_limit, c.hubspot_window_seconds, now)
        if admitted[0] and search and c.hubspot_search_per_second is not None:
            self._admit(f"{app}:search", c.hubspot_search_per_second, 1.0, now)
        return admitted

    def _admit(
        self, key: str, limit: int, window: float, now: float, *, record: bool = True
    ) -> tuple[bool, int, int]:
        with self._lock:
            calls = self._windows[key]
            while calls and calls[0] <= now - window:
                calls.popleft()
            if len(calls) >= limit:
                self.counters["rate_limited"] += 1
                return False, 0, max(1, math.ceil(calls[0] + window - now))
            if record:
                calls.append(now)
            return True, limit - len(calls), 0

    # ---- faults -----------------------------------------------------------------------
    def decide(self, *, is_write: bool) -> Decision:
        """Draw this request's fate (deterministic sequence for a seed)."""
        c = self.config
        with self._lock:
            decision = Decision()
            if is_write:
                self._writes += 1
                if c.hang_on_write is not None and self._writes == c.hang_on_write:
                    decision.hold = c.hang_seconds
                    self.counters["held"] += 1
                    return decision
            if c.error_rate and self._rng.random() < c.error_rate:
                decision.fail_status = c.error_status
                self.counters["5xx"] += 1
                return decision
            if c.slow_rate and self._rng.random() < c.slow_rate:
                decision.delay = c.slow_seconds
                self.counters["slow"] += 1
            if c.drop_rate and self._rng.random() < c.drop_rate:
                decision.drop_after = True
                self.counters["dropped"] += 1
            return decision

    def record_fails(self, n: int) -> list[bool]:
        """Which of ``n`` records in a batch write fail transiently this time."""
        rate = self.config.partial_failure_rate
        if not rate:
            return [False] * n
        with self._lock:
            flags = [self._rng.random() < rate for _ in range(n)]
        self.counters["record_failures"] += sum(flags)
        return flags


def dropped_response() -> Any:
    """An ASGI response that promises more bytes than it sends, so the client sees the
    connection break mid-answer (requests: ChunkedEncodingError; urllib3: ProtocolError)."""
    from starlette.responses import Response

    class DroppedResponse(Response):
        def __init__(self) -> None:
            super().__init__(content=b"", status_code=200)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"4096"), (b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": False})

    return DroppedResponse()
