"""Training data for the scoring model: time-based splits and one numeric encoding.

**Splits.** Stacked snapshots are split by snapshot time, never by random rows: the oldest
snapshots train, the next newer one validates (early stopping, the hyperparameter search and
the choice between LightGBM and the logistic baseline), the next calibrates and the newest is
the test holdout (the gate compares champion and challenger on it). A row of lead X at T1 in
training and the same lead at T2 in the test is fine (it is how scoring meets leads); rows of
the *same* snapshot on both sides are not. ``embargo_days`` > 0 additionally drops training
snapshots whose label window reaches into the holdout (purging; the retraining job's default,
see :class:`pipelines.retrain.RunOptions`), so validation measures what the model will see:
leads whose outcome it has not been shown.

Flat files: a time column (named, or the one date/datetime column filled on nearly every
row) gives a time-ordered split (:func:`ordered_split`: oldest rows train, newest test, rows of
one instant never on both sides) and date-part features (:func:`add_date_parts`). Only a
file without any time gets a stratified random split, with a warning saying so.

**Missing is missing.** Text cells that are empty or a placeholder (:data:`MISSING_TOKENS`:
``""``, ``"Select"``, ``"NA"``, ...) are read as null, not as a category of their own, so
the leakage audit can see how often a column is really filled.

**Encoding.** :class:`FeatureEncoder` turns a feature table into a float64 NumPy matrix:
numbers as they are (NaN for missing), categories as their index in a fixed vocabulary
(:mod:`features.spec` categories for CRM features, the training values for flat files), NaN
for an unseen value. LightGBM reads those indices as categorical features; scoring uses the
same encoder, so training and scoring cannot disagree on a code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LABEL = "label"
TIME = "as_of"
KEY = "lead_id"


class DatasetError(ValueError):
    """Training data ProX cannot use; the message names the column or snapshot."""


class TimeUnknownWarning(UserWarning):
    """A flat file has no time column: the split is random and the estimate optimistic."""


#: Text read as "empty" in flat files (compared trimmed and lower-cased); configurable per call.
MISSING_TOKENS: tuple[str, ...] = (
    "",
    "select",
    "na",
    "n/a",
    "#n/a",
    "nan",
    "null",
    "none",
    "-",
    "--",
    "?",
    "not specified",
    "not provided",
    "not available",
    "(blank)",
)


def is_temporal(typ: pa.DataType) -> bool:
    """Dates and timestamps."""
    return pa.types.is_date(typ) or pa.types.is_timestamp(typ)


# ---- encoding ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureEncoder:
    """Feature names, which are categorical, and each category vocabulary (JSON-serialisable)."""

    features: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f in self.categories]

    @classmethod
    def from_spec(cls, exclude: Sequence[str] = ()) -> FeatureEncoder:
        """The encoder of the CRM feature table (:data:`features.spec.FEATURES`)."""
        from features.spec import FEATURES

        feats = tuple(f.name for f in FEATURES if f.name not in set(exclude))
        cats = {
            f.name: tuple(f.categories or ()) for f in FEATURES if f.dtype == "category" and f.name in feats
        }
        return cls(feats, cats)

    @classmethod
    def infer(cls, table: pa.Table, exclude: Sequence[str] = ()) -> FeatureEncoder:
        """An encoder for an arbitrary table: text columns become categories (sorted values)."""
        skip = set(exclude) | {LABEL, KEY, TIME}
        feats, cats = [], {}
        for name in table.column_names:
            if name in skip:
                continue
            typ = table.schema.field(name).type
            if (
                pa.types.is_string(typ)
                or pa.types.is_large_string(typ)
                or pa.types.is_dictionary(typ)
                or pa.types.is_boolean(typ)
            ):
                values = pc.unique(table.column(name).cast(pa.string())).drop_null().to_pylist()
                cats[name] = tuple(sorted(values))
            elif is_temporal(typ):
                raise DatasetError(
                    f"column {name!r} is a date: name it as the time column, or turn it into date parts "
                    f"(models.dataset.add_date_parts) before encoding"
                )
            elif not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
                raise DatasetError(f"column {name!r}: type {typ} is neither numeric nor text; drop it")
            feats.append(name)
        if not feats:
            raise DatasetError("no feature columns left after dropping the label and --drop columns")
        return cls(tuple(feats), cats)

    def transform(self, table: pa.Table | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Float64 matrix (rows x features); missing columns are an error naming the column."""
        if not isinstance(table, pa.Table):
            rows = [table] if isinstance(table, Mapping) else list(table)
            table = pa.Table.from_pylist([{f: r.get(f) for f in self.features} for r in rows])
        out = np.empty((table.num_rows, len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            if name not in table.column_names:
                raise DatasetError(f"feature table has no column {name!r} (the model needs it)")
            col = table.column(name)
            if name in self.categories:
                text = col.cast(pa.string()) if not pa.types.is_string(col.type) else col
                codes = pc.index_in(text, value_set=pa.array(self.categories[name], pa.string()))
                out[:, j] = codes.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
            else:
                if pa.types.is_null(col.type):
                    out[:, j] = np.nan
                    continue
                try:
                    values = col.cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise DatasetError(
                        f"feature {name!r}: values of type {col.type} are not numeric"
                    ) from None
                out[:, j] = values.fill_null(np.nan).to_numpy(zero_copy_only=False)
        return out

    def decode(self, name: str, value: float) -> Any:
        """The readable value of feature ``name`` from its encoded ``value`` (for reasons)."""
        if name in self.categories:
            if value is None or np.isnan(value):
                return "unknown"
            return self.categories[name][int(value)]
        return value

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        return cls(tuple(data["features"]), {k: tuple(v) for k, v in data["categories"].items()})


# ---- splits -----------------------------------------------------------------------------------
@dataclass
class Split:
    """Train / validation / calibration / test parts, each an Arrow table with ``label``."""

    train: pa.Table
    valid: pa.Table
    calib: pa.Table
    test: pa.Table
    kind: str  # "time" or "stratified"
    windows: dict[str, Any] = field(default_factory=dict)  # part -> snapshot times or sizes

    def parts(self) -> dict[str, pa.Table]:
        return {"train": self.train, "valid": self.valid, "calib": self.calib, "test": self.test}

    def describe(self) -> dict[str, Any]:
        """Rows, positives and windows of each part (for the model card and MLflow params)."""
        out: dict[str, Any] = {"kind": self.kind}
        for name, part in self.parts().items():
            y = labels(part)
            out[name] = {"rows": len(y), "positives": int(y.sum()), "window": self.windows.get(name)}
        return out


def labels(table: pa.Table) -> np.ndarray:
    """The label column as 0/1 int8 (nulls are an error naming the column)."""
    if LABEL not in table.column_names:
        raise DatasetError(f"training table has no {LABEL!r} column")
    col = table.column(LABEL)
    if col.null_count:
        raise DatasetError(f"column {LABEL!r}: {col.null_count} rows have no label")
    return col.cast(pa.int8()).to_numpy(zero_copy_only=False).astype(np.int8)


def time_split(
    table: pa.Table,
    *,
    valid_snapshots: int = 1,
    calib_snapshots: int = 1,
    test_snapshots: int = 1,
    embargo_days: float = 0.0,
    horizon_days: float = 0.0,
) -> Split:
    """Split stacked snapshots by time: oldest train, then validation, calibration, newest test.

    ``embargo_days`` > 0 drops training snapshots with ``as_of + horizon_days`` later than
    ``embargo_days`` before the first holdout snapshot (labels must be known when the holdout
    starts). Fails, naming the counts, when too few snapshots remain for training.
    """
    if TIME not in table.column_names:
        raise DatasetError(f"training table has no {TIME!r} column; use a flat-file split instead")
    times = sorted(pc.unique(table.column(TIME)).to_pylist())
    held = valid_snapshots + calib_snapshots + test_snapshots
    if len(times) < held + 1:
        raise DatasetError(f"time split needs at least {held + 1} snapshots, the table has {len(times)}")
    train_t = times[: len(times) - held]
    valid_t = times[len(train_t) : len(train_t) + valid_snapshots]
    calib_t = times[len(train_t) + valid_snapshots : len(times) - test_snapshots]
    test_t = times[len(times) - test_snapshots :]
    if embargo_days > 0:
        limit = valid_t[0] - dt.timedelta(days=embargo_days)
        train_t = [t for t in train_t if t + dt.timedelta(days=horizon_days) <= limit] or []
        if not train_t:
            raise DatasetError(
                f"embargo of {embargo_days} days leaves no training snapshot before {valid_t[0]}"
            )

    def pick(ts: list[dt.datetime]) -> pa.Table:
        return table.filter(
            pc.is_in(table.column(TIME), value_set=pa.array(ts, table.schema.field(TIME).type))
        )

    windows = {
        name: [t.isoformat() for t in ts]
        for name, ts in (("train", train_t), ("valid", valid_t), ("calib", calib_t), ("test", test_t))
    }
    split = Split(pick(train_t), pick(valid_t), pick(calib_t), pick(test_t), "time", windows)
    for name, part in split.parts().items():
        y = labels(part)
        if y.sum() == 0 or y.sum() == len(y):
            raise DatasetError(f"time split: the {name} part ({windows[name]}) holds only one class")
    return split


def stratified_split(
    table: pa.Table, *, seed: int = 7, fractions: tuple[float, float, float, float] = (0.6, 0.15, 0.1, 0.15)
) -> Split:
    """Random split with the same positive rate in every part (for data without time)."""
    warnings.warn(
        "the data has no time column: using a stratified random split, so the holdout is not "
        "'the future' and the estimate is optimistic if the data drifts",
        TimeUnknownWarning,
        stacklevel=2,
    )
    y = labels(table)
    rng = np.random.default_rng(seed)
    part = np.empty(len(y), dtype=np.int8)
    bounds = np.cumsum(fractions) / sum(fractions)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        cuts = np.round(bounds * len(idx)).astype(int)
        for k, (lo, hi) in enumerate(zip(np.r_[0, cuts[:-1]], cuts, strict=True)):
            part[idx[lo:hi]] = k
    pieces = [table.filter(pa.array(part == k)) for k in range(4)]
    sizes = {name: int((part == k).sum()) for k, name in enumerate(("train", "valid", "calib", "test"))}
    return Split(*pieces, kind="stratified", windows={k: f"random {v} rows" for k, v in sizes.items()})


# ---- flat files -------------------------------------------------------------------------------
def read_flat_file(
    path: Path | str,
    label: str,
    drop: Sequence[str] = (),
    *,
    missing_tokens: Sequence[str] = MISSING_TOKENS,
) -> pa.Table:
    """A CSV (``,`` or ``;`` separated, sniffed) as a table with a 0/1 ``label`` column.

    The label column may be 0/1, true/false or yes/no; anything else is an error naming the
    value. ``drop`` removes columns that must not be used (e.g. ones known only afterwards).
    Text cells in ``missing_tokens`` (trimmed, any case) become null; a text column whose
    remaining values are all numbers becomes numeric. Date columns stay dates.
    """
    import pyarrow.csv as pcsv

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"flat file not found: {path}")
    with path.open() as handle:
        header = handle.readline()
    delimiter = ";" if header.count(";") > header.count(",") else ","
    table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    if label not in table.column_names:
        raise DatasetError(
            f"{path.name}: no label column {label!r}; columns are {', '.join(table.column_names)}"
        )
    missing = [c for c in drop if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path.name}: cannot drop unknown column(s) {', '.join(missing)}")
    raw = table.column(label).cast(pa.string())
    text = pc.utf8_lower(pc.utf8_trim_whitespace(raw)).to_pylist()
    mapping = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0, "y": 1, "n": 0}
    values = []
    for i, v in enumerate(text):
        if v not in mapping:
            raise DatasetError(
                f"{path.name}: row {i + 2}, column {label!r}: label {v!r} is not 0/1, yes/no or true/false"
            )
        values.append(mapping[v])
    table = table.drop_columns([label, *drop])
    table = nullify_placeholders(table, missing_tokens)
    return table.append_column(LABEL, pa.array(values, pa.int8()))


