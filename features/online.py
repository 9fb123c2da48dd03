"""The hot path: the features of a few leads from their recent events, exactly as the batch computes them.

There is no second implementation here: the leads (and, for account context, the other leads
of their company domain) go through the very functions the batch builder uses
(:func:`features.build.encode_events`, :func:`features.build.compute_features` via
:func:`features.build.feature_columns`, :func:`features.parse.fit_features`), just with a
handful of rows. A lead scored online and in batch at the same as-of time therefore gets the
same feature values, bit for bit (tested on 1,000 leads of the simulated world).

:func:`many_lead_features` featurises several independent requests in ONE pass of that code,
which is what lets the service coalesce concurrent requests (the fixed cost of the Arrow and
NumPy calls, most of a one-lead pass, is paid once per batch). Each request keeps its own
universe: its lead_ids, event_ids and account domains are prefixed with the request's number
before they meet the shared code, so two requests never see each other's leads, events or
account peers, even when they name the same lead. :func:`lead_features` is a batch of one.

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
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
#: Prefixes keep requests apart inside one batch; no CRM id or domain holds this character.
_SEP = "\x1f"


@dataclass(frozen=True)
class OnlineInput:
    """One lead to featurise with what is known of it (see :func:`lead_features`)."""

    lead: Mapping[str, Any]
    events: Rows | None = None
    status_history: Rows | None = None
    peers: Rows | None = None
    peer_events: Rows | None = None


@dataclass
class FeatureRows:
    """Feature columns of a batch and, per input, its row in them or why it has none."""

    columns: dict[str, pa.Array | np.ndarray]
    rows: list[int | FeatureInputError]
    report: DataQualityReport

    def values(self, i: int) -> dict[str, Any]:
        """Input ``i``'s feature values (name -> value, None where missing); raises its error."""
        row = self.rows[i]
        if isinstance(row, FeatureInputError):
            raise row
        return {name: value_at(column, row) for name, column in self.columns.items()}


@lru_cache(maxsize=8)
def _empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()  # Arrow tables are immutable: one empty table per schema serves all


def _prefixed(table: pa.Table, prefix: str, id_fields: tuple[str, ...]) -> pa.Table:
    for name in id_fields:
        i = table.schema.get_field_index(name)
        joined = pc.binary_join_element_wise(pa.scalar(prefix), table.column(name), "")
        table = table.set_column(i, table.schema.field(i), joined)  # the contract's field (nullability)
    return table


def _gather(parts: list[tuple[str, Rows | None]], schema: pa.Schema, id_fields: tuple[str, ...]) -> pa.Table:
    """One table of every part's rows, in order, their ``id_fields`` prefixed with the part's prefix.

    Runs of row mappings are gathered column by column into one table (much cheaper than
    ``from_pylist`` over dicts); an Arrow table is prefixed with one compute call."""
    tables: list[pa.Table] = []
    columns: dict[str, list[Any]] = {}

    def flush() -> None:
        if columns:
            arrays = [pa.array(columns[f.name], f.type) for f in schema]
            tables.append(pa.Table.from_arrays(arrays, schema=schema))
            columns.clear()

    for prefix, rows in parts:
        if rows is None:
            continue
        if isinstance(rows, pa.Table):
            if rows.num_rows:
                flush()
                tables.append(_prefixed(rows.select(schema.names).cast(schema), prefix, id_fields))
            continue
        if not rows:
            continue
        for name in schema.names:
            values = [row.get(name) for row in rows]
            if name in id_fields:
                values = [None if v is None else prefix + str(v) for v in values]
            columns.setdefault(name, []).extend(values)
    flush()
    if not tables:
        return _empty(schema)
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


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


