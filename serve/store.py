"""The hot path's online store: the protocol the service uses and helpers both stores share.

:class:`OnlineStore` is implemented by :class:`serve.sqlite_store.OnlineState` (embedded, WAL,
the default) and :class:`serve.redis_store.RedisState`; :func:`serve.online.open_state` picks one
from the settings. Neither implementation imports the other.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import pyarrow as pa

from features.contract import LEADS

TS_FIELDS = tuple(f.name for f in LEADS if pa.types.is_timestamp(f.type))
EVENT_COLS = ("event_id", "lead_id", "source", "occurred_at", "channel", "action", "detail", "value")


def to_us(value: Any) -> int:
    """Microseconds since the epoch of an aware datetime (or an int already in us)."""
    if isinstance(value, int):
        return value
    return int(value.timestamp()) * 1_000_000 + value.microsecond


def account_key(company_domain: str | None) -> str | None:
    """The account a lead belongs to, computed by the batch builder's own functions."""
    if not company_domain:
        return None
    from features.parse import account_domain, normalise_domain

    return account_domain(normalise_domain(pa.array([company_domain], pa.string())))[0].as_py()


#: Events older than this (before the prune time) are dropped unless a feature still sees them:
#: the longest look-back of any feature (the decayed engagement's 365 days; the counts use 7-90).
RETENTION_US = 365 * 86_400 * 1_000_000


def prunable(
    events: Iterable[tuple[str, str, int, str]], now_us: int, retention_us: int = RETENTION_US
) -> list[str]:
    """The event_ids of (event_id, lead_id, occurred_at_us, channel) rows no feature at or after
    ``now_us`` can see.

    Kept: every event of the last ``retention_us``, and per lead and channel its newest and its
    oldest event (``days_since_last_<channel>``, ``days_since_last_event`` and
    ``days_to_first_engagement`` look back without limit). Channels are compared as stored, a
    superset of what the feature code normalises them to, so pruning only ever keeps more.
    """
    cutoff = now_us - retention_us
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    oldest: dict[tuple[str, str], tuple[int, str]] = {}
    old: list[str] = []
    for event_id, lead_id, at, channel in events:
        key = (lead_id, channel)
        if at < now_us and (key not in newest or (at, event_id) > newest[key]):
            newest[key] = (at, event_id)
        if key not in oldest or (at, event_id) < oldest[key]:
            oldest[key] = (at, event_id)
        if at < cutoff:
            old.append(event_id)
    keep = {e for _, e in newest.values()} | {e for _, e in oldest.values()}
    return [e for e in old if e not in keep]


#: (leads, events, status changes) of one ingest call
IngestBatch = tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]
#: (lead_id, tier, score, CRM push payload or None) of one scored lead
ScoreRecord = tuple[str, str, int, Mapping[str, Any] | None]


class OnlineStore(Protocol):
    """What the service needs of its online state (SQLite :class:`OnlineState`, or Redis).

    Every write is durable when it returns: the service acknowledges an event after it.
    """

    def ingest(
        self,
        leads: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
        status: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[int, int, set[str]]: ...

    def record_score(
        self, lead_id: str, tier: str, score: int, push_payload: Mapping[str, Any] | None
    ) -> None: ...

    def ingest_many(self, batches: Sequence[IngestBatch]) -> list[tuple[int, int, set[str]] | Exception]:
        """Each batch's ingest, in order; durable when it returns (one commit where the store can)."""
        ...

    def record_scores(self, rows: Sequence[ScoreRecord]) -> None: ...

    def lead(self, lead_id: str) -> tuple[dict[str, Any], str | None] | None: ...

    def peers(self, lead_id: str, account: str | None) -> list[dict[str, Any]]: ...

    def events(self, lead_ids: Iterable[str]) -> pa.Table: ...

    def status_history(self, lead_id: str) -> pa.Table: ...

    def count_events(self, lead_id: str | None = None) -> int: ...

    def prune(self, now: float | None = None, retention_us: int = RETENTION_US) -> int: ...

    def due_pushes(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any], int]]: ...

    def push_done(self, lead_id: str, payload: Mapping[str, Any]) -> None: ...

    def push_failed(self, lead_id: str, attempts: int, next_at: float, error: str) -> None: ...

    def push_rejected(self, lead_id: str, payload: Mapping[str, Any], attempts: int, reason: str) -> None: ...

    def rejected_pushes(self) -> list[tuple[str, str]]: ...

    def outbox_size(self) -> int: ...

    def close(self) -> None: ...


def jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def lead_from_json(text: str) -> dict[str, Any]:
    row = json.loads(text)
    for name in TS_FIELDS:
        if row.get(name):
            row[name] = dt.datetime.fromisoformat(row[name])
    return row