def nullify_placeholders(table: pa.Table, tokens: Sequence[str] = MISSING_TOKENS) -> pa.Table:
    """Text cells equal to a placeholder (trimmed, any case) become null; text columns left
    with only numbers become float64."""
    wanted = pa.array(sorted({t.strip().lower() for t in tokens}), pa.string())
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        col = col.cast(pa.string())
        key = pc.utf8_lower(pc.utf8_trim_whitespace(col))
        col = pc.if_else(pc.is_in(key, value_set=wanted), pa.scalar(None, pa.string()), col)
        if col.null_count < len(col):
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
        table = table.set_column(i, name, col)
    return table


# ---- time in flat files ------------------------------------------------------------------------
def date_columns(table: pa.Table) -> list[str]:
    """The date and timestamp columns of ``table``, in order."""
    return [f.name for f in table.schema if is_temporal(f.type)]


def detect_time_column(
    table: pa.Table, requested: str | None = None, max_null_share: float = 0.01
) -> str | None:
    """The time column: ``requested`` (must be a date/datetime column, or text that parses as
    one), else the date column filled on nearly every row (the emptiest-free, then leftmost
    one when several qualify), else None. A date filled only for some rows (a "converted on"
    date) is never picked: it is a feature to audit, not the time of the row."""
    if requested is not None:
        if requested not in table.column_names:
            raise DatasetError(f"no time column {requested!r}; columns are {', '.join(table.column_names)}")
        return requested
    candidates = []
    for k, name in enumerate(date_columns(table)):
        col = table.column(name)
        share = col.null_count / max(len(col), 1)
        if share <= max_null_share:
            candidates.append((share, k, name))
    return min(candidates)[2] if candidates else None


