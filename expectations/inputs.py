"""Inputs: the table to validate, from an Arrow table, a DataFrame, Parquet or CSV.

Types are taken as they come (validation must see wrong types, not have them fixed), and a
lake path names the partition (``source=...``, ``run_date=...``) the outputs go to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from expectations.suites import ValidationError


def read_input(table_or_path: Any, *, dataset: str, contract: str | None = None) -> pa.Table:
    """An Arrow table from a table, a DataFrame, a Parquet file/partition dir or a CSV file.

    Types are taken as they come (validation must see wrong types, not have them fixed);
    CSV text is cast to the contract's types where every value fits and left as text where
    not, so the type check can name the column.
    """
    if isinstance(table_or_path, pa.Table):
        return table_or_path
    if isinstance(table_or_path, str | Path):
        return _read_path(Path(table_or_path), dataset, contract)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(table_or_path, pd.DataFrame):
        return pa.Table.from_pandas(table_or_path, preserve_index=False)
    raise ValidationError(
        f"{dataset}: expected an Arrow table, a DataFrame or a path, got {type(table_or_path).__name__}"
    )


def _read_path(path: Path, dataset: str, contract: str | None) -> pa.Table:
    import pyarrow.parquet as pq

    if not path.exists():
        raise ValidationError(f"{dataset}: no such file or directory: {path}")
    try:
        if path.is_dir():
            manifest = path / "_manifest.json"
            if manifest.is_file():
                files = json.loads(manifest.read_text())["files"]
                return pa.concat_tables(pq.read_table(path / f, partitioning=None) for f in files)
            return pq.read_table(path, partitioning=None)
        if path.suffix.lower() in (".csv", ".txt"):
            return _read_csv(path, contract)
        return pq.read_table(path, partitioning=None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError(f"{dataset}: cannot read {path}: {exc}") from None


def _read_csv(path: Path, contract: str | None) -> pa.Table:
    import pyarrow.csv as pacsv

    from features.contract import schema_for

    header = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).column_names
    text = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
        ),
    )
    if not contract:
        return text
    schema = schema_for(contract)
    columns = []
    for name in text.column_names:
        column = text.column(name)
        if name in schema.names:
            target = schema.field(name).type
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = column.cast(target)  # else it stays text: the type expectation reports it
        columns.append(column)
    return pa.table(columns, names=text.column_names)


def partition_from_path(table_or_path: Any) -> tuple[str | None, dt.date | None]:
    if not isinstance(table_or_path, str | Path):
        return None, None
    text = str(table_or_path)
    source = re.search(r"source=([^/]+)", text)
    date = re.search(r"run_date=(\d{4}-\d{2}-\d{2})", text)
    return (source.group(1) if source else None, dt.date.fromisoformat(date.group(1)) if date else None)
