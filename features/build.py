"""The point-in-time feature builder: one row per lead known at T, from what was known at T.

The rule (ARCHITECTURE.md, point-in-time correctness): a row "as of T" uses events with
``occurred_at < T``, leads created before T, the status held at T (from the status history)
and never the converted flag, ``converted_at``, consent or any status set after T. Profile
fields (industry, title, ...) are taken as extracted: the CRMs keep no history of them.

One code path: :func:`encode_events` turns raw events into integer arrays and
:func:`compute_features` turns those into feature columns. The batch builder streams the
activity table through them for a million leads; :mod:`features.online` calls the same two
functions for one lead, so both paths give identical values. Sums of decayed weights are kept
on a 2^-24 grid, which makes them exact and independent of event order.

Cost is linear in events: strings are hashed from Arrow buffers (:mod:`features.hashing`),
aggregates are ``np.bincount`` over integer keys and one sort of packed 64-bit keys.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIONS, CHANNELS, CLOSED_STATUSES, STATUSES
from features.hashing import HashIndex, duplicate_rows, hash64, hash_strings
from features.parse import clean_key, fit_features
from features.quality import DataQualityReport
from features.spec import (
    DECAY_HALF_LIFE_DAYS,
    EVENT_KINDS,
    FEATURES,
    HIGH_INTENT_KINDS,
    INTENT_DETAILS,
    OTHER_ACTION_WEIGHT,
    WINDOWS,
)
from prox.settings import Settings

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
SECOND_US = 1_000_000
QUANTUM = float(1 << 24)  # decayed sums are exact multiples of 2**-24
_MAX_AGE_S = (1 << 32) - 1  # ages are packed in 32 bits (136 years)
EVENT_COLUMNS = ("event_id", "lead_id", "occurred_at", "channel", "action", "detail")
BATCH_ROWS = 1_000_000
DICTIONARY_COLUMNS = ("lead_id", "channel", "action", "detail")
WORKERS = 2
_PARALLEL_MIN_ROWS = 10_000  # below this, feature_columns runs the status history inline


class _Inline:
    """A stand-in for a one-thread pool that runs the job at once, in the caller's thread."""

    class _Done:
        def __init__(self, value: Any) -> None:
            self._value = value

        def result(self) -> Any:
            return self._value

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Inline._Done:
        return _Inline._Done(fn(*args))


_KIND_INDEX = {(c, a): i for i, (c, a, _) in enumerate(EVENT_KINDS)}
_KIND_WEIGHT = np.array([w for _, _, w in EVENT_KINDS], dtype=np.float64)
_INTENT_WEIGHT = np.array([w for *_, w, _ in INTENT_DETAILS], dtype=np.float64)
_INTENT_HIGH = np.array([high for *_, high in INTENT_DETAILS], dtype=bool)
_CHANNEL_ALIASES = {
    "e mail": "email",
    "mail": "email",
    "website": "web",
    "page": "web",
    "forms": "form",
    "meetings": "meeting",
    "calls": "call",
    "phone": "call",
    "ads": "ad",
    "advertising": "ad",
    "webinars": "webinar",
    "live chat": "chat",
}
_ACTION_ALIASES = {
    "opened": "open",
    "clicked": "click",
    "visited": "visit",
    "page view": "visit",
    "pageview": "visit",
    "submitted": "submit",
    "registered": "register",
    "attended": "attend",
    "replied": "reply",
    "bounced": "bounce",
    "unsubscribed": "unsubscribe",
    "complete": "completed",
    "book": "booked",
    "sent": "send",
    "impressions": "impression",
}
_STATUS_ALIASES = {
    "new": "open",
    "open not contacted": "open",
    "working contacted": "working",
    "in progress": "working",
    "attempted to contact": "working",
    "connected": "working",
    "closed converted": "converted",
    "closed not converted": "unqualified",
    "bad timing": "nurturing",
    "open deal": "qualified",
    "disqualified": "unqualified",
}
_HIGH_INTENT_KINDS = [_KIND_INDEX[k] for k in HIGH_INTENT_KINDS]
_INTENT_STEMS = tuple(stem for stem, *_ in INTENT_DETAILS)


class FeatureInputError(ValueError):
    """Input the builder cannot use at all (not dirt: a missing column, a naive as_of)."""


