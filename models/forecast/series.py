"""Weekly series of new leads and conversions, overall and per segment, from canonical leads.

A week runs Monday 00:00 to Monday 00:00 UTC and is labelled by its Monday. Only complete
weeks before ``as_of`` count, and only what was known before ``as_of`` (``created_at`` and
``converted_at`` strictly earlier), so a forecast made "as of T" never sees later data.

Conversions are counted in the week they happened (``converted_at``), not the week the lead
was created: that is what a sales leader plans on, and a past week's count is final once the
week is over. The first weeks of the conversion series are dropped as a *warm-up*: leads
created before the lake's history begins cannot convert in it, so those weeks under-count
(see :func:`conversion_warmup_weeks`).

Regions come from ``country`` through :func:`features.parse.region`, the same mapping the
scoring features use; missing countries go to ``"unknown"``, unplaceable ones to ``"other"``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa

METRICS: Final = ("leads", "conversions")
DIMENSIONS: Final = ("lead_source", "region")
OVERALL: Final = "overall"
OTHER: Final = "other"
UNKNOWN: Final = "unknown"


class SeriesError(ValueError):
    """Leads cannot be turned into series; the message names the column or the value."""


@dataclass(frozen=True)
class WeeklySeries:
    """One weekly series: counts indexed by the Monday (UTC, tz-naive) of each week."""

    metric: str  # "leads" | "conversions"
    dimension: str  # "overall" | "lead_source" | "region"
    segment: str
    values: pd.Series
    notes: tuple[str, ...] = field(default=())

    @property
    def series_id(self) -> str:
        if self.dimension == OVERALL:
            return f"{self.metric}/{OVERALL}"
        return f"{self.metric}/{self.dimension}={self.segment}"


def region_of(countries: Iterable[object]) -> list[str]:
    """Sales region of each country (ISO code or name, any case) by :func:`features.parse.region`.

    Missing countries give ``unknown``; countries it cannot place give ``other``.
    """
    from features.parse import region

    out = []
    for c in countries:
        text = str(c) if c is not None and c == c else ""
        out.append(region(text) or OTHER if text.strip() else UNKNOWN)
    return out


def week_start(ts: pd.Series) -> pd.Series:
    """Monday 00:00 of each timestamp's UTC week, tz-naive."""
    ts = _utc_naive(ts)
    day = ts.dt.floor("D")
    return day - pd.to_timedelta(day.dt.day_of_week, unit="D")


def conversion_warmup_weeks(leads: pd.DataFrame, *, quantile: float = 0.8, cap: int = 26) -> int:
    """Weeks at the start of the history in which conversions are under-counted.

    A conversion in week w needs a lead created before w; leads older than the history are
    missing, so early weeks miss the conversions of older leads. We drop as many weeks as the
    ``quantile`` of the creation-to-conversion lag (capped), measured on the data itself.
    """
    conv = leads[leads["converted_at"].notna()]
    if conv.empty:
        return 0
    lag_days = (_utc_naive(conv["converted_at"]) - _utc_naive(conv["created_at"])).dt.total_seconds() / 86400
    lag_days = lag_days[lag_days >= 0]
    if lag_days.empty:
        return 0
    return int(min(cap, math.ceil(float(np.quantile(lag_days, quantile)) / 7)))


