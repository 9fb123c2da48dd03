"""The one way ProX opens an embedded SQLite file (push ledger, hot-path state, sandbox).

WAL so readers never block the writer and a committed transaction survives a crash of the
process; autocommit mode (``isolation_level=None``) so callers open their own transactions
(``BEGIN IMMEDIATE`` where a read decides a write); a busy timeout instead of "database is
locked" when several processes share the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def connect_sqlite(
    path: Path | str, *, synchronous: str = "FULL", busy_timeout_s: float = 30.0
) -> sqlite3.Connection:
    """A connection to ``path`` (its folder created) in WAL mode; usable from any thread (lock it)."""
    mode = synchronous.upper()
    if mode not in SYNC_MODES:
        raise ValueError(f"SQLite synchronous must be one of {', '.join(SYNC_MODES)}, got {synchronous!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={mode}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return db
