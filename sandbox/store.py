"""The sandbox's durable state: one SQLite file holding both emulated CRMs.

Records are JSON documents keyed by (system, object, id) with two indexed columns the APIs
page on: ``modstamp`` (Salesforce SystemModstamp / HubSpot lastmodifieddate, a fixed-width
ISO-8601 string so text order is time order) and ``k`` (HubSpot's numeric id, for ``after``
paging). Every write made through an API is also appended to ``writes``, so tests and
operators can see exactly which records a push touched and how many times.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prox.db import connect_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    system TEXT NOT NULL, object TEXT NOT NULL, id TEXT NOT NULL,
    k INTEGER, modstamp TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (system, object, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_modstamp ON records (system, object, modstamp, id);
CREATE INDEX IF NOT EXISTS records_k ON records (system, object, k);
CREATE TABLE IF NOT EXISTS assoc (
    system TEXT NOT NULL, from_object TEXT NOT NULL, from_id TEXT NOT NULL,
    to_object TEXT NOT NULL, to_id TEXT NOT NULL,
    PRIMARY KEY (system, from_object, from_id, to_object, to_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS properties (
    system TEXT NOT NULL, object TEXT NOT NULL, name TEXT NOT NULL, definition TEXT NOT NULL,
    PRIMARY KEY (system, object, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS property_groups (
    system TEXT NOT NULL, object TEXT NOT NULL, name TEXT NOT NULL, definition TEXT NOT NULL,
    PRIMARY KEY (system, object, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, data TEXT NOT NULL, payload BLOB);
CREATE TABLE IF NOT EXISTS usage (system TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (system, day));
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, system TEXT NOT NULL, object TEXT NOT NULL,
    id TEXT NOT NULL, at TEXT NOT NULL, request TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def iso_ms(ts: dt.datetime) -> str:
    """Fixed-width UTC ISO-8601 with milliseconds and 'Z' (what both CRMs return)."""
    ts = ts.astimezone(dt.UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> dt.datetime:
    """Parse the ISO-8601 forms the CRMs accept ('Z' or an offset; Salesforce '+0000')."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif len(value) > 5 and value[-5] in "+-" and value[-3] != ":":
        value = value[:-2] + ":" + value[-2:]
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


