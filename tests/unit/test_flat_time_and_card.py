"""Flat files with time (detection, date parts, ordered split), lineage digests, user-named
segments and the model card's wording."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from models.dataset import (
    DatasetError,
    FeatureEncoder,
    add_date_parts,
    detect_time_column,
    digest_dir,
    ordered_split,
    read_flat_file,
    table_digest,
)
from models.evaluate import evaluate
from models.report import model_card

pytestmark = pytest.mark.unit


def dated_csv(tmp_path, n: int = 400):
    rng = np.random.default_rng(0)
    day0 = dt.date(2025, 1, 1)
    rows = ["created,signup,converted_on,x,plan,y"]
    for i in range(n):
        created = day0 + dt.timedelta(days=i // 2)
        signup = created - dt.timedelta(days=int(rng.integers(0, 300)))
        y = int(rng.random() < 0.3)
        converted = (created + dt.timedelta(days=5)).isoformat() if y else ""
        rows.append(f"{created},{signup},{converted},{rng.normal():.3f},{['a', 'b'][i % 2]},{y}")
    path = tmp_path / "dated.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_date_column_is_the_time_and_others_become_date_parts(tmp_path):
    table = read_flat_file(dated_csv(tmp_path), "y")
    assert pa.types.is_date(table.schema.field("created").type)
    # "converted_on" is empty for most rows: never taken for the time of the row
    assert detect_time_column(table) == "created"
    with pytest.raises(DatasetError, match="no time column 'nope'"):
        detect_time_column(table, "nope")
    with pytest.raises(DatasetError, match="is a date"):
        FeatureEncoder.infer(table)
    parts = add_date_parts(table, "created")
    names = set(parts.column_names)
    assert {
        "created_month",
        "created_weekday",
        "signup_month",
        "signup_age_days",
        "converted_on_age_days",
    } <= names
    assert "created_age_days" not in names and "signup" not in names and "created" in names
    age = parts.column("signup_age_days").to_numpy()
    assert age.min() >= 0 and age.max() < 300
    enc = FeatureEncoder.infer(parts, exclude=["created"])
    assert "created" not in enc.features and "created_month" in enc.features


def test_ordered_split_puts_the_newest_rows_last_and_keeps_an_instant_together(tmp_path):
    table = add_date_parts(read_flat_file(dated_csv(tmp_path), "y"), "created")
    split = ordered_split(table, "created")
    assert split.kind == "time"
    t = {k: part.column("created").cast(pa.int64()).to_numpy() for k, part in split.parts().items()}
    assert t["train"].max() < t["valid"].min() <= t["valid"].max() < t["calib"].min() < t["test"].min()
    assert sum(len(v) for v in t.values()) == table.num_rows
    assert " .. " in split.describe()["test"]["window"]


def test_content_digests_follow_content_not_files(tmp_path):
    import pyarrow.parquet as pq

    a = pa.table({"x": [1, 2, 3], "label": [0, 1, 0]})
    assert table_digest(a) == table_digest(pa.concat_tables([a.slice(0, 1), a.slice(1)]))
    assert table_digest(a) != table_digest(a.slice(1))
    (tmp_path / "p").mkdir()
    pq.write_table(a, tmp_path / "p" / "part-00000.parquet")
    first = digest_dir(tmp_path / "p")
    pq.write_table(a.slice(1), tmp_path / "p" / "part-00000.parquet")
    assert digest_dir(tmp_path / "p") != first
    with pytest.raises(DatasetError, match="no data files"):
        digest_dir(tmp_path)


def test_user_named_segments_and_not_measured():
    rng = np.random.default_rng(1)
    n = 4000
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.1, n), 0.01, 0.99)
    plan = np.where(np.arange(n) % 2 == 0, "gold", "basic")
    table = pa.table({"plan": plan, "label": y})
    ev = evaluate(y, p, table, segments=["plan"])
    assert set(ev.segment_gaps) == {"plan"} and ev.largest_gap["measured"]
    none = evaluate(y, p, table)
    assert none.segment_gaps == {} and not none.largest_gap["measured"]
    with pytest.raises(ValueError, match="'region' is not in the data"):
        evaluate(y, p, table, segments=["region"])


def card(**overrides):
    args = dict(
        model_name="m",
        kind="lightgbm",
        run_id="r1",
        split={"kind": "stratified", "train": {"rows": 10, "positives": 2, "window": "random 10 rows"}},
        metrics={"roc_auc": 0.8},
        baseline_metrics=None,
        segment_gaps={},
        largest_gap={"flagged": False, "measured": False},
        leakage=[],
        tiers={},
        oracle={},
        horizon_days=None,
        source="file:x.csv",
        code_version="abc",
        importance={},
        flat_file=True,
    )
    return model_card(**{**args, **overrides})


def test_the_card_says_random_split_and_not_measured_and_shows_leakage_evidence():
    text = card()
    assert "random part" in text and "newest data" not in text and "--time-column" in text
    assert "Segment gap not measured" in text and "0.0000" not in text
    timed = card(split={"kind": "time"}, time_column="created", segment_columns=["plan"])
    assert "newest data" in timed and "`created`" in timed and "no segment of plan" in timed
    finding = {
        "feature": "lead_quality",
        "flagged": True,
        "excluded": False,
        "kept": True,
        "rule": "post-outcome signature",
        "evidence": [
            {"check": "missingness", "kind": "signature", "fired": True, "detail": "empty for 60% of rows"},
            {"check": "auc_drop", "kind": "model", "fired": True, "detail": "validation AUC 0.90 vs 0.85"},
            {"check": "gain_share", "kind": "model", "fired": False, "detail": "carries 10%"},
        ],
    }
    leaky = card(leakage=[finding], leakage_summary={"suspect_auc": 0.05})
    assert "`lead_quality` -> **kept (--keep)" in leaky and "empty for 60% of rows" in leaky
    assert "carries 10%" not in leaky and "0.0500" in leaky
