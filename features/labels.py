"""Labels for point-in-time snapshots, and the training set that stacks them.

A label for a snapshot at T answers "did this lead convert within H days after T?"
(H = ``Settings.label_horizon_days``, 90 by default). Leads already converted or closed at T
(:data:`features.contract.CLOSED_STATUSES`) are left out: scoring never sees them, so training
must not either. Several snapshots are stacked so that training sees each lead at the ages and
stages at which scoring will meet it.

A lead's conversion time is the earliest of the CRM's ``converted_at`` and the first change
to status "converted" in the status history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.build import (
    DAY_US,
    ActivitiesInput,
    FeatureInputError,
    LeadIndex,
    _known_leads,
    build_features,
    normalise_status,
    status_as_of,
    to_us,
)
from features.contract import CLOSED_STATUSES, STATUSES
from features.quality import DataQualityReport

_CLOSED_CODES = np.array([STATUSES.index(s) for s in CLOSED_STATUSES])
_CONVERTED = STATUSES.index("converted")


def default_horizon_days() -> int:
    from prox.settings import Settings

    return Settings.from_env().label_horizon_days


def conversion_times(leads: pa.Table, status_history: pa.Table, index: LeadIndex) -> np.ndarray:
    """Conversion time (us since the epoch) per row of ``leads``; -1 when it never converted."""
    crm = leads.column("converted_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    conv = crm.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if status_history.num_rows:
        scratch = DataQualityReport()
        codes = normalise_status(status_history.column("status"), scratch)
        hit = codes == _CONVERTED
        if hit.any():
            hist = status_history.filter(pa.array(hit))
            rows = index.rows(hist.column("lead_id"))
            when = hist.column("changed_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
            ok = rows >= 0
            first = np.full(len(conv), np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first, rows[ok], when[ok])
            has = first < np.iinfo(np.int64).max
            conv = np.where(has & ((conv < 0) | (first < conv)), first, conv)
    return conv


def label_snapshot(
    leads: pa.Table, status_history: pa.Table, as_of: dt.datetime, horizon_days: int | None = None
) -> pa.Table:
    """Labels at ``as_of`` for the leads open then: lead_id, as_of, label, converted_at.

    Rows follow the order of ``leads`` (as the feature table does); leads created at or
    after ``as_of``, converted before it or in a closed status at it are left out.
    """
    horizon = horizon_days if horizon_days is not None else default_horizon_days()
    if horizon <= 0:
        raise FeatureInputError(f"horizon_days must be positive, got {horizon}")
    as_of_us = to_us(as_of)
    report = DataQualityReport()
    known = _known_leads(leads, as_of_us, report)
    index = LeadIndex(leads.column("lead_id"), known)
    conv = conversion_times(leads, status_history, index)[index.known]
    status, _ = status_as_of(status_history, index, as_of_us, report)
    open_at = ~np.isin(status, _CLOSED_CODES) & ~((conv >= 0) & (conv < as_of_us))
    label = (conv >= as_of_us) & (conv < as_of_us + horizon * DAY_US)
    known_leads = leads.filter(pa.array(index.known))
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "lead_id": known_leads.column("lead_id"),
            "as_of": pa.array(np.full(len(conv), as_of_us, dtype=np.int64)).cast(ts),
            "label": pa.array(label),
            "converted_at": pa.array(np.where(conv >= 0, conv, 0), mask=conv < 0).cast(ts),
        }
    )
    return table.filter(pa.array(open_at))


def snapshot_times(start: dt.datetime, end: dt.datetime, every_days: int) -> list[dt.datetime]:
    """Snapshot times from ``start`` to ``end`` (inclusive) every ``every_days`` days."""
    if every_days <= 0:
        raise FeatureInputError(f"every_days must be positive, got {every_days}")
    out, t = [], start
    while t <= end:
        out.append(t)
        t += dt.timedelta(days=every_days)
    return out


def build_training_set(
    leads: pa.Table,
    activities: ActivitiesInput,
    status_history: pa.Table,
    snapshots: Sequence[dt.datetime],
    *,
    horizon_days: int | None = None,
    observed_until: dt.datetime | None = None,
) -> tuple[pa.Table, list[DataQualityReport]]:
    """Features plus ``label`` for the open leads of every snapshot, stacked in snapshot order.

    ``observed_until`` is the time up to which conversions are known (the extraction time);
    a snapshot whose horizon ends after it would mislabel late converters as negatives and
    is refused, naming the snapshot.
    """
    horizon = horizon_days if horizon_days is not None else default_horizon_days()
    if not snapshots:
        raise FeatureInputError("build_training_set: no snapshot times given")
    tables, reports = [], []
    for as_of in snapshots:
        if observed_until is not None and as_of + dt.timedelta(days=horizon) > observed_until:
            raise FeatureInputError(
                f"snapshot {as_of.isoformat()}: its {horizon}-day label horizon ends after the data "
                f"(observed until {observed_until.isoformat()}); pick an earlier snapshot"
            )
        feats, report = build_features(leads, activities, status_history, as_of)
        labels = label_snapshot(leads, status_history, as_of, horizon)
        keep = pc.is_in(feats.column("lead_id"), value_set=labels.column("lead_id"))
        feats = feats.filter(keep)
        # both tables follow the order of ``leads``, so the rows line up
        if feats.num_rows != labels.num_rows or (
            feats.num_rows and not pc.all(pc.equal(feats.column("lead_id"), labels.column("lead_id"))).as_py()
        ):
            raise AssertionError("labels and features are out of line")  # pragma: no cover
        tables.append(feats.append_column("label", labels.column("label")))
        reports.append(report)
    return pa.concat_tables(tables), reports