def as_timestamp(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """A date, timestamp or ISO-text column as UTC microsecond timestamps."""
    typ = pa.timestamp("us", tz="UTC")
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            return pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC")
        return column.cast(typ)
    if pa.types.is_date(column.type):
        return pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            return pc.assume_timezone(pc.strptime(column, "%Y-%m-%d", "us", error_is_null=False), "UTC")
        except pa.ArrowInvalid:
            pass
        try:
            return column.cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    raise DatasetError(f"column {name!r} ({column.type}) is not a date or datetime")


def add_date_parts(table: pa.Table, time_column: str | None) -> pa.Table:
    """Replace every date column by date parts: ``<col>_month`` (1-12), ``<col>_weekday``
    (0 = Monday) and, for dates other than the time column, ``<col>_age_days`` = days from
    that date to the row's time (the age of an account or a first visit when the row is
    dated; point-in-time, so it can be computed the same way at scoring). The time column
    itself stays (as UTC timestamps) for the split and is not a feature."""
    names = date_columns(table)
    if time_column is not None:
        table = table.set_column(
            table.column_names.index(time_column),
            time_column,
            as_timestamp(table.column(time_column), time_column),
        )
        names = [n for n in names if n != time_column]
    when = table.column(time_column) if time_column else None
    for name in [*([time_column] if time_column else []), *names]:
        ts = as_timestamp(table.column(name), name)
        parts = {
            f"{name}_month": pc.month(ts).cast(pa.int8()),
            f"{name}_weekday": pc.day_of_week(ts).cast(pa.int8()),
        }
        if when is not None and name != time_column:
            micros = pc.subtract(when.cast(pa.int64()), ts.cast(pa.int64()))
            parts[f"{name}_age_days"] = pc.divide(micros.cast(pa.float64()), 86_400e6)
        for part, values in parts.items():
            if part in table.column_names:
                raise DatasetError(f"date part {part!r} clashes with an existing column")
            table = table.append_column(part, values)
        if name != time_column:
            table = table.drop_columns([name])
    return table


def ordered_split(
    table: pa.Table, time_column: str, fractions: tuple[float, float, float, float] = (0.6, 0.15, 0.1, 0.15)
) -> Split:
    """Split rows by their time: oldest train, then validation, calibration, newest test.

    Rows of one instant stay in one part. Fails, naming the part, when a part is empty or
    holds one class only, and when the time column has empty cells.
    """
    col = table.column(time_column)
    if col.null_count:
        raise DatasetError(f"time column {time_column!r}: {col.null_count} rows have no time")
    t = col.cast(pa.int64()).to_numpy()
    order = np.argsort(t, kind="stable")
    ts = t[order]
    bounds = np.cumsum(fractions) / sum(fractions)
    cuts = []
    for b in bounds[:-1]:
        k = round(b * len(ts))
        k = int(np.searchsorted(ts, ts[min(k, len(ts) - 1)], side="left")) if k < len(ts) else len(ts)
        cuts.append(k)
    edges = [0, *cuts, len(ts)]
    names = ("train", "valid", "calib", "test")
    pieces, windows = [], {}
    for k, name in enumerate(names):
        rows = order[edges[k] : edges[k + 1]]
        if rows.size == 0:
            raise DatasetError(
                f"time split on {time_column!r}: the {name} part is empty (too few distinct times)"
            )
        part = table.take(pa.array(np.sort(rows)))
        y = labels(part)
        first = pc.min(part.column(time_column)).as_py()
        last = pc.max(part.column(time_column)).as_py()
        windows[name] = f"{first.isoformat()} .. {last.isoformat()}"
        if y.sum() == 0 or y.sum() == len(y):
            raise DatasetError(f"time split: the {name} part ({windows[name]}) holds only one class")
        pieces.append(part)
    return Split(*pieces, kind="time", windows=windows)


def table_digest(table: pa.Table) -> str:
    """SHA-256 of a table's content (Arrow IPC stream of its rows in order): the same rows,
    columns and types give the same digest whatever file they came from."""
    import hashlib

    import pyarrow.ipc as ipc

    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def digest_dir(path: Path | str) -> str:
    """SHA-256 over the ``part-*.parquet`` files of a lake partition, in name order: the
    digest the lake's manifest records, recomputed from what is on disk now."""
    import hashlib

    files = sorted(Path(path).glob("part-*.parquet"))
    if not files:
        raise DatasetError(f"no data files in {path}")
    h = hashlib.sha256()
    for file in files:
        h.update(file.read_bytes())
    return h.hexdigest()


def digest_file(path: Path | str) -> str:
    """SHA-256 of a file's bytes (lineage for MLflow)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
