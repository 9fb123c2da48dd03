"""Durable connector state: extraction watermarks and progress, and the push ledger.

One SQLite file (``<data_dir>/state/crm_state.db``, WAL) so that a crash at any point leaves
a consistent picture:

* ``watermarks``: per stream (e.g. ``salesforce.Lead``), the highest modification stamp whose
  data is durably in the lake, plus the ids seen at exactly that stamp (the next window starts
  *at* the stamp and drops those ids, so same-millisecond changes are neither lost nor doubled).
* ``extract_pages``: pages of an extraction in progress, committed one by one; a crash resumes
  after the last committed page.
* ``extract_runs``: finished extractions per stream and run date (a rerun of the date returns
  the same partition instead of moving the window).
* ``pushed``: per CRM record, the values of its last successful push (the delta's baseline).
* ``push_inflight``: batches sent whose outcome is not yet recorded (what a rerun may re-send).
* ``push_outcomes``: every record's outcome per push run (pushed, rejected with reason, skipped).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prox.db import connect_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (
    stream TEXT PRIMARY KEY, stamp TEXT NOT NULL, boundary_ids TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS extract_pages (
    stream TEXT NOT NULL, run_key TEXT NOT NULL, page INTEGER NOT NULL, path TEXT NOT NULL,
    rows INTEGER NOT NULL, max_stamp TEXT, boundary_ids TEXT NOT NULL, resume TEXT NOT NULL,
    PRIMARY KEY (stream, run_key, page));
CREATE TABLE IF NOT EXISTS extract_runs (
    stream TEXT NOT NULL, run_key TEXT NOT NULL, stamp_from TEXT, stamp_to TEXT, rows INTEGER NOT NULL,
    finished_at TEXT NOT NULL, PRIMARY KEY (stream, run_key));
CREATE TABLE IF NOT EXISTS pushed (
    crm TEXT NOT NULL, lead_id TEXT NOT NULL, score INTEGER NOT NULL, tier TEXT NOT NULL,
    probability REAL NOT NULL, model_version TEXT NOT NULL, scored_at TEXT NOT NULL, pushed_at TEXT NOT NULL,
    reasons TEXT, PRIMARY KEY (crm, lead_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS push_inflight (
    crm TEXT NOT NULL, batch TEXT NOT NULL, run_id TEXT NOT NULL, lead_ids TEXT NOT NULL, started_at TEXT NOT NULL,
    PRIMARY KEY (crm, batch));
CREATE TABLE IF NOT EXISTS push_outcomes (
    run_id TEXT NOT NULL, crm TEXT NOT NULL, lead_id TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT,
    attempts INTEGER NOT NULL, at TEXT NOT NULL, PRIMARY KEY (run_id, crm, lead_id)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Watermark:
    stamp: str
    boundary_ids: frozenset[str]


@dataclass(frozen=True)
class CommittedPage:
    page: int
    path: Path
    rows: int
    max_stamp: str | None
    boundary_ids: frozenset[str]
    resume: dict[str, Any]


@dataclass(frozen=True)
class PushedValues:
    score: int
    tier: str
    probability: float
    model_version: str
    scored_at: str
    reasons: str | None = None  # the reasons text the CRM shows (None in ledgers from before it was kept)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class ConnectorState:
    """Access to the connector state file (thread-safe; one connection per instance)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = connect_sqlite(path, synchronous="FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(pushed)")}
        if "reasons" not in columns:  # a ledger written before the reasons were kept
            self._db.execute("ALTER TABLE pushed ADD COLUMN reasons TEXT")

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> ConnectorState:
        return cls(data_dir / "state" / "crm_state.db")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- watermarks -----------------------------------------------------------------------
    def watermark(self, stream: str) -> Watermark | None:
        with self._lock:
            row = self._db.execute(
                "SELECT stamp, boundary_ids FROM watermarks WHERE stream=?", (stream,)
            ).fetchone()
        return None if row is None else Watermark(row[0], frozenset(json.loads(row[1])))

    def reset_watermark(self, stream: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM watermarks WHERE stream=?", (stream,))

    # ---- extraction progress --------------------------------------------------------------
    def committed_pages(self, stream: str, run_key: str) -> list[CommittedPage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT page, path, rows, max_stamp, boundary_ids, resume FROM extract_pages "
                "WHERE stream=? AND run_key=? ORDER BY page",
                (stream, run_key),
            ).fetchall()
        return [
            CommittedPage(p, Path(path), n, stamp, frozenset(json.loads(b)), json.loads(r))
            for p, path, n, stamp, b, r in rows
        ]

    def commit_page(self, stream: str, run_key: str, page: CommittedPage) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO extract_pages (stream, run_key, page, path, rows, max_stamp, boundary_ids, resume) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    stream,
                    run_key,
                    page.page,
                    str(page.path),
                    page.rows,
                    page.max_stamp,
                    json.dumps(sorted(page.boundary_ids)),
                    json.dumps(page.resume),
                ),
            )

    def finished_run(self, stream: str, run_key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT stamp_from, stamp_to, rows, finished_at FROM extract_runs "
                "WHERE stream=? AND run_key=?",
                (stream, run_key),
            ).fetchone()
        return (
            None
            if row is None
            else dict(zip(("stamp_from", "stamp_to", "rows", "finished_at"), row, strict=True))
        )

    def finish_run(
        self, stream: str, run_key: str, *, stamp_from: str | None, new_mark: Watermark | None, rows: int
    ) -> None:
        """Advance the watermark and forget the run's pages, atomically (data already durable)."""
        with self.tx() as db:
            if new_mark is not None:
                db.execute(
                    "INSERT OR REPLACE INTO watermarks (stream, stamp, boundary_ids, updated_at) VALUES (?,?,?,?)",
                    (stream, new_mark.stamp, json.dumps(sorted(new_mark.boundary_ids)), _now()),
                )
            db.execute(
                "INSERT OR REPLACE INTO extract_runs (stream, run_key, stamp_from, stamp_to, rows, finished_at) "
                "VALUES (?,?,?,?,?,?)",
                (stream, run_key, stamp_from, new_mark.stamp if new_mark else stamp_from, rows, _now()),
            )
            db.execute("DELETE FROM extract_pages WHERE stream=? AND run_key=?", (stream, run_key))

    def forget_run(self, stream: str, run_key: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM extract_runs WHERE stream=? AND run_key=?", (stream, run_key))
            db.execute("DELETE FROM extract_pages WHERE stream=? AND run_key=?", (stream, run_key))

    # ---- push ledger ------------------------------------------------------------------------
    def pushed_values(self, crm: str, lead_ids: Sequence[str] | None = None) -> dict[str, PushedValues]:
        """The values last pushed to ``crm``: of all its leads, or of ``lead_ids`` (primary-key
        lookups, so a bucket of the nightly job does not read the whole ledger)."""
        select = "SELECT lead_id, score, tier, probability, model_version, scored_at, reasons FROM pushed WHERE crm=?"
        with self._lock:
            if lead_ids is None:
                rows = self._db.execute(select, (crm,)).fetchall()
            else:
                ids = list(lead_ids)
                rows = []
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(f"{select} AND lead_id IN ({marks})", (crm, *chunk)).fetchall()
        return {r[0]: PushedValues(*r[1:]) for r in rows}

    def inflight(self, crm: str) -> dict[str, list[str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT batch, lead_ids FROM push_inflight WHERE crm=?", (crm,)
            ).fetchall()
        return {b: json.loads(ids) for b, ids in rows}

    def begin_batch(self, crm: str, batch: str, run_id: str, lead_ids: Sequence[str]) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO push_inflight (crm, batch, run_id, lead_ids, started_at) VALUES (?,?,?,?,?)",
                (crm, batch, run_id, json.dumps(list(lead_ids)), _now()),
            )

    def finish_batch(
        self,
        crm: str,
        batch: str,
        run_id: str,
        outcomes: Iterable[tuple[str, str, str | None, int]],
        pushed: Iterable[tuple[str, PushedValues]],
    ) -> None:
        """Record outcomes (lead_id, outcome, reason, attempts) and successes, and close the batch."""
        at = _now()
        with self.tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO push_outcomes (run_id, crm, lead_id, outcome, reason, attempts, at) "
                "VALUES (?,?,?,?,?,?,?)",
                [(run_id, crm, lid, o, r, a, at) for lid, o, r, a in outcomes],
            )
            db.executemany(
                "INSERT OR REPLACE INTO pushed (crm, lead_id, score, tier, probability, model_version, scored_at, "
                "pushed_at, reasons) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (crm, lid, v.score, v.tier, v.probability, v.model_version, v.scored_at, at, v.reasons)
                    for lid, v in pushed
                ],
            )
            db.execute("DELETE FROM push_inflight WHERE crm=? AND batch=?", (crm, batch))

    def clear_inflight(self, crm: str, batches: Iterable[str]) -> None:
        with self.tx() as db:
            db.executemany("DELETE FROM push_inflight WHERE crm=? AND batch=?", [(crm, b) for b in batches])

    def record_outcomes(
        self, crm: str, run_id: str, outcomes: Iterable[tuple[str, str, str | None, int]]
    ) -> None:
        at = _now()
        with self.tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO push_outcomes (run_id, crm, lead_id, outcome, reason, attempts, at) "
                "VALUES (?,?,?,?,?,?,?)",
                [(run_id, crm, lid, o, r, a, at) for lid, o, r, a in outcomes],
            )

    def outcomes(self, run_id: str, crm: str) -> dict[str, tuple[str, str | None]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT lead_id, outcome, reason FROM push_outcomes WHERE run_id=? AND crm=?", (run_id, crm)
            ).fetchall()
        return {lid: (o, r) for lid, o, r in rows}
