"""Rolling-origin backtest and the rule "a model only where it beats the baseline"."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.forecast.backtest import backtest, forecast_series, mase_scale, origins, scores_frame, smape
from models.forecast.fit import ModelSpec
from models.forecast.series import WeeklySeries

pytestmark = pytest.mark.unit

START = pd.Timestamp("2023-11-06")


def series(values, name="x") -> WeeklySeries:
    values = np.asarray(values, dtype=float)
    return WeeklySeries(
        "leads",
        "lead_source",
        name,
        pd.Series(values, index=pd.date_range(START, periods=len(values), freq="7D")),
    )


def test_origins_leave_enough_history_and_end_a_horizon_before_the_end():
    assert origins(156, horizon=12, n_origins=4, step=12, min_train=54) == [108, 120, 132, 144]
    assert origins(80, horizon=12, n_origins=4, step=12, min_train=54) == [56, 68]
    assert origins(30, horizon=12, n_origins=4, step=12, min_train=54) == []


def test_smape_and_mase_scale_are_defined_on_zeros():
    assert smape(np.array([0.0, 10.0]), np.array([0.0, 0.0])).tolist() == [0.0, 200.0]
    y = np.arange(60, dtype=float)
    assert mase_scale(y) == 52.0  # seasonal-naive error of a line with slope 1
    assert mase_scale(y[:30]) == 1.0  # lag 1 under a year
    assert math.isnan(mase_scale(y[:1]))


def test_backtest_counts_points_and_coverage():
    y = np.random.default_rng(0).poisson(50, 130).astype(float)
    s = backtest(ModelSpec("seasonal_naive"), y, 0, horizon=12, n_origins=3, step=12, min_train=54)
    assert (s.n_origins, s.n_points) == (3, 36)
    assert 0.5 <= s.coverage80 <= 1.0 and s.coverage95 >= s.coverage80


def test_a_model_is_chosen_where_there_is_signal():
    rng = np.random.default_rng(1)
    t = np.arange(156)
    lam = 150 * (1 + 0.005 * t) * (1 + 0.3 * np.sin(2 * np.pi * t / 52.18))
    r = forecast_series(series(rng.poisson(lam)))
    chosen, base = r.chosen_score, next(s for s in r.scores if s.model == r.baseline)
    assert r.model != r.baseline and "beats seasonal_naive(52)" in r.reason
    assert chosen.mase < base.mase
    assert list(r.forecast.columns) == ["mean", "lo80", "hi80", "lo95", "hi95"]
    assert len(r.forecast) == 12 and r.forecast.index[0] == START + pd.Timedelta(weeks=156)


def test_the_baseline_is_kept_with_the_reason_when_no_model_beats_it():
    # a sharp yearly pattern (a few spike weeks) repeats exactly: last year's value is best,
    # while a few Fourier harmonics cannot follow the spikes
    rng = np.random.default_rng(2)
    pattern = np.full(52, 20.0)
    pattern[[5, 6, 20, 33, 34, 47]] = [160, 90, 140, 10, 150, 120]
    y = np.tile(pattern, 3) + rng.normal(0, 0.5, 156)
    r = forecast_series(series(y))
    assert r.model == "seasonal_naive(52)"
    assert r.reason.startswith("seasonal_naive(52) kept: best model") and "does not beat it" in r.reason


@pytest.mark.parametrize(
    ("values", "model", "message"),
    [
        (np.zeros(120), "constant", "all zeros over 120 week(s)"),
        (np.array([3.0, 5, 4, 6, 5]), "mean", "too short: 5 week(s)"),
        (np.r_[np.full(100, 80.0), np.full(12, 0.0)], "constant", "structural break"),
    ],
    ids=["all-zeros", "five-points", "break-to-zero"],
)
def test_degenerate_series_get_a_forecast_and_a_clear_message(values, model, message):
    r = forecast_series(series(values))
    assert r.model == model
    assert message in r.reason + " ".join(r.notes)
    assert np.isfinite(r.forecast.to_numpy()).all() and (r.forecast.to_numpy() >= 0).all()
    table = scores_frame([r])
    assert table["chosen"].all() and table["reason"].str.len().gt(0).all()


def test_break_then_model_on_the_weeks_since():
    rng = np.random.default_rng(3)
    y = np.r_[rng.poisson(100, 110), rng.poisson(30, 46)].astype(float)
    r = forecast_series(series(y))
    assert any("structural break" in n for n in r.notes)
    assert r.forecast["mean"].between(20, 40).all()  # the new level, not the old one
