"""Background CRM pushes from the state's outbox, retried with capped exponential backoff.

A lead whose tier rises to A gets an outbox row in the same transaction that records its
tier; this worker (its own thread and SQLite connection) sends it through the CRM connectors
(:func:`plugins.crm.open_connectors`, the nightly push's code and exactly-once state) and
deletes the row after success. Failures wait 2, 4, ... up to 300 s and are retried forever,
including after a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.serve.state import OnlineState

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
        self, state_path: Path, data_dir: Path, *, synchronous: str = "FULL", interval: float = 0.2
    ) -> None:
        self.state_path, self.data_dir, self.synchronous, self.interval = (
            state_path,
            data_dir,
            synchronous,
            interval,
        )
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.pushed = 0
        self.failures = 0
        self._connectors: dict[str, Any] | None = None

    def connectors(self) -> dict[str, Any]:
        if self._connectors is None:
            from plugins.crm import open_connectors

            self._connectors = open_connectors(self.data_dir)
        return self._connectors

    def run(self) -> None:
        state = OnlineState(self.state_path, synchronous=self.synchronous)
        try:
            while not self.stop.is_set():
                for lead_id, payload, attempts in state.due_pushes(time.time()):
                    self._send(state, lead_id, payload, attempts)
                self.wake.wait(self.interval)
                self.wake.clear()
        finally:
            state.close()

    def _send(self, state: OnlineState, lead_id: str, payload: dict[str, Any], attempts: int) -> None:
        crm = lead_id.split(":", 1)[0]
        try:
            conn = self.connectors().get(crm)
            if conn is None:
                raise RuntimeError(f"no credentials for CRM {crm!r}")
            report = conn.push(scores_row(payload), run_id=payload["run_id"])
            rejected = getattr(report, "rejected", None)
            if rejected:
                raise RuntimeError(f"{crm} rejected the record: {rejected}")
        except Exception as exc:
            self.failures += 1
            wait = min(300.0, 2.0 ** (attempts + 1))
            state.push_failed(lead_id, attempts + 1, time.time() + wait, f"{type(exc).__name__}: {exc}")
            log.warning(
                "push of a tier-A score to %s failed (attempt %d, %s); retrying in %.0f s",
                crm,
                attempts + 1,
                type(exc).__name__,
                wait,
            )
            return
        state.push_done(lead_id, payload)
        self.pushed += 1
