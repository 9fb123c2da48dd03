"""The online state in Redis (``PROX_ONLINE_STATE=redis``): the SQLite store's contract, shared by replicas.

Durability: an event is acknowledged after Redis answers its write, so "acknowledged, never
lost" needs the server to fsync its append-only file before answering: ``appendonly yes``
and ``appendfsync always`` (with ``everysec``, Redis' default when AOF is on, a crash of the
machine can lose up to a second of acknowledged events; without AOF, everything since the
last snapshot). The store checks this at start and refuses a server that says otherwise
(``CONFIG GET``; where a managed Redis hides CONFIG it logs a warning and trusts the operator).

Atomicity: one ingest call (leads, events, status changes) is one Lua script, so it applies
whole or not at all, and the event_id dedupe is ``HSETNX`` inside it: a webhook retried by
the CRM, even concurrently from two replicas, counts once.

Keys (``<prefix>`` defaults to ``prox:``; one logical database per deployment)::

    <prefix>lead:<lead_id>     hash: fields (JSON LEADS row), account, last_tier, last_score
    <prefix>acct:<account>     set of lead_ids (account peers)
    <prefix>evd                hash: event_id -> JSON event (the dedupe index and the bodies)
    <prefix>ev:<lead_id>       sorted set: event_ids by occurred_at (microseconds)
    <prefix>st:<lead_id>       sorted set: JSON [source, changed_at_us, status] by changed_at
    <prefix>outbox             hash: lead_id -> JSON push payload
    <prefix>outbox:meta        hash: lead_id -> JSON {attempts, last_error}
    <prefix>outbox:due         sorted set: lead_id by next attempt time
    <prefix>rejected           list of JSON {lead_id, reason, attempts, at}

Sorted-set scores are doubles: microsecond timestamps stay exact (below 2**53) until 2255.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS, UTC_TS
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

log = logging.getLogger(__name__)

# ARGV: prefix, n_leads, (lead_id, account, fields)*, n_events, (event_id, lead_id, t_us, json)*,
#       n_status, (lead_id, t_us, member)*.  Returns {new events, lead ids touched ...}.
_INGEST = """
local p = ARGV[1]
local i = 2
local touched = {}
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local lid, acct, fields = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  local key = p .. 'lead:' .. lid
  local old = redis.call('HGET', key, 'account')
  if old and old ~= '' and old ~= acct then redis.call('SREM', p .. 'acct:' .. old, lid) end
  redis.call('HSET', key, 'fields', fields, 'account', acct)
  if acct ~= '' then redis.call('SADD', p .. 'acct:' .. acct, lid) end
  touched[lid] = true
end
local new = 0
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local eid, lid, t, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]; i = i + 4
  if redis.call('HSETNX', p .. 'evd', eid, body) == 1 then
    redis.call('ZADD', p .. 'ev:' .. lid, t, eid)
    new = new + 1
    touched[lid] = true
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local lid, t, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  redis.call('ZADD', p .. 'st:' .. lid, t, member)
  touched[lid] = true
