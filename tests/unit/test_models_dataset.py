"""Time-based and stratified splits, the feature encoder and flat-file reading."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pyarrow as pa
import pytest

from models.dataset import (
    DatasetError,
    FeatureEncoder,
    TimeUnknownWarning,
    read_flat_file,
    stratified_split,
    time_split,
)

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def stacked(n_snapshots: int = 6, per: int = 200, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = n_snapshots * per
    as_of = np.repeat([T0 + dt.timedelta(days=14 * i) for i in range(n_snapshots)], per)
    x = rng.normal(size=rows)
    return pa.table(
        {
            "lead_id": [f"salesforce:{i % per}" for i in range(rows)],
            "as_of": pa.array(as_of, pa.timestamp("us", tz="UTC")),
            "x": x,
            "industry": rng.choice(["software", "retail", "mystery"], size=rows),
            "label": (rng.random(rows) < 1 / (1 + np.exp(2 - x))).astype(np.int8),
        }
    )


def test_time_split_never_mixes_snapshots_and_puts_the_newest_last():
    split = time_split(stacked())
    parts = {name: set(t.column("as_of").to_pylist()) for name, t in split.parts().items()}
    assert max(parts["train"]) < min(parts["valid"]) < min(parts["calib"]) < min(parts["test"])
    assert sum(len(v) for v in parts.values()) == 6  # each snapshot in exactly one part
    assert split.describe()["test"]["rows"] == 200


def test_time_split_embargo_drops_training_snapshots_whose_labels_reach_the_holdout():
    split = time_split(stacked(8), embargo_days=1, horizon_days=28)
    train_times = set(split.train.column("as_of").to_pylist())
    first_valid = min(split.valid.column("as_of").to_pylist())
    assert all(t + dt.timedelta(days=28) <= first_valid - dt.timedelta(days=1) for t in train_times)


def test_time_split_needs_enough_snapshots():
    with pytest.raises(DatasetError, match="at least 4 snapshots"):
        time_split(stacked(3))


def test_stratified_split_warns_that_time_is_unknown_and_keeps_the_rate():
    table = stacked(1, 2000).drop_columns(["as_of"])
    with pytest.warns(TimeUnknownWarning, match="no time column"):
        split = stratified_split(table, seed=1)
    rates = [np.mean(t.column("label").to_numpy()) for t in split.parts().values()]
    assert max(rates) - min(rates) < 0.02
    assert sum(t.num_rows for t in split.parts().values()) == 2000


def test_encoder_uses_the_spec_vocabulary_and_nan_for_unseen_values():
    enc = FeatureEncoder.from_spec()
    from features.spec import CATEGORIES

    row = {name: None for name in enc.features}
    row.update({"industry": "retail", "region": "not-a-region", "n_events_7d": 3})
    X = enc.transform([row])
    j = enc.features.index
    assert X[0, j("industry")] == CATEGORIES["industry"].index("retail")
    assert np.isnan(X[0, j("region")])
    assert X[0, j("n_events_7d")] == 3.0
    assert enc.decode("industry", X[0, j("industry")]) == "retail"
    with pytest.raises(DatasetError, match="no column 'industry'"):
        enc.transform(pa.table({"x": [1.0]}))


def test_encoder_infers_categories_of_a_flat_table():
    enc = FeatureEncoder.infer(stacked(), exclude=["x"])
    assert enc.features == ("industry",) and enc.categories["industry"] == ("mystery", "retail", "software")


def test_flat_file_labels_and_errors(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text('"a";"b";"y"\n1;"x";"yes"\n2;"z";"no"\n')
    table = read_flat_file(path, "y", drop=["a"])
    assert table.column_names == ["b", "label"] and table.column("label").to_pylist() == [1, 0]
    path.write_text("a,y\n1,yes\n2,maybe\n")
    with pytest.raises(DatasetError, match=r"row 3, column 'y': label 'maybe'"):
        read_flat_file(path, "y")
    with pytest.raises(DatasetError, match="cannot drop unknown column"):
        read_flat_file(path, "y", drop=["nope"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetError, match="no label column 'z'"):
            read_flat_file(path, "z")
