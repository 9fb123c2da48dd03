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

Flat files have no time; they get a stratified random split and a warning saying so.

**Encoding.** :class:`FeatureEncoder` turns a feature table into a float64 NumPy matrix:
numbers as they are (NaN for missing), categories as their index in a fixed vocabulary
(:mod:`features.spec` categories for CRM features, the training values for flat files), NaN
for an unseen value. LightGBM reads those indices as categorical features; scoring uses the
same encoder, so training and scoring cannot disagree on a code.
"""

from __future__ import annotations

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
def read_flat_file(path: Path | str, label: str, drop: Sequence[str] = ()) -> pa.Table:
    """A CSV (``,`` or ``;`` separated, sniffed) as a table with a 0/1 ``label`` column.

    The label column may be 0/1, true/false or yes/no; anything else is an error naming the
    value. ``drop`` removes columns that must not be used (e.g. ones known only afterwards).
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
    return table.append_column(LABEL, pa.array(values, pa.int8()))


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