class Store:
    """Thread-safe access to the sandbox SQLite file (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = connect_sqlite(path, synchronous="NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- transactions -----------------------------------------------------------------
    def transaction(self) -> _Tx:
        return _Tx(self)

    # ---- records ----------------------------------------------------------------------
    def put_records(
        self, system: str, obj: str, rows: Iterable[tuple[str, int | None, str, dict[str, Any]]]
    ) -> int:
        """Insert or replace records given as (id, k, modstamp, data)."""
        payload = [
            (system, obj, rid, k, mod, json.dumps(data, separators=(",", ":"))) for rid, k, mod, data in rows
        ]
        with self._lock, self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO records (system, object, id, k, modstamp, data) VALUES (?,?,?,?,?,?)",
                payload,
            )
        return len(payload)

    def get_records(self, system: str, obj: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for rid, data in self._db.execute(
                    f"SELECT id, data FROM records WHERE system=? AND object=? AND id IN ({marks})",
                    [system, obj, *chunk],
                ):
                    found[rid] = json.loads(data)
        return found

    def scan(
        self,
        system: str,
        obj: str,
        *,
        since: str | None = None,
        since_inclusive: bool = False,
        until: str | None = None,
        until_inclusive: bool = False,
        after_k: int | None = None,
        after_stamp_id: tuple[str, str] | None = None,
        order: str = "modstamp",
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records of one object filtered on the indexed columns, in index order.

        ``after_stamp_id`` is a (modstamp, id) cursor: only records strictly after it in
        (modstamp, id) order, which is what lets a page be read with LIMIT.
        """
        sql = "SELECT data FROM records WHERE system=? AND object=?"
        params: list[Any] = [system, obj]
        if after_stamp_id is not None:
            sql += " AND (modstamp, id) > (?, ?)"  # a row value: an index range, not a scan
            params.extend([after_stamp_id[0], after_stamp_id[1]])
        if since is not None:
            sql += " AND modstamp >= ?" if since_inclusive else " AND modstamp > ?"
            params.append(since)
        if until is not None:
            sql += " AND modstamp <= ?" if until_inclusive else " AND modstamp < ?"
            params.append(until)
        if after_k is not None:
            sql += " AND k > ?"
            params.append(after_k)
        sql += (
            " ORDER BY modstamp, id"
            if order == "modstamp"
            else " ORDER BY k"
            if order == "k"
            else " ORDER BY id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        for (data,) in rows:
            yield json.loads(data)

    def count(self, system: str, obj: str) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM records WHERE system=? AND object=?", (system, obj)
            ).fetchone()[0]

    def max_k(self, system: str, obj: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(k) FROM records WHERE system=? AND object=?", (system, obj)
            ).fetchone()
        return int(row[0] or 0)

    def log_writes(self, system: str, obj: str, ids: Iterable[str], at: str, request: str) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO writes (system, object, id, at, request) VALUES (?,?,?,?,?)",
                [(system, obj, rid, at, request) for rid in ids],
            )

    def write_counts(self, system: str, obj: str) -> dict[str, int]:
        """How many times each record was written through the API (for re-send audits)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, COUNT(*) FROM writes WHERE system=? AND object=? GROUP BY id", (system, obj)
            ).fetchall()
        return dict(rows)

    def write_requests(self, system: str) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(DISTINCT request) FROM writes WHERE system=?", (system,)
            ).fetchone()[0]

    def clear_writes(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM writes")

    # ---- associations -----------------------------------------------------------------
    def put_assoc(self, system: str, rows: Iterable[tuple[str, str, str, str]]) -> None:
        with self._lock, self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO assoc (system, from_object, from_id, to_object, to_id) VALUES (?,?,?,?,?)",
                [(system, *r) for r in rows],
            )

    def assoc_of(
        self, system: str, from_object: str, ids: Sequence[str], to_object: str
    ) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for fid, tid in self._db.execute(
                    f"SELECT from_id, to_id FROM assoc WHERE system=? AND from_object=? AND to_object=? "
                    f"AND from_id IN ({marks}) ORDER BY from_id, to_id",
                    [system, from_object, to_object, *chunk],
                ):
                    out.setdefault(fid, []).append(tid)
        return out

    # ---- property definitions ---------------------------------------------------------
    def put_property(
        self, system: str, obj: str, name: str, definition: dict[str, Any], *, group: bool = False
    ) -> None:
        table = "property_groups" if group else "properties"
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} (system, object, name, definition) VALUES (?,?,?,?)",
                (system, obj, name, json.dumps(definition)),
            )

    def properties(self, system: str, obj: str, *, group: bool = False) -> dict[str, dict[str, Any]]:
        table = "property_groups" if group else "properties"
        with self._lock:
            rows = self._db.execute(
                f"SELECT name, definition FROM {table} WHERE system=? AND object=? ORDER BY name",
                (system, obj),
            ).fetchall()
        return {name: json.loads(d) for name, d in rows}

    # ---- bulk jobs --------------------------------------------------------------------
    def put_job(self, job_id: str, data: dict[str, Any], payload: bytes | None = None) -> None:
        with self._lock:
            if payload is None:
                self._db.execute(
                    "INSERT INTO jobs (id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET data=excluded.data",
                    (job_id, json.dumps(data)),
                )
            else:
                self._db.execute(
                    "INSERT INTO jobs (id, data, payload) VALUES (?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET data=excluded.data, payload=excluded.payload",
                    (job_id, json.dumps(data), payload),
                )

    def get_job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        with self._lock:
            row = self._db.execute("SELECT data, payload FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    # ---- usage and key/value ----------------------------------------------------------
    def add_usage(self, system: str, day: str, calls: int = 1) -> int:
        with self._lock:
            self._db.execute(
                "INSERT INTO usage (system, day, calls) VALUES (?,?,?) "
                "ON CONFLICT(system, day) DO UPDATE SET calls = calls + excluded.calls",
                (system, day, calls),
            )
            return self._db.execute(
                "SELECT calls FROM usage WHERE system=? AND day=?", (system, day)
            ).fetchone()[0]

    def usage(self, system: str, day: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT calls FROM usage WHERE system=? AND day=?", (system, day)
            ).fetchone()
        return int(row[0]) if row else 0

    def reset_usage(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM usage")

    def get_kv(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_kv(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def reset(self) -> None:
        """Forget every record, association, job, write and usage count (keeps config)."""
        with self._lock, self.transaction():
            for table in ("records", "assoc", "jobs", "usage", "writes", "properties", "property_groups"):
                self._db.execute(f"DELETE FROM {table}")


class _Tx:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> _Tx:
        self.store._lock.acquire()
        self.store._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()
