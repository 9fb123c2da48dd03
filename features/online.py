"""The hot path: the features of ONE lead from its recent events, exactly as the batch computes them.

There is no second implementation here: the lead (and, for account context, the other leads
of its company domain) go through the very functions the batch builder uses
(:func:`features.build.encode_events`, :func:`features.build.compute_features` via
:func:`features.build.feature_columns`, :func:`features.parse.fit_features`), just with a
handful of rows. A lead scored online and in batch at the same as-of time therefore gets the
same feature values, bit for bit (tested on 1,000 leads of the simulated world).

Fit features depend only on a lead's profile fields, so they are cached per profile: a lead
whose events change is re-featurised without re-parsing its title.

The caller passes what its online state holds: the lead's fields, its events, its status
changes and, optionally, the other leads of the same company domain with their events. The
values equal the batch's when the events given include every event of the last 365 days,
the newest event of each channel and the lead's first event (older ones change nothing);
for account context, the peers' events of the last 365 days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa

from features.build import (
    EncodedEvents,
    FeatureInputError,
    LeadIndex,
    drop_duplicates,
    encode_events,
    feature_columns,
    to_us,
    value_at,
)
from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS
from features.parse import PROFILE_FIELDS, fit_features
from features.quality import DataQualityReport

Rows = pa.Table | Sequence[Mapping[str, Any]]
_FIT_TYPES = {"email_matches_company": pa.float64(), "data_completeness": pa.float64()}


@lru_cache(maxsize=8)
def _empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()  # Arrow tables are immutable: one empty table per schema serves all


def _table(rows: Rows | None, schema: pa.Schema) -> pa.Table:
    if rows is None or (not isinstance(rows, pa.Table) and len(rows) == 0):
        return _empty(schema)
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


@lru_cache(maxsize=65_536)
def _fit_of(profile: tuple[Any, ...]) -> tuple[dict[str, Any], DataQualityReport]:
    """Fit features (and their data-quality counts) of one profile, via the batch parser."""
    report = DataQualityReport()
    table = pa.table(
        {
            name: pa.array([value], LEADS.field(name).type)
            for name, value in zip(PROFILE_FIELDS, profile, strict=True)
        }
    )
    return {name: column[0].as_py() for name, column in fit_features(table, report).items()}, report


def _fit_columns(leads: pa.Table, report: DataQualityReport) -> dict[str, pa.Array]:
    rows = []
    profiles = zip(*(leads.column(name).to_pylist() for name in PROFILE_FIELDS), strict=True)
    for profile in profiles:
        row, row_report = _fit_of(profile)
        report.merge(row_report)
        rows.append(row)
    return {name: pa.array([r[name] for r in rows], _FIT_TYPES.get(name, pa.string())) for name in rows[0]}


def lead_features(
    lead: Mapping[str, Any],
    events: Rows,
    as_of: dt.datetime,
    *,
    status_history: Rows | None = None,
    peers: Rows | None = None,
    peer_events: Rows | None = None,
) -> tuple[dict[str, Any], DataQualityReport]:
    """Feature values (name -> value, :data:`features.spec.FEATURE_NAMES`) of ``lead`` at ``as_of``.

    Values are what the batch table holds for the lead (None where a value is missing, e.g.
    ``days_since_last_meeting`` without a meeting), with the input's data-quality report.
    ``lead`` is a LEADS row (a mapping); ``events``/``status_history`` rows (or tables) of
    ACTIVITIES and LEAD_STATUS_HISTORY; ``peers`` other leads of the same company domain with
    ``peer_events``. Events at or after ``as_of`` are ignored, as in batch. Raises
    FeatureInputError when the lead was created at or after ``as_of``.
    """
    as_of_us = to_us(as_of)
    leads = _table([lead], LEADS)
    if peers is not None:
        peer_table = _table(peers, LEADS)
        if peer_table.num_rows:
            leads = pa.concat_tables([leads, peer_table])
    report = DataQualityReport(as_of=as_of.isoformat())
    created = leads.column("created_at").cast(pa.int64()).fill_null(as_of_us).to_numpy()
    known = created < as_of_us
    if not known[0]:
        raise FeatureInputError(
            f"lead {lead.get('lead_id')!r}: created_at {lead.get('created_at')} is not before "
            f"as_of {as_of.isoformat()}; it has no features yet"
        )
    report.leads_read, report.leads_known = leads.num_rows, int(known.sum())
    index = LeadIndex(leads.column("lead_id"), known)
    event_table = _table(events, ACTIVITIES)
    if peer_events is not None:
        extra = _table(peer_events, ACTIVITIES)
        if extra.num_rows:
            event_table = pa.concat_tables([event_table, extra])
    encoded = (
        encode_events(event_table, index, as_of_us, report) if event_table.num_rows else EncodedEvents.empty()
    )
    encoded = drop_duplicates(encoded, report)
    report.events_used = len(encoded.t)
    known_leads = leads.filter(pa.array(index.known)) if not index.known.all() else leads
    columns = feature_columns(
        known_leads,
        encoded,
        index,
        _table(status_history, LEAD_STATUS_HISTORY),
        as_of_us,
        report,
        fit=_fit_columns(known_leads, report),
    )
    return {name: value_at(column, 0) for name, column in columns.items()}, report