def to_us(as_of: dt.datetime) -> int:
    """Microseconds since the epoch of a timezone-aware time (naive times are refused)."""
    if as_of.tzinfo is None:
        raise FeatureInputError(f"as_of must be timezone-aware (UTC), got naive {as_of.isoformat()}")
    delta = as_of - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


# ---- encoding ------------------------------------------------------------------------------
@dataclass
class EncodedEvents:
    """Events as integer arrays, already restricted to ``occurred_at < as_of`` and known leads.

    ``eid_hash`` and ``eid_row`` locate each event's event_id (a hash, and its row in the
    concatenation of ``eid_arrays``) for exact deduplication.
    """

    lead: np.ndarray  # int32 position of the lead among the leads being featurised
    t: np.ndarray  # int64 microseconds since the epoch
    channel: np.ndarray  # int8 index into CHANNELS
    kind: np.ndarray  # int8 index into EVENT_KINDS, -1 for another action
    intent: np.ndarray  # int8 index into INTENT_DETAILS, -1 for none
    eid_hash: np.ndarray  # uint64
    eid_row: np.ndarray  # int64 row in the concatenated eid_arrays
    eid_arrays: list[pa.Array]

    _ROW_FIELDS = ("lead", "t", "channel", "kind", "intent", "eid_hash", "eid_row")

    @classmethod
    def empty(cls) -> EncodedEvents:
        z = np.zeros(0, np.int64)
        return cls(
            z.astype(np.int32),
            z,
            z.astype(np.int8),
            z.astype(np.int8),
            z.astype(np.int8),
            z.astype(np.uint64),
            z,
            [],
        )

    @classmethod
    def concat(cls, parts: list[EncodedEvents]) -> EncodedEvents:
        """One table of events from per-batch parts (event_id references are rebased).

        The parts are emptied field by field as they are copied, so the peak stays near one
        copy of the events."""
        if not parts:
            return cls.empty()
        arrays: list[pa.Array] = []
        base = 0
        for p in parts:
            p.eid_row = p.eid_row + base
            arrays.extend(p.eid_arrays)
            base += sum(len(a) for a in p.eid_arrays)
        cols: dict[str, np.ndarray] = {}
        for f in cls._ROW_FIELDS:
            cols[f] = np.concatenate([getattr(p, f) for p in parts])
            for p in parts:
                setattr(p, f, None)
        return cls(**cols, eid_arrays=arrays)

    def take(self, rows: np.ndarray) -> EncodedEvents:
        return EncodedEvents(*(getattr(self, f)[rows] for f in self._ROW_FIELDS), eid_arrays=self.eid_arrays)

    def event_ids(self, rows: np.ndarray) -> pa.Array:
        """The event_id strings of ``rows`` (for exact comparison of hash-equal events)."""
        if not self.eid_arrays:
            return pa.array([], pa.string())
        ids = pa.chunked_array(
            [a.cast(pa.string()) if pa.types.is_dictionary(a.type) else a for a in self.eid_arrays],
            type=pa.string(),
        )
        return ids.take(pa.array(self.eid_row[rows])).combine_chunks()