def build_weekly_series(
    leads: pa.Table | pd.DataFrame,
    *,
    as_of: dt.date | dt.datetime,
    dimensions: Sequence[str] = DIMENSIONS,
    max_segments: int = 5,
    min_share: float = 0.03,
    warmup_quantile: float = 0.8,
) -> list[WeeklySeries]:
    """Weekly counts of new leads and conversions, overall and per segment of ``dimensions``.

    Per dimension the ``max_segments`` largest segments (by leads, each with at least
    ``min_share`` of them) get their own series; the rest are pooled as ``other``, which
    keeps the number of series, and so the run time, bounded.
    """
    df = _prepare(leads, dimensions)
    ts = pd.Timestamp(as_of)
    cutoff = ts if ts.tzinfo is None else ts.tz_convert("UTC").tz_localize(None)
    df = df[df["created_at"] < cutoff]
    if df.empty:
        raise SeriesError(f"leads: no lead created before as_of={cutoff.date()}")
    df.loc[df["converted_at"] >= cutoff, "converted_at"] = pd.NaT

    first_day = df["created_at"].min().floor("D")
    start = first_day + pd.Timedelta(days=(7 - first_day.day_of_week) % 7)  # first complete week
    end = cutoff.floor("D") - pd.Timedelta(days=cutoff.floor("D").day_of_week)  # exclusive: current week
    if end <= start:
        raise SeriesError(f"leads: no complete week between {start.date()} and as_of={cutoff.date()}")
    weeks = pd.date_range(start, end - pd.Timedelta(days=7), freq="7D")
    warmup = conversion_warmup_weeks(df, quantile=warmup_quantile)
    conv_weeks = weeks[min(warmup, len(weeks)) :]
    warm_note = (
        f"first {warmup} week(s) dropped as conversion warm-up (leads older than the history are missing)"
        if warmup
        else ""
    )

    df["created_week"] = week_start(df["created_at"])
    df["converted_week"] = week_start(df["converted_at"])
    groups: list[tuple[str, str, pd.Series]] = [(OVERALL, OVERALL, pd.Series(True, index=df.index))]
    for dim in dimensions:
        for segment, mask in _segments(df[dim], max_segments=max_segments, min_share=min_share):
            groups.append((dim, segment, mask))

    out = []
    for dim, segment, mask in groups:
        sub = df[mask]
        new = sub["created_week"].value_counts().reindex(weeks, fill_value=0).astype(float)
        out.append(WeeklySeries("leads", dim, segment, _named(new)))
        conv = sub["converted_week"].dropna().value_counts().reindex(conv_weeks, fill_value=0).astype(float)
        out.append(WeeklySeries("conversions", dim, segment, _named(conv), (warm_note,) if warm_note else ()))
    return out


def series_frame(series: Sequence[WeeklySeries]) -> pd.DataFrame:
    """Long table of the series (one row per series and week), for the lake and plots."""
    rows = [
        pd.DataFrame(
            {
                "series_id": s.series_id,
                "metric": s.metric,
                "dimension": s.dimension,
                "segment": s.segment,
                "week": s.values.index,
                "value": s.values.to_numpy(dtype=float),
            }
        )
        for s in series
    ]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


# ---- helpers ------------------------------------------------------------------------------
def _prepare(leads: pa.Table | pd.DataFrame, dimensions: Sequence[str]) -> pd.DataFrame:
    df = leads.to_pandas() if isinstance(leads, pa.Table) else leads.copy()
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise SeriesError(f"unknown dimension(s) {unknown}; known: {', '.join(DIMENSIONS)}")
    needed = ["lead_id", "created_at", "converted_at", "lead_source", "country"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SeriesError(f"leads: missing column(s) {', '.join(missing)}")
    df = df[needed + [c for c in ("converted", "updated_at") if c in df.columns]].copy()
    bad = df["created_at"].isna()
    if bad.any():
        raise SeriesError(f"leads.created_at: null for lead_id {df.loc[bad, 'lead_id'].iloc[0]!r}")
    df["created_at"] = _utc_naive(df["created_at"])
    df["converted_at"] = _utc_naive(df["converted_at"])
    if "converted" in df.columns:  # a converted_at without the flag is not a conversion
        df.loc[~df["converted"].fillna(False).astype(bool), "converted_at"] = pd.NaT
    if df["lead_id"].duplicated().any():
        # incremental extracts: keep each lead's latest state
        order = "updated_at" if "updated_at" in df.columns else "created_at"
        df = df.sort_values(order, kind="stable").drop_duplicates("lead_id", keep="last")
    df["lead_source"] = _clean_label(df["lead_source"])
    countries = df["country"].astype(object).where(df["country"].notna(), None)
    unique = pd.unique(countries)
    lookup = dict(zip(unique, region_of(unique), strict=True))  # one lookup per distinct country
    df["region"] = _clean_label(countries.map(lookup).astype(object))
    return df


def _clean_label(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip().str.lower().str.replace(r"[^a-z0-9]+", "_", regex=True)
    text = text.str.strip("_")
    return text.mask(text.isna() | (text == ""), UNKNOWN).astype(object)


def _segments(values: pd.Series, *, max_segments: int, min_share: float) -> list[tuple[str, pd.Series]]:
    counts = values.value_counts()
    keep = [s for s in counts.index[:max_segments] if counts[s] >= min_share * len(values) and s != OTHER]
    out = [(str(s), values == s) for s in keep]
    rest = ~values.isin(keep)
    if rest.any():
        out.append((OTHER, rest))
    return out


def _utc_naive(ts: pd.Series) -> pd.Series:
    ts = pd.to_datetime(ts, utc=True)
    return ts.dt.tz_localize(None).astype("datetime64[ns]")


def _named(s: pd.Series) -> pd.Series:
    s = s.copy()
    s.index = pd.DatetimeIndex(s.index, name="week")
    s.name = "value"
    return s