def _fit_columns(leads: pa.Table, report: DataQualityReport, prefixes: list[str]) -> dict[str, pa.Array]:
    """Fit columns of ``leads`` (cached per profile); the account domain carries the row's prefix."""
    rows = []
    profiles = zip(*(leads.column(name).to_pylist() for name in PROFILE_FIELDS), strict=True)
    for profile in profiles:
        row, row_report = _fit_of(profile)
        report.merge(row_report)
        rows.append(row)
    out = {name: pa.array([r[name] for r in rows], _FIT_TYPES.get(name, pa.string())) for name in rows[0]}
    out["_account_domain"] = pa.array(
        [
            None if r["_account_domain"] is None else p + r["_account_domain"]
            for r, p in zip(rows, prefixes, strict=True)
        ],
        pa.string(),
    )
    return out


def many_lead_features(inputs: Sequence[OnlineInput], as_of: dt.datetime) -> FeatureRows:
    """Features of every input's lead at ``as_of``, in one pass of the batch code.

    Each input is featurised as if alone (its own peers and events only). An input whose lead
    was created at or after ``as_of`` gets a FeatureInputError in :attr:`FeatureRows.rows`
    instead of a row; the others are unaffected.
    """
    as_of_us = to_us(as_of)
    prefixes = [f"{k}{_SEP}" for k in range(len(inputs))]
    lead_parts: list[tuple[str, Rows | None]] = []
    for prefix, item in zip(prefixes, inputs, strict=True):
        lead_parts += [(prefix, [item.lead]), (prefix, item.peers)]
    leads = _gather(lead_parts, LEADS, ("lead_id",))
    # the row of each input's own lead: its peers follow it
    sizes = [1 + (0 if item.peers is None else len(item.peers)) for item in inputs]
    first = np.cumsum([0, *sizes[:-1]])
    row_prefix = [p for p, n in zip(prefixes, sizes, strict=True) for _ in range(n)]
    created = leads.column("created_at").cast(pa.int64()).fill_null(as_of_us).to_numpy()
    known = created < as_of_us
    late = {
        k: FeatureInputError(
            f"lead {item.lead.get('lead_id')!r}: created_at {item.lead.get('created_at')} "
            f"is not before as_of {as_of.isoformat()}; it has no features yet"
        )
        for k, item in enumerate(inputs)
        if not known[first[k]]
    }
    if late:  # featurise the others without them; the late ones keep their error
        rest = [item for k, item in enumerate(inputs) if k not in late]
        inner = (
            many_lead_features(rest, as_of)
            if rest
            else FeatureRows({}, [], DataQualityReport(as_of=as_of.isoformat()))
        )
        others = iter(inner.rows)
        rows = [late[k] if k in late else next(others) for k in range(len(inputs))]
        return FeatureRows(inner.columns, rows, inner.report)
    report = DataQualityReport(as_of=as_of.isoformat())
    report.leads_read, report.leads_known = leads.num_rows, int(known.sum())
    index = LeadIndex(leads.column("lead_id"), known)
    event_parts: list[tuple[str, Rows | None]] = []
    for prefix, item in zip(prefixes, inputs, strict=True):
        event_parts += [(prefix, item.events), (prefix, item.peer_events)]
    event_table = _gather(event_parts, ACTIVITIES, ("lead_id", "event_id"))
    encoded = (
        encode_events(event_table, index, as_of_us, report) if event_table.num_rows else EncodedEvents.empty()
    )
    encoded = drop_duplicates(encoded, report)
    report.events_used = len(encoded.t)
    all_known = bool(index.known.all())
    known_leads = leads if all_known else leads.filter(pa.array(index.known))
    known_prefix = row_prefix if all_known else [p for p, k in zip(row_prefix, index.known, strict=True) if k]
    status = _gather(
        [(p, item.status_history) for p, item in zip(prefixes, inputs, strict=True)],
        LEAD_STATUS_HISTORY,
        ("lead_id",),
    )
    columns = feature_columns(
        known_leads,
        encoded,
        index,
        status,
        as_of_us,
        report,
        fit=_fit_columns(known_leads, report, known_prefix),
    )
    return FeatureRows(columns, [int(index.position[r]) for r in first], report)


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
    out = many_lead_features([OnlineInput(lead, events, status_history, peers, peer_events)], as_of)
    return out.values(0), out.report
