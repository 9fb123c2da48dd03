"""Training on a small synthetic problem: search budget, baseline table, calibration, bundles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from models.bundle import ModelBundle
from models.dataset import FeatureEncoder, labels, time_split
from models.evaluate import expected_calibration_error, fast_auc
from models.train import TrainConfig, fit_calibrator, train_models

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def problem(n_snapshots: int = 6, per: int = 1500, seed: int = 0) -> pa.Table:
    """Label from a non-linear score of two numbers and a category (LightGBM should win)."""
    rng = np.random.default_rng(seed)
    rows = n_snapshots * per
    x1, x2 = rng.normal(size=rows), rng.exponential(size=rows)
    cat = rng.choice(["a", "b", "c"], size=rows)
    logit = -2.5 + 1.5 * (x1 > 0.5) + 0.8 * np.sin(3 * x2) + np.where(cat == "b", 1.0, 0.0)
    x2[rng.random(rows) < 0.05] = np.nan
    return pa.table(
        {
            "lead_id": [f"l{i % per}" for i in range(rows)],
            "as_of": pa.array(
                np.repeat([T0 + dt.timedelta(days=14 * i) for i in range(n_snapshots)], per),
                pa.timestamp("us", tz="UTC"),
            ),
            "x1": x1,
            "x2": x2,
            "segment": cat,
            "label": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8),
        }
    )


@pytest.fixture(scope="module")
def trained():
    table = problem()
    split = time_split(table)
    enc = FeatureEncoder.infer(table)
    result = train_models(split, enc, TrainConfig(max_trials=3, time_budget_s=60, early_stopping_rounds=20))
    return split, enc, result


def test_search_respects_the_trial_budget_and_lightgbm_wins_a_nonlinear_problem(trained):
    _, _, result = trained
    assert len(result.trials) == 3
    assert {c.name for c in result.candidates} == {"lightgbm", "logistic"}
    assert result.winner.name == "lightgbm"
    assert result.winner.valid_auc > result.by_name("logistic").valid_auc


def test_time_budget_stops_the_search_after_the_first_trial():
    table = problem(per=300)
    split = time_split(table)
    result = train_models(
        split, FeatureEncoder.infer(table), TrainConfig(max_trials=50, time_budget_s=0.0, baseline=False)
    )
    assert len(result.trials) == 1 and len(result.candidates) == 1


def test_baseline_coefficient_table_has_standard_errors_and_p_values(trained):
    _, _, result = trained
    table = result.by_name("logistic").bundle.logistic.table
    terms = {row["term"]: row for row in table}
    assert "const" in terms and "segment=b" in terms
    b = terms["segment=b"]
    assert b["estimate"] > 0.5 and b["std_error"] > 0 and b["p_value"] < 0.001


def test_bundles_round_trip_and_contributions_add_up(trained, tmp_path):
    split, enc, result = trained
    X = enc.transform(split.test)
    for cand in result.candidates:
        loaded = ModelBundle.load(cand.bundle.save(tmp_path / cand.name))
        np.testing.assert_allclose(loaded.predict(X), cand.bundle.predict(X), rtol=1e-12)
        raw = loaded.predict_raw(X)
        margin = loaded.contributions(X).sum(axis=1)
        np.testing.assert_allclose(1 / (1 + np.exp(-margin)), raw, rtol=1e-6, atol=1e-9)


def test_isotonic_calibration_fixes_a_miscalibrated_score_and_keeps_its_ranking():
    rng = np.random.default_rng(3)
    true_p = rng.beta(1, 12, size=40_000)
    y = (rng.random(true_p.size) < true_p).astype(int)
    raw = np.sqrt(true_p)  # same order, badly calibrated
    fit, test = slice(0, 20_000), slice(20_000, None)
    cal = fit_calibrator(raw[fit], y[fit], "isotonic")
    out = cal.apply(raw[test])
    assert np.all(np.diff(np.asarray(cal.x)) > 0)
    assert expected_calibration_error(y[test], out) < 0.01 < expected_calibration_error(y[test], raw[test])
    assert abs(fast_auc(y[test], out) - fast_auc(y[test], raw[test])) < 1e-3
    sig = fit_calibrator(raw[fit], y[fit], "sigmoid")
    assert expected_calibration_error(y[test], sig.apply(raw[test])) < 0.02


def test_winner_is_calibrated_on_the_later_slice(trained):
    split, enc, result = trained
    p = result.winner.bundle.predict(enc.transform(split.test))
    y = labels(split.test)
    se = np.sqrt(y.mean() * (1 - y.mean()) / len(y))
    assert abs(p.mean() - y.mean()) < 4 * se  # calibration in the large, within sampling noise
    assert expected_calibration_error(y, p) < 0.06  # 1,500 rows: 10 bins carry ~0.03 of noise


def test_explain_cost_is_leaves_times_depth_squared_per_tree():
    import lightgbm as lgb

    from models.train import explain_cost

    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 4, "max_depth": 2, "verbose": -1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
    # five full trees of depth 2: 4 leaves x 2^2 each
    assert explain_cost(booster) == 5 * 4 * 4


def test_search_keeps_the_cheapest_to_explain_of_the_near_best_trials():
    """Within the AUC tolerance the cheapest trial wins; with no tolerance the best one does."""
    table = problem(per=800)
    split = time_split(table)
    enc = FeatureEncoder.infer(table)
    common = {"max_trials": 4, "time_budget_s": 60, "early_stopping_rounds": 20, "baseline": False}
    exact = train_models(split, enc, TrainConfig(explain_tolerance_auc=0.0, **common))
    lenient = train_models(split, enc, TrainConfig(explain_tolerance_auc=1.0, **common))
    best = max(exact.trials, key=lambda t: t["valid_auc"])
    cheapest = min(lenient.trials, key=lambda t: t["explain_cost"])
    assert exact.winner.details["params"]["best_iteration"] == best["best_iteration"]
    assert lenient.winner.details["params"]["num_leaves"] == cheapest["num_leaves"]
    assert lenient.winner.details["params"]["best_iteration"] == cheapest["best_iteration"]
    assert all(t["max_depth"] <= 5 and t["num_leaves"] <= 31 for t in lenient.trials)
