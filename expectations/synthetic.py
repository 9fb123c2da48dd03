"""Clean, contract-shaped tables built fast with NumPy/Arrow, for tests and the benchmark.

They pass every suite by construction (ids in each CRM's style, enums from the contract,
timestamps before ``end``), so a test can plant exactly one kind of dirt and assert the gate
catches exactly that. The simulated world (:mod:`sandbox.world`) is the realistic source;
these are the minimal one.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIVITIES, CHANNELS, RAW_LEADS, SCORES, STATUSES, TIERS, UTC_TS

DAY_US = 86_400 * 1_000_000
DEFAULT_END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _crm_ids(source: str, seq: np.ndarray) -> pa.Array:
    text = pc.cast(pa.array(seq), pa.string())
    if source == "salesforce":
        return pc.binary_join_element_wise(
            pa.scalar("00Q"), pc.utf8_lpad(text, 12, "0"), pa.scalar("AAA"), ""
        )
    if source == "hubspot":
        return pc.cast(pa.array(seq * 7 + 100_001), pa.string())
    return pc.binary_join_element_wise(pa.scalar("f"), text, "-")


def lead_ids(source: str, n: int) -> pa.Array:
    """The ``n`` lead ids clean_raw_leads(source, n) uses, in order."""
    return pc.binary_join_element_wise(pa.scalar(source), _crm_ids(source, np.arange(n)), ":")


def clean_raw_leads(
    n: int, source: str = "salesforce", *, end: dt.datetime = DEFAULT_END, seed: int = 7, days: int = 365
) -> pa.Table:
    """``n`` RAW_LEADS rows from one source, created in the ``days`` before ``end``."""
    rng = np.random.default_rng(seed)
    end_us = _us(end)
    created = end_us - rng.integers(DAY_US, days * DAY_US, n)
    updated = np.minimum(created + rng.integers(0, 30 * DAY_US, n), end_us - 1)
    status_idx = rng.integers(0, len(STATUSES), n)
    statuses = np.array(STATUSES)[status_idx]
    converted = statuses == "converted"
    converted_at = np.where(
        converted, np.minimum(created + rng.integers(DAY_US, 90 * DAY_US, n), end_us - 1), 0
    )
    seq = np.arange(n)
    crm = _crm_ids(source, seq)
    emails = pc.binary_join_element_wise(
        pa.scalar("lead"), pc.cast(pa.array(seq), pa.string()), pa.scalar("@example.com"), ""
    )
    employees = rng.integers(1, 50_000, n)
    revenue = np.round(rng.lognormal(15, 2, n), 2)
    countries = np.array(["US", "GB", "DE", "FR", "IN"])[rng.integers(0, 5, n)]
    columns = {
        "lead_id": pc.binary_join_element_wise(pa.scalar(source), crm, ":"),
        "source": pa.array(np.full(n, source)),
        "crm_id": crm,
        "created_at": pa.array(created, UTC_TS),
        "updated_at": pa.array(np.maximum(updated, created), UTC_TS),
        "first_name": pa.array(np.full(n, "Ada")),
        "last_name": pa.array(np.full(n, "Lovelace")),
        "email": emails,
        "phone": pa.nulls(n, pa.string()),
        "company": pa.array(np.full(n, "Example Corp")),
        "company_domain": pa.array(np.full(n, "example.com")),
        "industry": pa.array(np.full(n, "Software")),
        "employees": pa.array(employees, pa.int64()),
        "annual_revenue": pa.array(revenue, pa.float64()),
        "country": pa.array(countries),
        "title": pa.array(np.full(n, "Head of Data")),
        "lead_source": pa.array(np.full(n, "web")),
        "status": pa.array(statuses),
        "converted": pa.array(converted),
        "converted_at": pa.array(converted_at, UTC_TS, mask=~converted),
        "consent_processing": pa.array(np.ones(n, bool)),
        "opted_out": pa.array(np.zeros(n, bool)),
    }
    return pa.table(columns, schema=RAW_LEADS)


_CHANNEL_ACTION = (
    ("email", "open"), ("email", "click"), ("web", "visit"), ("form", "submit"), ("webinar", "attend"),
    ("call", "completed"), ("meeting", "booked"), ("chat", "reply"), ("ad", "click"),
)  # fmt: skip


def clean_activities(
    n: int,
    *,
    n_leads: int = 1000,
    source: str = "hubspot",
    end: dt.datetime = DEFAULT_END,
    seed: int = 11,
    days: int = 365,
) -> pa.Table:
    """``n`` ACTIVITIES rows from one source over ``n_leads`` leads, all before ``end``."""
    rng = np.random.default_rng(seed)
    end_us = _us(end)
    kind = rng.integers(0, len(_CHANNEL_ACTION), n)
    channels = pa.array([c for c, _ in _CHANNEL_ACTION]).take(pa.array(kind))
    actions = pa.array([a for _, a in _CHANNEL_ACTION]).take(pa.array(kind))
    leads = lead_ids(source, n_leads).take(pa.array(rng.integers(0, n_leads, n)))
    event_ids = pc.binary_join_element_wise(
        pa.scalar("ev"), pc.cast(pa.array(np.arange(n)), pa.string()), "-"
    )
    columns = {
        "event_id": event_ids,
        "lead_id": leads,
        "source": pa.array(np.full(n, source)),
        "occurred_at": pa.array(end_us - rng.integers(60_000_000, days * DAY_US, n), UTC_TS),
        "channel": channels,
        "action": actions,
        "detail": pa.array(np.full(n, "/pricing")),
        "value": pa.array(rng.uniform(0, 600, n), pa.float64()),
    }
    assert set(c for c, _ in _CHANNEL_ACTION) <= set(CHANNELS)
    return pa.table(columns, schema=ACTIVITIES)


def clean_scores(n: int, *, end: dt.datetime = DEFAULT_END, seed: int = 5) -> pa.Table:
    """``n`` SCORES rows of one scoring run, tiers spread over A-D."""
    rng = np.random.default_rng(seed)
    prob = rng.beta(1.2, 6.0, n)
    score = np.clip(np.round(prob * 100), 1, 99).astype(np.int16)
    band = np.searchsorted(np.quantile(prob, [0.4, 0.7, 0.9]), prob, side="right")  # 3 = top 10%
    tier = np.array(TIERS)[3 - band]  # A 10%, B 20%, C 30%, D 40%, following the probability
    reasons = pa.array([["visited pricing"]] * n, pa.list_(pa.string()))
    return pa.table(
        {
            "lead_id": lead_ids("salesforce", n),
            "scored_at": pa.array(np.full(n, _us(end) - DAY_US), UTC_TS),
            "model_name": pa.array(np.full(n, "prox-lead-scoring")),
            "model_version": pa.array(np.full(n, "3")),
            "probability": pa.array(prob),
            "score": pa.array(score, pa.int16()),
            "tier": pa.array(tier),
            "reasons_positive": reasons,
            "reasons_negative": reasons,
            "run_id": pa.array(np.full(n, "run-1")),
        },
        schema=SCORES,
    )


def clean_features(n: int, *, end: dt.datetime = DEFAULT_END, seed: int = 3) -> pa.Table:
    """``n`` feature rows with every column of :func:`expectations.columns.feature_columns`."""
    from expectations.columns import feature_columns

    rng = np.random.default_rng(seed)
    groups = feature_columns()
    columns: dict[str, pa.Array] = {
        "lead_id": lead_ids("hubspot", n),
        "as_of": pa.array(np.full(n, _us(end) - DAY_US), UTC_TS),
    }
    for name in groups.counts:
        columns[name] = pa.array(rng.poisson(2.0, n).astype(np.int32))
    for name in groups.floats:
        values = rng.uniform(0, 100, n)
        optional = name not in groups.required_floats
        columns[name] = pa.array(values, mask=(rng.random(n) < 0.1) if optional else None)
    for name, cats in groups.categories.items():
        columns[name] = pa.array(np.array(cats)[rng.integers(0, len(cats), n)])
    return pa.table(columns)


def set_values(table: pa.Table, column: str, values: dict[int, object]) -> pa.Table:
    """``table`` with ``column`` set to ``values[i]`` at row ``i`` (the column keeps its type)."""
    field = table.schema.field(column)
    data = table.column(column).to_pylist()
    for i, value in values.items():
        data[i] = value
    return table.set_column(table.schema.get_field_index(column), field, pa.array(data, field.type))
