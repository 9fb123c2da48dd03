"""Flat-file source: CSV or Parquet exports mapped onto a canonical table.

A mapping names, for each canonical column, where its value comes from:

* ``"column"``: a column of the file;
* ``"=text"``: a literal;
* ``"{a}:{b}"``: a template over file columns (``{#row}`` is the row number in the file);
* ``{"column": "y", "map": {"yes": true, "no": false}}``: a column with its values mapped.

Files are read in name order; the watermark is the last file name read, so each new export
dropped into the directory is extracted once (a rerun of a run date returns its partition).
:data:`WEB_TRACKING_MAPPING` reads the sandbox's web-tracking export; :data:`BANK_MARKETING_MAPPING`
maps the UCI bank-marketing CSV (``;``-separated) onto raw leads.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIVITIES, RAW_LEADS, conform
from features.lake import Lake
from plugins.crm.base import ConnectorError, ExtractResult, Page, extract_table
from plugins.crm.fields import WEB_TRACKING_MAPPING
from plugins.crm.retry import CallStats
from plugins.crm.state import ConnectorState

_FIELD = re.compile(r"\{([^{}]+)\}")

#: The UCI bank-marketing campaign file as raw leads (a phone campaign's contacts).
BANK_MARKETING_MAPPING: dict[str, Any] = {
    "lead_id": "file:bank-{#row}",
    "source": "=file",
    "crm_id": "bank-{#row}",
    "created_at": "=2008-05-01T00:00:00+00:00",
    "updated_at": "=2008-05-01T00:00:00+00:00",
    "first_name": "=",
    "last_name": "=",
    "email": "=",
    "phone": "=",
    "company": "=",
    "company_domain": "=",
    "industry": "=",
    "employees": "=",
    "annual_revenue": "=",
    "country": "=PT",
    "title": "job",
    "lead_source": "=Outbound",
    "status": {"column": "y", "map": {"yes": "converted", "no": "open"}},
    "converted": {"column": "y", "map": {"yes": True, "no": False}},
    "converted_at": "=",
    "consent_processing": "=true",
    "opted_out": "=false",
}


@dataclass
class FlatFileSource:
    """One kind of export file under ``directory`` (``pattern`` picks the files)."""

    directory: Path
    table: str
    mapping: Mapping[str, Any]
    state: ConnectorState
    pattern: str = "*.csv"
    name: str = "file.export"
    delimiter: str = ","
    stats: CallStats = field(default_factory=CallStats)
    source: str = "file"

    def __post_init__(self) -> None:
        schema = _schema(self.table)
        missing = [c for c in schema.names if c not in self.mapping]
        unknown = [c for c in self.mapping if c not in schema.names]
        if missing or unknown:
            raise ConnectorError(
                f"flat-file mapping {self.name}: "
                + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"unknown {', '.join(unknown)}" if unknown else "")
            )

    def files(self) -> list[Path]:
        return sorted(
            p for p in Path(self.directory).glob(self.pattern) if p.is_file() and not p.name.startswith(".")
        )

    def read(self, path: Path) -> pa.Table:
        """Map one file onto the canonical table (errors name the file, row and column)."""
        raw = _read(path, self.delimiter)
        columns: dict[str, Any] = {}
        for target, spec in self.mapping.items():
            try:
                columns[target] = _column(raw, spec)
            except KeyError as exc:
                raise ConnectorError(
                    f"{path.name}: mapping of {target!r} needs column {exc.args[0]!r}, "
                    f"which the file lacks (it has {', '.join(raw.column_names)})"
                ) from None
        table = pa.table(columns)
        schema = _schema(self.table)
        for f in schema:
            if table[f.name].type != f.type:
                table = table.set_column(
                    table.schema.get_field_index(f.name), f.name, _cast(table[f.name], f, path)
                )
        return conform(table, schema)

    def pages(self, since: str | None, resume: dict[str, Any] | None) -> Iterator[Page]:
        for path in self.files():
            if since is not None and path.name < since:
                continue
            rows = self.read(path)
            self.stats.calls += 1
            yield Page(rows, [path.name] * rows.num_rows, [path.name] * rows.num_rows, {"file": path.name})

    def extract(self, lake: Lake, run_date: dt.date, *, full_refresh: bool = False) -> list[ExtractResult]:
        return [
            extract_table(
                self.state,
                lake,
                self.source,
                self.table,
                [self],
                run_date,
                full_refresh=full_refresh,
                stats=self.stats,
            )
        ]


def web_tracking_source(directory: Path, state: ConnectorState) -> FlatFileSource:
    """The web-tracking export of Salesforce orgs (source 'file'), as ACTIVITIES."""
    return FlatFileSource(directory, "activities", WEB_TRACKING_MAPPING, state, name="file.web_tracking")


def _schema(table: str) -> pa.Schema:
    if table == "raw_leads":
        return RAW_LEADS
    if table == "activities":
        return ACTIVITIES
    raise ConnectorError(f"flat files map to raw_leads or activities, not {table!r}")


def _read(path: Path, delimiter: str) -> pa.Table:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )


def _column(raw: pa.Table, spec: Any) -> pa.Array | pa.ChunkedArray:
    n = raw.num_rows
    for name in (
        _FIELD.findall(spec)
        if isinstance(spec, str) and "{" in spec
        else ([spec["column"]] if isinstance(spec, Mapping) else [] if str(spec).startswith("=") else [spec])
    ):
        if name != "#row" and name not in raw.column_names:
            raise KeyError(name)
    if isinstance(spec, Mapping):
        values = raw[spec["column"]].to_pylist()
        mapping = spec.get("map")
        return pa.array([mapping.get(v, v) if mapping else v for v in values])
    if not isinstance(spec, str):
        raise ConnectorError(f"unsupported mapping spec {spec!r}")
    if spec.startswith("="):
        literal = spec[1:]
        return pa.nulls(n, pa.string()) if literal == "" else pa.array([literal] * n, pa.string())
    if "{" in spec:
        parts: list[Any] = []
        pos = 0
        for m in _FIELD.finditer(spec):
            if m.start() > pos:
                parts.append(pa.scalar(spec[pos : m.start()]))
            name = m.group(1)
            col = pa.array([str(i) for i in range(n)]) if name == "#row" else pc.cast(raw[name], pa.string())
            parts.append(col)
            pos = m.end()
        if pos < len(spec):
            parts.append(pa.scalar(spec[pos:]))
        return pc.binary_join_element_wise(*parts, "")
    return raw[spec]


def _cast(column: Any, target: pa.Field, path: Path) -> Any:
    col = column
    try:
        if pa.types.is_timestamp(target.type) and pa.types.is_string(col.type):
            naive = pc.cast(pc.replace_substring_regex(col, r"(\+00:?00|Z)$", ""), pa.timestamp("us"))
            return pc.assume_timezone(naive, "UTC")
        if pa.types.is_boolean(target.type) and pa.types.is_string(col.type):
            lowered = pc.utf8_lower(col)
            return pc.if_else(pc.is_null(lowered), pa.scalar(None, pa.bool_()), pc.equal(lowered, "true"))
        return col.cast(target.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConnectorError(
            f"{path.name}: column {target.name}: cannot read {col.type} as {target.type}: {exc}"
        ) from None