def _dictionary(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(distinct values, index of each row's value or -1 for null): every categorical column
    is decoded through its dictionary, so per-row work is integer work."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values)
    dictionary = values.dictionary
    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        dictionary = dictionary.cast(pa.string())
    return dictionary, values.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)


def _vocab_codes(
    dictionary: pa.Array,
    indices: np.ndarray,
    vocab: Sequence[str],
    aliases: dict[str, str],
    field_name: str,
    report: DataQualityReport,
) -> np.ndarray:
    """Index in ``vocab`` of each row (casing/spelling variants folded), -1 when unknown or null."""
    lookup = {v: i for i, v in enumerate(vocab)}
    codes = np.full(len(dictionary) + 1, -1, dtype=np.int8)  # last entry: null
    counts = np.bincount(indices[indices >= 0], minlength=len(dictionary))
    unknown: Counter[str] = Counter()
    for i, (value, n) in enumerate(zip(dictionary.to_pylist(), counts.tolist(), strict=True)):
        if n == 0:
            continue
        code = lookup.get(value) if value is not None else None
        if code is None and value is not None:
            key = clean_key(value)
            code = lookup.get(aliases.get(key, key))
            if code is not None:
                report.normalised[field_name] += n
        if code is None:
            unknown[str(value)] += n
        else:
            codes[i] = code
    if unknown:
        report.add_unknown(field_name, unknown)
    return codes[indices]


def _intent_table(dictionary: pa.Array) -> np.ndarray:
    """(len(dictionary)+1, len(CHANNELS)): intent index of each detail value per channel."""
    table = np.full((len(dictionary) + 1, len(CHANNELS)), -1, dtype=np.int8)
    for i, value in enumerate(dictionary.to_pylist()):
        if value is None:
            continue
        text = value.strip().lower()
        page = _HOST.sub("", text)
        for code, (_, channel, prefixes, _, _) in enumerate(INTENT_DETAILS):
            c = CHANNELS.index(channel)
            subject = page if channel == "web" else text
            if table[i, c] < 0 and subject.startswith(prefixes):
                table[i, c] = code
    return table


_HOST = re.compile(r"^(https?://)?[^/]*")


def _kind_lut() -> np.ndarray:
    lut = np.full((len(CHANNELS) + 1, len(ACTIONS) + 1), -1, dtype=np.int8)
    for (c, a), k in _KIND_INDEX.items():
        lut[CHANNELS.index(c), ACTIONS.index(a)] = k
    return lut


_KIND_LUT = _kind_lut()


class LeadIndex:
    """Maps lead_id strings to positions among the leads known at ``as_of``."""

    def __init__(self, lead_ids: pa.Array | pa.ChunkedArray, known: np.ndarray) -> None:
        h1, h2 = hash_strings(lead_ids)
        self._index = HashIndex(h1, h2)
        #: rows repeating an earlier row's lead_id; they are never featurised
        self.duplicates = self._index.duplicates
        self.known = known.copy()
        self.known[self.duplicates] = False
        # row in the lead table -> position among known leads (-1: created at/after as_of)
        self.position = np.full(len(known), -1, dtype=np.int64)
        self.position[self.known] = np.arange(int(self.known.sum()))
        self.n_known = int(self.known.sum())

    def rows(self, lead_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row of each lead_id in the lead table, -1 for an unknown lead."""
        if isinstance(lead_ids, pa.ChunkedArray):
            parts = [self.rows(chunk) for chunk in lead_ids.chunks]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if pa.types.is_dictionary(lead_ids.type):  # look up each distinct id once
            found = np.append(self._index.lookup(*hash_strings(lead_ids.dictionary)), -1)
            return found[lead_ids.indices.fill_null(-1).to_numpy(zero_copy_only=False)]
        h1, h2 = hash_strings(lead_ids)
        if len(h1) == 0:
            return np.zeros(0, np.int64)
        head = np.flatnonzero(np.r_[True, (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])])
        if head.size > len(h1) // 2:
            return self._index.lookup(h1, h2)
        run = np.zeros(len(h1), dtype=np.int64)  # rows grouped by lead: one lookup per run
        run[head[1:]] = 1
        return self._index.lookup(h1[head], h2[head])[np.cumsum(run)]

    def positions(self, lead_ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(position among known leads or -1, row in the lead table or -1) of each lead_id."""
        rows = self.rows(lead_ids)
        return np.where(rows >= 0, self.position[np.maximum(rows, 0)], -1), rows


def encode_events(
    batch: pa.RecordBatch | pa.Table, leads: LeadIndex, as_of_us: int, report: DataQualityReport
) -> EncodedEvents:
    """Integer arrays of the events of ``batch`` that were known at ``as_of`` (shared code)."""
    n = batch.num_rows
    report.events_read += n
    col = {name: _column(batch, name) for name in EVENT_COLUMNS}
    t = col["occurred_at"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    t = (t.fill_null(as_of_us) if t.null_count else t).to_numpy(zero_copy_only=False)
    ok = t < as_of_us
    report.events_after_as_of += int(n - ok.sum())
    position, rows = leads.positions(col["lead_id"])
    unknown = ok & (rows < 0)
    report.events_unknown_lead += int(unknown.sum())
    report.events_of_future_leads += int((ok & (rows >= 0) & (position < 0)).sum())
    ok &= position >= 0
    ch_dict, ch_idx = _dictionary(col["channel"])
    channel = _vocab_codes(ch_dict, np.where(ok, ch_idx, -1), CHANNELS, _CHANNEL_ALIASES, "channel", report)
    report.events_unknown_channel += int((ok & (channel < 0)).sum())
    ok &= channel >= 0
    idx = np.flatnonzero(ok)
    channel = channel[idx].astype(np.int64)
    ac_dict, ac_idx = _dictionary(col["action"])
    action = _vocab_codes(ac_dict, ac_idx[idx], ACTIONS, _ACTION_ALIASES, "action", report)
    report.events_unknown_action += int((action < 0).sum())
    kind = _KIND_LUT[channel, np.where(action < 0, len(ACTIONS), action)]
    de_dict, de_idx = _dictionary(col["detail"])
    intent = _intent_table(de_dict)[de_idx[idx], channel]
    eids = col["event_id"]
    return EncodedEvents(
        lead=position[idx].astype(np.int32),
        t=t[idx],
        channel=channel.astype(np.int8),
        kind=kind,
        intent=intent,
        eid_hash=hash64(eids)[idx],
        eid_row=idx.astype(np.int64),
        eid_arrays=[eids],
    )


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    try:
        column = batch.column(name)
    except KeyError:
        raise FeatureInputError(f"activities: missing column {name!r}") from None
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def drop_duplicates(events: EncodedEvents, report: DataQualityReport) -> EncodedEvents:
    """Keep one event per event_id: the earliest (then the first read)."""
    drop = duplicate_rows(events.eid_hash, events.t, events.event_ids)
    report.events_duplicate += int(drop.size)
    if not drop.size:
        return events
    keep = np.ones(len(events.t), dtype=bool)
    keep[drop] = False
    return events.take(np.flatnonzero(keep))


# ---- aggregation (shared by batch and hot path) ----------------------------------------------
def _running(counts: np.ndarray) -> np.ndarray:
    """Turn per-bucket counts (.., buckets) into counts of buckets <= b, in place."""
    for b in range(1, counts.shape[-1]):
        counts[..., b] += counts[..., b - 1]
    return counts


def _counts(
    lead: np.ndarray, code: np.ndarray, bucket: np.ndarray, n: int, n_codes: int, n_buckets: int
) -> np.ndarray:
    """Cumulative counts (n, n_codes, n_buckets): bucket b counts events of buckets <= b."""
    key = (lead * n_codes + code) * n_buckets + bucket
    counts = np.bincount(key, minlength=n * n_codes * n_buckets).reshape(n, n_codes, n_buckets)
    return _running(counts)


#: Day (since the event) -> bucket: [0,7) [7,28) [28,30) [30,90) days.
_BUCKET4 = np.searchsorted(np.array([7, 28, 30]), np.arange(90), side="right").astype(np.int64)
#: Day -> bucket of the 7/30/90-day windows.
_BUCKET3 = np.searchsorted(np.array([7, 30]), np.arange(90), side="right").astype(np.int64)
MINUTE_US = 60_000_000
#: The decayed engagement looks back one year (older weights round to nothing on its grid).
DECAY_HORIZON_MINUTES = 365 * 1440
_decay_table: np.ndarray | None = None


def _decay_by_minute() -> np.ndarray:
    """QUANTUM * 2**(-age / half-life) for each whole minute of age within the horizon."""
    global _decay_table
    if _decay_table is None:
        minutes = np.arange(DECAY_HORIZON_MINUTES, dtype=np.float64)
        _decay_table = np.exp2(-(minutes / 1440.0) / DECAY_HALF_LIFE_DAYS) * QUANTUM
    return _decay_table


def _weight_table() -> np.ndarray:
    """Weight of an event by (kind + 1) * (len(INTENT_DETAILS) + 1) + (intent + 1)."""
    kinds = np.concatenate([[OTHER_ACTION_WEIGHT], _KIND_WEIGHT])
    intents = np.concatenate([[0.0], _INTENT_WEIGHT])
    return (kinds[:, None] + intents[None, :]).ravel()


_WEIGHTS = _weight_table()


def compute_features(
    events: EncodedEvents, n: int, as_of_us: int, created_us: np.ndarray, account: np.ndarray
) -> dict[str, np.ndarray]:
    """Engagement, velocity and account columns for ``n`` leads from their encoded events.

    ``created_us`` holds each lead's creation time, ``account`` its account code (-1: none).
    Pure function of its inputs: the hot path calls it with the events of one lead (and of its
    account's other leads) and gets what the batch path gets.
    """
    out: dict[str, np.ndarray] = {}
    nc, nk, ni = len(CHANNELS), len(EVENT_KINDS), len(INTENT_DETAILS)
    age = as_of_us - events.t  # > 0
    # ---- recency per channel and first engagement: one sort of packed keys --------------------
    packed = events.lead.astype(np.int64) * nc + events.channel
    packed <<= 32
    packed |= np.minimum(age // SECOND_US, _MAX_AGE_S)
    packed.sort()
    newest = np.full(n * nc, -1, dtype=np.int64)
    oldest = np.full(n * nc, -1, dtype=np.int64)
    if packed.size:
        g = packed >> 32
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        last = np.r_[first[1:] - 1, packed.size - 1]
        newest[g[first]] = packed[first] & _MAX_AGE_S
        oldest[g[last]] = packed[last] & _MAX_AGE_S
        del g
    del packed
    newest = newest.reshape(n, nc)
    oldest = oldest.reshape(n, nc).max(axis=1)
    newest_days = np.where(newest >= 0, newest / 86_400.0, np.nan)
    for ci, channel in enumerate(CHANNELS):
        out[f"days_since_last_{channel}"] = newest_days[:, ci]
    out["days_since_last_event"] = np.fmin.reduce(newest_days, axis=1) if n else np.zeros(0)
    # ---- decayed engagement over the last year, on a 2**-24 grid (exact, order-free sums) ------
    minute = age // MINUTE_US
    recent = np.flatnonzero(minute < DECAY_HORIZON_MINUTES)
    terms = _WEIGHTS[(events.kind[recent].astype(np.int64) + 1) * (ni + 1) + events.intent[recent] + 1]
    terms *= _decay_by_minute()[minute[recent]]
    np.rint(terms, out=terms)
    decayed_q = np.bincount(events.lead[recent], weights=terms, minlength=n)
    del minute, recent, terms
    out["engagement_decayed"] = decayed_q / QUANTUM
    # ---- windowed counts over the last 90 days ------------------------------------------------
    in90 = np.flatnonzero(age < 90 * DAY_US)
    day = age[in90] // DAY_US
    del age
    lead = events.lead[in90].astype(np.int64)
    per_channel = _counts(lead, events.channel[in90].astype(np.int64), _BUCKET4[day], n, nc, 4)
    window_col = {7: 0, 30: 2, 90: 3}  # cumulative buckets: 7, 28, 30, 90 days
    totals = per_channel.sum(axis=1)
    for w, b in window_col.items():
        out[f"n_events_{w}d"] = totals[:, b]
    for ci, channel in enumerate(CHANNELS):
        for w, b in window_col.items():
            out[f"n_{channel}_{w}d"] = per_channel[:, ci, b]
    kind = events.kind[in90]
    sel = np.flatnonzero(kind >= 0)
    per_kind = _counts(lead[sel], kind[sel].astype(np.int64), _BUCKET3[day[sel]], n, nk, 3)
    for ki, (channel, action, _) in enumerate(EVENT_KINDS):
        for wi, w in enumerate(WINDOWS):
            out[f"n_{channel}_{action}_{w}d"] = per_kind[:, ki, wi]
    intent = events.intent[in90]
    sel = np.flatnonzero((intent >= 0) & (day < 30))
    per_intent = _counts(lead[sel], intent[sel].astype(np.int64), (day[sel] >= 7).astype(np.int64), n, ni, 2)
    for ii, stem in enumerate(_INTENT_STEMS):
        out[f"n_{stem}_7d"] = per_intent[:, ii, 0]
        out[f"n_{stem}_30d"] = per_intent[:, ii, 1]
    for wi, w in ((0, 7), (1, 30)):
        high = per_intent[:, _INTENT_HIGH, wi].sum(axis=1)
        for ki in _HIGH_INTENT_KINDS:
            high = high + per_kind[:, ki, wi]
        out[f"n_high_intent_{w}d"] = high
    out["trend_7d_vs_prior_21d"] = totals[:, 0] - (totals[:, 1] - totals[:, 0]) / 3.0
    active = np.sort(lead * 90 + day)  # distinct (lead, day) pairs; a sort beats np.unique's hashing here
    active = active[np.r_[True, active[1:] != active[:-1]]] if active.size else active
    active_lead, active_day = active // 90, active % 90
    for w in WINDOWS:
        out[f"active_days_{w}d"] = np.bincount(active_lead[active_day < w], minlength=n)
    # ---- velocity ---------------------------------------------------------------------------
    out["lead_age_days"] = (as_of_us - created_us) / DAY_US
    first_t = as_of_us - oldest * SECOND_US
    out["days_to_first_engagement"] = np.where(oldest >= 0, (first_t - created_us) / DAY_US, np.nan)
    # ---- account context: the other leads of the same company domain, engagement only ------
    has_account = account >= 0
    n_accounts = int(account.max()) + 1 if has_account.any() else 0
    acct = account[has_account]

    def others(values: np.ndarray) -> np.ndarray:
        total = np.bincount(acct, weights=values[has_account], minlength=n_accounts)
        result = np.zeros(n, dtype=np.float64)
        result[has_account] = total[acct] - values[has_account]
        return result

    out["account_other_leads"] = others(np.ones(n, dtype=np.float64))
    out["account_other_engaged_leads_30d"] = others((totals[:, 2] > 0).astype(np.float64))
    out["account_other_events_30d"] = others(totals[:, 2].astype(np.float64))
    out["account_other_high_intent_30d"] = others(out["n_high_intent_30d"].astype(np.float64))
    out["account_other_engagement_decayed"] = others(decayed_q) / QUANTUM
    return out


# ---- status as of T -----------------------------------------------------------------------
def normalise_status(values: pa.Array | pa.ChunkedArray, report: DataQualityReport) -> np.ndarray:
    """Index into STATUSES of each status (CRM picklist labels folded); unknown -> 'open'."""
    dictionary, indices = _dictionary(values)
    codes = _vocab_codes(dictionary, indices, STATUSES, _STATUS_ALIASES, "status", report)
    return np.where(codes < 0, 0, codes).astype(np.int64)


def status_as_of(
    history: pa.Table, leads: LeadIndex, as_of_us: int, report: DataQualityReport
) -> tuple[np.ndarray, np.ndarray]:
    """Status index and the time it was set, per known lead, from changes before ``as_of``.

    Leads with no change before ``as_of`` get status index -1 and time -1. Ties at the same
    instant resolve to the later status in STATUSES order, whatever the row order.
    """
    n = leads.n_known
    status = np.full(n, -1, dtype=np.int64)
    since = np.full(n, -1, dtype=np.int64)
    if history.num_rows == 0:
        return status, since
    changed = history.column("changed_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    changed = changed.to_numpy() if changed.null_count == 0 else changed.fill_null(as_of_us).to_numpy()
    before = changed < as_of_us
    rows = leads.rows(history.column("lead_id"))
    report.status_rows_unknown_lead += int((before & (rows < 0)).sum())
    pos = np.where(rows < 0, -1, leads.position[np.maximum(rows, 0)])
    ok = before & (pos >= 0)
    dictionary, indices = _dictionary(history.column("status"))
    codes = _vocab_codes(dictionary, np.where(ok, indices, -1), STATUSES, _STATUS_ALIASES, "status", report)
    idx = np.flatnonzero(ok)
    pos, changed, code = pos[idx], changed[idx], np.maximum(codes[idx], 0).astype(np.int64)  # unknown -> open
    in_order = pos.size < 2 or bool(
        np.all((pos[1:] > pos[:-1]) | ((pos[1:] == pos[:-1]) & (changed[1:] > changed[:-1])))
    )
    if not in_order:  # histories usually arrive sorted by lead and time; sort only when not
        order = np.lexsort((code, changed, pos))
        pos, changed, code = pos[order], changed[order], code[order]
    last = np.ones(pos.size, dtype=bool)
    last[:-1] = pos[1:] != pos[:-1]
    status[pos[last]] = code[last]
    since[pos[last]] = changed[last]
    return status, since


# ---- the batch builder ------------------------------------------------------------------
ActivitiesInput = pa.Table | pa.RecordBatchReader | str | Path | Sequence[str | Path]


def _event_batches(activities: ActivitiesInput) -> Iterator[pa.RecordBatch]:
    """Stream the activity rows in batches (bounded memory). Parquet is read with its
    categorical columns as dictionaries, which is what makes the scan cheap."""
    if isinstance(activities, (pa.Table, pa.RecordBatchReader)):
        missing = [c for c in EVENT_COLUMNS if c not in activities.schema.names]
        if missing:
            raise FeatureInputError(f"activities: missing column(s) {', '.join(repr(c) for c in missing)}")
        yield from (
            activities.to_batches(max_chunksize=BATCH_ROWS)
            if isinstance(activities, pa.Table)
            else activities
        )
        return
    import pyarrow.dataset as ds

    source = [str(p) for p in activities] if isinstance(activities, (list, tuple)) else str(activities)
    fmt = ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns=list(DICTIONARY_COLUMNS))
    )
    dataset = ds.dataset(source, format=fmt)
    missing = [c for c in EVENT_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise FeatureInputError(
            f"activities {source}: missing column(s) {', '.join(repr(c) for c in missing)}"
        )
    yield from dataset.to_batches(columns=list(EVENT_COLUMNS), batch_size=BATCH_ROWS)


def _encode_all(
    activities: ActivitiesInput, index: LeadIndex, as_of_us: int, report: DataQualityReport
) -> EncodedEvents:
    """Encode every batch, two at a time (NumPy and Arrow release the GIL), then deduplicate."""
    parts: list[EncodedEvents] = []
    reports: list[DataQualityReport] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        pending: deque = deque()
        for batch in _event_batches(activities):
            part_report = DataQualityReport()
            reports.append(part_report)
            pending.append(pool.submit(encode_events, batch, index, as_of_us, part_report))
            while len(pending) > WORKERS:
                parts.append(pending.popleft().result())
        parts.extend(f.result() for f in pending)
    for part_report in reports:
        report.merge(part_report)
    events = EncodedEvents.concat(parts)
    del parts
    events = drop_duplicates(events, report)
    events.eid_arrays = []  # event ids are done with: free them before the aggregation
    events.eid_hash = events.eid_row = np.zeros(0, np.int64)
    return events


def _known_leads(leads: pa.Table, as_of_us: int, report: DataQualityReport) -> np.ndarray:
    created = leads.column("created_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    created = created.fill_null(as_of_us).to_numpy()
    report.leads_read += leads.num_rows
    known = created < as_of_us
    report.leads_known += int(known.sum())
    return known


_allocator_tuned = False


def tune_allocator() -> None:
    """Keep freed memory in the process for reuse (glibc only; once per process).

    The builder allocates and frees arrays of hundreds of MB. By default glibc hands each one
    back to the kernel and the next one is faulted in page by page again, which on small
    virtual machines costs more than the arithmetic (measured here: 1 s per 300 MB). Set
    PROX_FEATURES_KEEP_MEMORY=0 to leave the allocator alone.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True  # the setting is read once per process, like the tuning itself
    if not Settings.from_env().features_keep_memory:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)  # large blocks from the heap, so they can be reused ...
    libc.mallopt(m_trim_threshold, 1 << 30)  # ... and are not trimmed back to the kernel eagerly


def build_features(
    leads: pa.Table, activities: ActivitiesInput, status_history: pa.Table, as_of: dt.datetime
) -> tuple[pa.Table, DataQualityReport]:
    """Features of every lead created before ``as_of``, from what was known at ``as_of``.

    ``leads`` follows the LEADS contract, ``status_history`` LEAD_STATUS_HISTORY;
    ``activities`` is an ACTIVITIES table, a record-batch reader, or Parquet path(s). Returns
    the feature table (``lead_id``, ``as_of``, then :data:`features.spec.FEATURE_NAMES`) and
    what was found dirty on the way. Lead order follows ``leads``.
    """
    as_of_us = to_us(as_of)
    tune_allocator()
    started = time.perf_counter()
    report = DataQualityReport(as_of=as_of.isoformat())
    known = _known_leads(leads, as_of_us, report)
    index = LeadIndex(leads.column("lead_id"), known)
    if index.duplicates.size:  # the first row of a lead_id wins
        report.invalid["lead_id_duplicate"] += int(index.duplicates.size)
        report.leads_known = index.n_known
        known = index.known
    events = _encode_all(activities, index, as_of_us, report)
    report.events_used += len(events.t)
    encoded = time.perf_counter()
    known_leads = leads.filter(pa.array(known))
    table = assemble(known_leads, events, index, status_history, as_of_us, report)
    done = time.perf_counter()
    log.info(
        "features as of %s: %d leads from %d events in %.1f s (read+encode+dedupe %.1f s, features %.1f s); %s",
        as_of.isoformat(),
        table.num_rows,
        report.events_read,
        done - started,
        encoded - started,
        done - encoded,
        report.summary(),
    )
    return table, report


def feature_columns(
    known_leads: pa.Table,
    events: EncodedEvents,
    index: LeadIndex,
    status_history: pa.Table,
    as_of_us: int,
    report: DataQualityReport,
    fit: dict[str, pa.Array] | None = None,
) -> dict[str, pa.Array | np.ndarray]:
    """Every feature of ``known_leads`` as a column, in spec order (shared by both paths).

    Categories come as Arrow string arrays, counts as int32 and the rest as float64 NumPy
    arrays (NaN where missing). ``fit`` may hold :func:`features.parse.fit_features`' result
    when the caller has it already (the hot path caches it per profile).
    """
    n = known_leads.num_rows
    status_report = DataQualityReport()
    # the status history is independent: in parallel, unless the work is too small to pay
    # for a thread (the hot path's one lead: a thread start costs more than the work)
    parallel = n + status_history.num_rows >= _PARALLEL_MIN_ROWS
    with ThreadPoolExecutor(max_workers=1) if parallel else _Inline() as pool:
        status_job = pool.submit(status_as_of, status_history, index, as_of_us, status_report)
        fit = dict(fit) if fit is not None else fit_features(known_leads, report)
        domain = fit.pop("_account_domain")
        account = (
            pc.dictionary_encode(domain).indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        )
        created = (
            known_leads.column("created_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        )
        engaged = compute_features(events, n, as_of_us, created, account)
        status, since = status_job.result()
    report.merge(status_report)
    report.leads_without_status += int((status < 0).sum())
    engaged["status"] = pa.array(np.array(STATUSES, dtype=object)[np.maximum(status, 0)], pa.string())
    engaged["days_in_status"] = (as_of_us - np.where(since >= 0, since, created)) / DAY_US
    columns: dict[str, pa.Array | np.ndarray] = {}
    for spec in FEATURES:
        value = fit[spec.name] if spec.name in fit else engaged[spec.name]
        if spec.dtype == "category":
            columns[spec.name] = value
        elif spec.dtype == "int32":
            columns[spec.name] = np.asarray(value, dtype=np.int32)
        else:
            arr = value.to_numpy(zero_copy_only=False) if isinstance(value, pa.Array) else value
            columns[spec.name] = np.asarray(arr, dtype=np.float64)
    return columns


def value_at(column: pa.Array | np.ndarray, i: int) -> Any:
    """Row ``i`` of a feature column as the feature table holds it (None where missing)."""
    if isinstance(column, pa.Array):
        return column[i].as_py()
    value = column[i].item()
    return None if isinstance(value, float) and math.isnan(value) else value


def assemble(
    known_leads: pa.Table,
    events: EncodedEvents,
    index: LeadIndex,
    status_history: pa.Table,
    as_of_us: int,
    report: DataQualityReport,
) -> pa.Table:
    """The feature table of ``known_leads``: lead_id, as_of, then every feature."""
    n = known_leads.num_rows
    columns: dict[str, pa.Array] = {
        "lead_id": known_leads.column("lead_id").combine_chunks(),
        "as_of": pa.array(np.full(n, as_of_us, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC")),
    }
    for name, value in feature_columns(known_leads, events, index, status_history, as_of_us, report).items():
        columns[name] = (
            value if isinstance(value, pa.Array) else pa.array(value, from_pandas=True)
        )  # NaN -> null
    return pa.table(columns)


def partition_key(leads: pa.Table) -> pa.Array:
    """The key to split leads into buckets by when features are built in parts: the account
    (normalised company domain), or the lead_id when it has none. Account features compare a
    lead with the other leads of its account, so an account must not be split over buckets;
    bucketing by lead_id alone would give different account_* values than one full build."""
    from features.parse import account_domain, normalise_domain

    domain = account_domain(normalise_domain(leads.column("company_domain").combine_chunks()))
    return pc.coalesce(domain, leads.column("lead_id").combine_chunks())


def is_open(features: pa.Table) -> pa.Array:
    """Rows whose status at the as-of time is not closed (the leads that are scored)."""
    return pc.invert(pc.is_in(features.column("status"), value_set=pa.array(CLOSED_STATUSES)))
