"""Background CRM pushes from the state's outbox, retried with capped exponential backoff.

A lead whose tier rises to A gets an outbox row in the same transaction that records its
tier; this worker (its own thread and SQLite connection) sends it through the CRM connectors
(:func:`plugins.crm.open_connectors`, the nightly push's code and exactly-once state) and
deletes the row after success. A failure to get an answer (5xx after the connector's own
retries, timeouts, no connection) waits 2, 4, ... up to 300 s and is retried until delivered,
also after a restart. A record the CRM refuses for good (deleted record, invalid value) is
taken off the outbox and recorded with the CRM's reason (:meth:`OnlineStore.rejected_pushes`);
the push ledger keeps its last delivered values, so the next nightly or micro-batch delta
sends the lead's score again once the CRM can take it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from serve.online import open_state
from serve.store import OnlineStore

log = logging.getLogger(__name__)


def scores_row(payload: Mapping[str, Any]) -> Any:
    """A one-row SCORES table from an outbox payload."""
    import pyarrow as pa

    from features.contract import SCORES, conform

    row = dict(payload)
    row["scored_at"] = dt.datetime.fromisoformat(row["scored_at"])
    return conform(pa.Table.from_pylist([row], schema=SCORES), SCORES)


class PushWorker:
    """Drains the outbox until stopped."""

    def __init__(
        self,
        state_path: Path,
        data_dir: Path,
        *,
        synchronous: str = "FULL",
        interval: float = 0.2,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        open_store: Callable[[], OnlineStore] | None = None,
        connector_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.state_path, self.data_dir, self.synchronous, self.interval = (
            state_path,
            data_dir,
            synchronous,
            interval,
        )
        self.base_delay, self.max_delay = base_delay, max_delay
        self.open_store = open_store or (
            lambda: open_state("sqlite", path=self.state_path, synchronous=self.synchronous)
        )
        self.rejected = 0
        self.connector_options = dict(connector_options or {})  # e.g. the connectors' RetryPolicy
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.pushed = 0
        self.failures = 0
        self._connectors: dict[str, Any] | None = None

    def connectors(self) -> dict[str, Any]:
        if self._connectors is None:
            from plugins.crm import open_connectors

            self._connectors = open_connectors(self.data_dir, **self.connector_options)
        return self._connectors

    def run(self) -> None:
        state = self.open_store()
        try:
            while not self.stop.is_set():
                self.drain(state, time.time())
                self.wake.wait(self.interval)
                self.wake.clear()
        finally:
            state.close()

    def drain(self, state: OnlineStore, now: float) -> int:
        """Send every push due at ``now`` once; how many were due."""
        due = state.due_pushes(now)
        for lead_id, payload, attempts in due:
            self._send(state, lead_id, payload, attempts, now)
        return len(due)

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: base, 2 x base, ... capped at max_delay."""
        return min(self.max_delay, self.base_delay * 2.0 ** (attempts - 1))

    def _send(
        self, state: OnlineStore, lead_id: str, payload: dict[str, Any], attempts: int, now: float
    ) -> None:
        crm = lead_id.split(":", 1)[0]
        try:
            conn = self.connectors().get(crm)
            if conn is None:
                raise RuntimeError(f"no credentials for CRM {crm!r}")
            report = conn.push(scores_row(payload), run_id=payload["run_id"])
            if report.stopped:  # the CRM's allocation is used up: nothing was sent
                raise RuntimeError(f"{crm} push stopped: {report.stopped}")
        except Exception as exc:
            self.failures += 1
            wait = self.backoff(attempts + 1)
            state.push_failed(lead_id, attempts + 1, now + wait, f"{type(exc).__name__}: {exc}")
            log.warning(
                "push of a tier-A score to %s failed (attempt %d, %s); retrying in %.0f s",
                crm,
                attempts + 1,
                type(exc).__name__,
                wait,
            )
            return
        if report.rejected:  # the CRM answered and refused the record: retrying cannot help
            reason = report.rejections.get(lead_id) or "rejected"
            state.push_rejected(lead_id, payload, attempts + 1, reason)
            self.rejected += 1
            log.warning("a tier-A score was refused by %s for good; recorded, not retried", crm)
            return
        state.push_done(lead_id, payload)
        self.pushed += 1