end
local out = {new}
for lid, _ in pairs(touched) do out[#out + 1] = lid end
return out
"""

# KEYS: outbox, outbox:meta, outbox:due; ARGV: lead_id, payload. Delete only the payload sent.
_DONE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1]); redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
return 0
"""

# KEYS: outbox, outbox:meta, outbox:due, rejected; ARGV: lead_id, payload, record JSON.
_REJECTED = """
redis.call('RPUSH', KEYS[4], ARGV[3])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1]); redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
"""


class RedisState:
    """The :class:`serve.store.OnlineStore` contract on one Redis server (thread-safe client)."""

    def __init__(self, url: str, *, prefix: str = "prox:", check_durability: bool = True) -> None:
        import redis

        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.p = prefix
        self.r.ping()
        if check_durability:
            self._check_durability()
        self._ingest = self.r.register_script(_INGEST)
        self._done = self.r.register_script(_DONE)
        self._rejected = self.r.register_script(_REJECTED)

    def _check_durability(self) -> None:
        import redis

        try:
            config = {**self.r.config_get("appendonly"), **self.r.config_get("appendfsync")}
        except redis.ResponseError:
            log.warning("cannot read the Redis configuration; assuming appendonly yes, appendfsync always")
            return
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            raise RuntimeError(
                "the Redis online state needs appendonly yes and appendfsync always, or acknowledged "
                f"events can be lost in a crash (server has appendonly {config.get('appendonly')}, "
                f"appendfsync {config.get('appendfsync')})"
            )

    def close(self) -> None:
        self.r.close()

    # ---- writes ----------------------------------------------------------------------------
    def ingest(
        self,
        leads: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
        status: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[int, int, set[str]]:
        """Upsert leads, add new events and status changes atomically; (new, duplicates, touched)."""
        args: list[Any] = [self.p, len(leads)]
        for lead in leads:
            fields = json.dumps({k: jsonable(lead.get(k)) for k in LEADS.names})
            args += [lead["lead_id"], account_key(lead.get("company_domain")) or "", fields]
        args.append(len(events))
        for e in events:
            t = to_us(e["occurred_at"])
            body = json.dumps(
                [
                    e["event_id"],
                    e["lead_id"],
                    e["source"],
                    t,
                    e["channel"],
                    e["action"],
                    e.get("detail"),
                    e.get("value"),
                ]
            )
            args += [e["event_id"], e["lead_id"], t, body]
        args.append(len(status))
        for s in status:
            t = to_us(s["changed_at"])
            args += [s["lead_id"], t, json.dumps([s["source"], t, s["status"]])]
        out = self._ingest(args=args)
        new = int(out[0])
        return new, len(events) - new, set(out[1:])

    def ingest_many(self, batches: Sequence[IngestBatch]) -> list[tuple[int, int, set[str]] | Exception]:
        """Each batch through :meth:`ingest` (one atomic script each; appendfsync always
        makes each durable, and Redis groups their fsyncs itself)."""
        from redis.exceptions import ConnectionError as Unreachable
        from redis.exceptions import TimeoutError as TimedOut

        out: list[tuple[int, int, set[str]] | Exception] = []
        for leads, events, status in batches:
            try:
                out.append(self.ingest(leads, events, status))
            except (Unreachable, TimedOut):
                raise  # a lost server fails every batch
            except Exception as exc:  # this batch only: its data (the script is atomic)
                out.append(exc)
        return out

    def record_score(
        self, lead_id: str, tier: str, score: int, push_payload: Mapping[str, Any] | None
    ) -> None:
        """Remember the lead's last tier and queue its CRM push, in one transaction."""
        self.record_scores([(lead_id, tier, score, push_payload)])

    def record_scores(self, rows: Sequence[ScoreRecord]) -> None:
        """:meth:`record_score` of many leads in one MULTI/EXEC (all or none)."""
        pipe = self.r.pipeline(transaction=True)
        for lead_id, tier, score, push_payload in rows:
            pipe.hset(self.p + "lead:" + lead_id, mapping={"last_tier": tier, "last_score": score})
            if push_payload is not None:
                pipe.hset(self.p + "outbox", lead_id, json.dumps(push_payload))
                pipe.hset(self.p + "outbox:meta", lead_id, json.dumps({"attempts": 0, "last_error": None}))
                pipe.zadd(self.p + "outbox:due", {lead_id: time.time()})
        pipe.execute()

    # ---- reads -----------------------------------------------------------------------------
    def lead(self, lead_id: str) -> tuple[dict[str, Any], str | None] | None:
        fields, tier = self.r.hmget(self.p + "lead:" + lead_id, ["fields", "last_tier"])
        if fields is None:
            return None
        return lead_from_json(fields), tier

    def peers(self, lead_id: str, account: str | None) -> list[dict[str, Any]]:
        if not account:
            return []
        ids = sorted(i for i in self.r.smembers(self.p + "acct:" + account) if i != lead_id)
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(self.p + "lead:" + i, "fields")
        return [lead_from_json(f) for f in pipe.execute() if f is not None]

    def _event_ids(self, lead_ids: list[str]) -> list[str]:
        pipe = self.r.pipeline(transaction=False)
        for lid in lead_ids:
            pipe.zrange(self.p + "ev:" + lid, 0, -1)
        return [e for ids in pipe.execute() for e in ids]

    def events(self, lead_ids: Iterable[str]) -> pa.Table:
        """The stored events of ``lead_ids`` as an ACTIVITIES table."""
        ids = self._event_ids(list(lead_ids))
        bodies = [json.loads(b) for b in self.r.hmget(self.p + "evd", ids)] if ids else []
        bodies = [b for b in bodies if b is not None]
        cols = list(zip(*bodies, strict=True)) if bodies else [[] for _ in EVENT_COLS]
        arrays = [
            pa.array(list(col), pa.int64()).cast(UTC_TS)
            if name == "occurred_at"
            else pa.array(list(col), ACTIVITIES.field(name).type)
            for name, col in zip(EVENT_COLS, cols, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=ACTIVITIES)

    def status_history(self, lead_id: str) -> pa.Table:
        rows = [json.loads(m) for m in self.r.zrange(self.p + "st:" + lead_id, 0, -1)]
        if not rows:
            return LEAD_STATUS_HISTORY.empty_table()
        src, at, st = (list(c) for c in zip(*rows, strict=True))
        return pa.Table.from_arrays(
            [
                pa.array([lead_id] * len(rows)),
                pa.array(src),
                pa.array(at, pa.int64()).cast(UTC_TS),
                pa.array(st),
            ],
            schema=LEAD_STATUS_HISTORY,
        )

    def count_events(self, lead_id: str | None = None) -> int:
        if lead_id is None:
            return int(self.r.hlen(self.p + "evd"))
        return int(self.r.zcard(self.p + "ev:" + lead_id))

    def prune(self, now: float | None = None, retention_us: int = RETENTION_US) -> int:
        """Delete the events no feature can see any more (:func:`serve.store.prunable`)."""
        now_us = int((time.time() if now is None else now) * 1_000_000)
        cutoff = now_us - retention_us
        gone = 0
        for key in self.r.scan_iter(match=self.p + "ev:*", count=500):
            if not self.r.zrangebyscore(key, "-inf", f"({cutoff}", start=0, num=1):
                continue  # nothing old enough for this lead
            lead_id = key[len(self.p) + 3 :]
            ids = self.r.zrange(key, 0, -1)
            bodies = [json.loads(b) for b in self.r.hmget(self.p + "evd", ids)]
            rows = [(b[0], lead_id, b[3], b[4]) for b in bodies if b is not None]
            drop = prunable(rows, now_us, retention_us)
            if drop:
                pipe = self.r.pipeline(transaction=True)
                pipe.zrem(key, *drop)
                pipe.hdel(self.p + "evd", *drop)
                pipe.execute()
                gone += len(drop)
        return gone

    # ---- outbox ----------------------------------------------------------------------------
    def due_pushes(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any], int]]:
        ids = self.r.zrangebyscore(self.p + "outbox:due", "-inf", now, start=0, num=limit)
        if not ids:
            return []
        payloads = self.r.hmget(self.p + "outbox", ids)
        metas = self.r.hmget(self.p + "outbox:meta", ids)
        return [
            (lid, json.loads(p), int(json.loads(m or "{}").get("attempts", 0)))
            for lid, p, m in zip(ids, payloads, metas, strict=True)
            if p is not None
        ]

    def push_done(self, lead_id: str, payload: Mapping[str, Any]) -> None:
        self._done(keys=self._outbox_keys(), args=[lead_id, json.dumps(payload)])

    def push_failed(self, lead_id: str, attempts: int, next_at: float, error: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.p + "outbox:meta", lead_id, json.dumps({"attempts": attempts, "last_error": error[:500]})
        )
        pipe.zadd(self.p + "outbox:due", {lead_id: next_at}, xx=True)
        pipe.execute()

    def push_rejected(self, lead_id: str, payload: Mapping[str, Any], attempts: int, reason: str) -> None:
        record = json.dumps(
            {"lead_id": lead_id, "reason": reason[:500], "attempts": attempts, "at": time.time()}
        )
        self._rejected(
            keys=[*self._outbox_keys(), self.p + "rejected"], args=[lead_id, json.dumps(payload), record]
        )

    def rejected_pushes(self) -> list[tuple[str, str]]:
        return [
            (r["lead_id"], r["reason"]) for r in map(json.loads, self.r.lrange(self.p + "rejected", 0, -1))
        ]

    def outbox_size(self) -> int:
        return int(self.r.hlen(self.p + "outbox"))

    def _outbox_keys(self) -> list[str]:
        return [self.p + "outbox", self.p + "outbox:meta", self.p + "outbox:due"]
