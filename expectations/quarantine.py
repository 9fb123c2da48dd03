"""The quarantine table: one row per (bad row, failed row-level check), PII masked.

Rows that fail a critical row-level check go to the lake's ``quarantine`` zone with the
record id, the expectation, the offending value and a reason in words; the rest go on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from expectations.results import mask_pii


def quarantine_table(
    dataset: str,
    table: pa.Table,
    bad_rows: Mapping[str, np.ndarray],
    key: str | None,
    pii: set[str],
    run_id: str,
    reference: dt.datetime,
) -> pa.Table:
    """One QUARANTINE row per (row, failed check) with the offending value (PII masked)."""
    from features.contract import QUARANTINE

    parts = []
    for label, idx in bad_rows.items():
        if not idx.size:
            continue
        columns = label[label.index("(") + 1 : -1].split(", ") if "(" in label else []
        expectation = label.split("(")[0]
        taken = pa.array(idx)
        record_ids = (
            _as_text(table.column(key).take(taken))
            if key and key in table.column_names
            else pa.nulls(idx.size, pa.string())
        )
        values = None
        for col in columns:
            text = _as_text(table.column(col).take(taken))
            if col in pii:
                text = pa.array([mask_pii(v) for v in text.to_pylist()], pa.string())
            if len(columns) > 1:
                text = pc.binary_join_element_wise(pa.scalar(f"{col}="), pc.fill_null(text, "null"), "")
            values = text if values is None else pc.binary_join_element_wise(values, text, "; ")
        if values is None:
            values = pa.nulls(idx.size, pa.string())
        n = idx.size
        parts.append(
            pa.table(
                {
                    "dataset": pa.array([dataset] * n, pa.string()),
                    "record_id": record_ids,
                    "column": pa.array([", ".join(columns) or None] * n, pa.string()),
                    "expectation": pa.array([expectation] * n, pa.string()),
                    "value": values,
                    "reason": pa.array([_REASONS.get(expectation, expectation)] * n, pa.string()),
                    "run_id": pa.array([run_id] * n, pa.string()),
                    "quarantined_at": pa.array([reference] * n, QUARANTINE.field("quarantined_at").type),
                },
                schema=QUARANTINE,
            )
        )
    if not parts:
        return QUARANTINE.empty_table()
    return pa.concat_tables(parts)


_REASONS: Final = {
    "expect_column_values_to_not_be_null": "null in a required column",
    "expect_column_values_to_be_unique": "duplicate id",
    "expect_compound_columns_to_be_unique": "duplicate key",
    "expect_column_values_to_match_regex": "malformed value",
    "expect_column_values_to_be_in_set": "unknown value",
    "expect_column_values_to_be_between": "value out of range",
    "expect_column_pair_values_a_to_be_greater_than_b": "dates in the wrong order",
}


def _as_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if pa.types.is_timestamp(column.type):
        seconds = pc.cast(column, pa.timestamp("s", tz="UTC"), safe=False)  # evidence needs no microseconds
        column = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
    elif not pa.types.is_string(column.type):
        column = (
            pc.cast(column, pa.string())
            if not pa.types.is_nested(column.type)
            else pa.array([None if v is None else json.dumps(v) for v in column.to_pylist()], pa.string())
        )
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
