"""Durable per-lead online state in SQLite (WAL): lead fields, recent events, status changes.

Why SQLite: embedded, no server, and a committed WAL transaction survives a crash of the
process (kill -9) -- an event is acknowledged to the webhook caller only after its commit.
``synchronous=FULL`` also survives a power cut at the price of an fsync per commit;
``PROX_SERVE_SYNC=NORMAL`` trades that for speed (still safe against a process crash).

Duplicates: ``event_id`` is the primary key and inserts are ``INSERT OR IGNORE``, so a
webhook retried by the CRM counts once. Leads are grouped by account (the same
normalised company domain as the batch builder's account features) to fetch peers.

The outbox holds CRM pushes waiting to be sent (tier rose to A), so a push queued before a
crash is sent after the restart; a push the CRM refuses for good leaves it, with the reason.

Pruning (:meth:`OnlineState.prune`) deletes the events no feature can see any more, so the
store does not grow without bound: see :func:`prunable`.

:class:`OnlineStore` is the interface the service uses; :func:`open_state` picks SQLite (the
default) or Redis (:mod:`serve.redis_store`) from ``PROX_ONLINE_STATE``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS, UTC_TS
from prox.db import connect_sqlite
from serve.store import (
    EVENT_COLS,
    RETENTION_US,
    IngestBatch,
    ScoreRecord,
    account_key,
    jsonable,
    lead_from_json,
    prunable,
    to_us,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    lead_id TEXT PRIMARY KEY, account TEXT, fields TEXT NOT NULL,
    last_tier TEXT, last_score INTEGER, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leads_account ON leads(account);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, lead_id TEXT NOT NULL, source TEXT NOT NULL, occurred_at INTEGER NOT NULL,
    channel TEXT NOT NULL, action TEXT NOT NULL, detail TEXT, value REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_lead ON events(lead_id, occurred_at);
CREATE TABLE IF NOT EXISTS status_history (
    lead_id TEXT NOT NULL, source TEXT NOT NULL, changed_at INTEGER NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (lead_id, changed_at, status)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    lead_id TEXT PRIMARY KEY, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, last_error TEXT);
CREATE TABLE IF NOT EXISTS push_rejections (
    lead_id TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL);
"""


class OnlineState:
    """One SQLite connection (use one instance per thread)."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError(f"PROX_SERVE_SYNC must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.db = connect_sqlite(self.path, synchronous=synchronous)
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # ---- writes (each call is one transaction, committed before it returns) ----------------
    def ingest(
        self,
        leads: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
        status: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[int, int, set[str]]:
        """Upsert leads, add new events and status changes; (new events, duplicates, lead ids touched)."""
        (result,) = self.ingest_many([(leads, events, status)])
        if isinstance(result, BaseException):
            raise result
        return result

    def ingest_many(self, batches: Sequence[IngestBatch]) -> list[tuple[int, int, set[str]] | Exception]:
        """:meth:`ingest` of each batch, in order, in ONE transaction (one commit, one fsync).

        Each batch is applied inside its own savepoint: a batch that fails is rolled back alone
        and gets its exception; the others are committed together. Nothing is acknowledged
        before that commit returns (group commit)."""
        now = time.time()
        out: list[tuple[int, int, set[str]] | Exception] = []
        with self.lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for leads, events, status in batches:
                    cur.execute("SAVEPOINT batch")
                    try:
                        out.append(self._apply(cur, leads, events, status, now))
                    except Exception as exc:  # this batch only: bad data, a constraint
                        cur.execute("ROLLBACK TO batch")
                        out.append(exc)
                    cur.execute("RELEASE batch")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return out

    @staticmethod
    def _apply(
        cur: sqlite3.Cursor,
        leads: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
        status: Sequence[Mapping[str, Any]],
        now: float,
    ) -> tuple[int, int, set[str]]:
        touched: set[str] = set()
        for lead in leads:
            fields = json.dumps({k: jsonable(lead.get(k)) for k in LEADS.names})
            cur.execute(
                "INSERT INTO leads(lead_id, account, fields, updated) VALUES (?,?,?,?) "
                "ON CONFLICT(lead_id) DO UPDATE SET account=excluded.account, fields=excluded.fields, "
                "updated=excluded.updated",
                (lead["lead_id"], account_key(lead.get("company_domain")), fields, now),
            )
            touched.add(lead["lead_id"])
        new = 0
        for e in events:
            cur.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?)",
                (
                    e["event_id"],
                    e["lead_id"],
                    e["source"],
                    to_us(e["occurred_at"]),
                    e["channel"],
                    e["action"],
                    e.get("detail"),
                    e.get("value"),
                ),
            )
            if cur.rowcount:
                new += 1
                touched.add(e["lead_id"])
        for st in status:
            cur.execute(
                "INSERT OR IGNORE INTO status_history VALUES (?,?,?,?)",
                (st["lead_id"], st["source"], to_us(st["changed_at"]), st["status"]),
            )
            touched.add(st["lead_id"])
        return new, len(events) - new, touched

    def record_score(
        self, lead_id: str, tier: str, score: int, push_payload: Mapping[str, Any] | None
    ) -> None:
        """Remember the lead's last tier; queue its CRM push in the same transaction."""
        self.record_scores([(lead_id, tier, score, push_payload)])

    def record_scores(self, rows: Sequence[ScoreRecord]) -> None:
        """:meth:`record_score` of many leads in one transaction (one commit)."""
        with self.lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for lead_id, tier, score, push_payload in rows:
                    cur.execute(
                        "UPDATE leads SET last_tier=?, last_score=? WHERE lead_id=?", (tier, score, lead_id)
                    )
                    if push_payload is not None:
                        cur.execute(
                            "INSERT OR REPLACE INTO outbox(lead_id, payload, attempts, next_at) "
                            "VALUES (?,?,0,?)",
                            (lead_id, json.dumps(push_payload), time.time()),
                        )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    # ---- reads -------------------------------------------------------------------------------
    def lead(self, lead_id: str) -> tuple[dict[str, Any], str | None] | None:
        """(LEADS row with datetimes, last tier) or None."""
        row = self.db.execute("SELECT fields, last_tier FROM leads WHERE lead_id=?", (lead_id,)).fetchone()
        if row is None:
            return None
        return lead_from_json(row[0]), row[1]

    def peers(self, lead_id: str, account: str | None) -> list[dict[str, Any]]:
        if not account:
            return []
        rows = self.db.execute("SELECT fields FROM leads WHERE account=? AND lead_id<>?", (account, lead_id))
        return [lead_from_json(r[0]) for r in rows]

    def events(self, lead_ids: Iterable[str]) -> pa.Table:
        """The stored events of ``lead_ids`` as an ACTIVITIES table."""
        ids = list(lead_ids)
        if not ids:
            return ACTIVITIES.empty_table()
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT {','.join(EVENT_COLS)} FROM events WHERE lead_id IN ({marks})", ids
        ).fetchall()
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in EVENT_COLS]
        data = {name: list(col) for name, col in zip(EVENT_COLS, cols, strict=True)}
        arrays = [
            pa.array(data[n], pa.int64()).cast(UTC_TS)
            if n == "occurred_at"
            else pa.array(data[n], ACTIVITIES.field(n).type)
            for n in EVENT_COLS
        ]
        return pa.Table.from_arrays(arrays, schema=ACTIVITIES)

    def status_history(self, lead_id: str) -> pa.Table:
        rows = self.db.execute(
            "SELECT lead_id, source, changed_at, status FROM status_history WHERE lead_id=?", (lead_id,)
        ).fetchall()
        if not rows:
            return LEAD_STATUS_HISTORY.empty_table()
        lid, src, at, st = (list(c) for c in zip(*rows, strict=True))
        return pa.Table.from_arrays(
            [pa.array(lid), pa.array(src), pa.array(at, pa.int64()).cast(UTC_TS), pa.array(st)],
            schema=LEAD_STATUS_HISTORY,
        )

    def count_events(self, lead_id: str | None = None) -> int:
        if lead_id is None:
            return self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM events WHERE lead_id=?", (lead_id,)).fetchone()[0]

    def prune(self, now: float | None = None, retention_us: int = RETENTION_US) -> int:
        """Delete the events no feature can see any more (:func:`prunable`); how many went."""
        now_us = int((time.time() if now is None else now) * 1_000_000)
        cutoff = now_us - retention_us
        leads = [
            r[0]
            for r in self.db.execute("SELECT DISTINCT lead_id FROM events WHERE occurred_at < ?", (cutoff,))
        ]
        gone = 0
        for start in range(0, len(leads), 500):  # a few hundred leads per transaction
            chunk = leads[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT event_id, lead_id, occurred_at, channel FROM events WHERE lead_id IN ({marks})",
                chunk,
            ).fetchall()
            drop = prunable(rows, now_us, retention_us)
            if drop:
                with self.lock:
                    cur = self.db.cursor()
                    cur.execute("BEGIN IMMEDIATE")
                    try:
                        cur.executemany("DELETE FROM events WHERE event_id=?", [(e,) for e in drop])
                        cur.execute("COMMIT")
                    except BaseException:
                        cur.execute("ROLLBACK")
                        raise
                gone += len(drop)
        return gone

    # ---- outbox --------------------------------------------------------------------------------
    def due_pushes(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any], int]]:
        rows = self.db.execute(
            "SELECT lead_id, payload, attempts FROM outbox WHERE next_at<=? ORDER BY next_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [(r[0], json.loads(r[1]), r[2]) for r in rows]

    def push_done(self, lead_id: str, payload: Mapping[str, Any]) -> None:
        with self.lock:
            self.db.execute(
                "DELETE FROM outbox WHERE lead_id=? AND payload=?", (lead_id, json.dumps(payload))
            )

    def push_failed(self, lead_id: str, attempts: int, next_at: float, error: str) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE outbox SET attempts=?, next_at=?, last_error=? WHERE lead_id=?",
                (attempts, next_at, error[:500], lead_id),
            )

    def push_rejected(self, lead_id: str, payload: Mapping[str, Any], attempts: int, reason: str) -> None:
        """The CRM refused this push for good: record why and take it off the outbox."""
        text = json.dumps(payload)
        with self.lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT INTO push_rejections(lead_id, payload, attempts, reason, at) VALUES (?,?,?,?,?)",
                    (lead_id, text, attempts, reason[:500], time.time()),
                )
                cur.execute("DELETE FROM outbox WHERE lead_id=? AND payload=?", (lead_id, text))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def rejected_pushes(self) -> list[tuple[str, str]]:
        """(lead_id, reason) of every push the CRM refused for good, oldest first."""
        return [
            (r[0], r[1]) for r in self.db.execute("SELECT lead_id, reason FROM push_rejections ORDER BY at")
        ]

    def outbox_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM outbox").fetchone()[0]
