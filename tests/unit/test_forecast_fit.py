"""Models, baselines, selection and fallbacks on synthetic weekly series (numpy, fixed seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.forecast.fit import (
    MIN_MODEL_WEEKS,
    ModelSpec,
    assess,
    choose_design,
    choose_fourier,
    detect_break,
    predict,
    select_models,
    week_number,
)

pytestmark = pytest.mark.unit

START = pd.Timestamp("2023-11-06")  # a Monday


def weekly(values) -> pd.Series:
    values = np.asarray(values, dtype=float)
    return pd.Series(values, index=pd.date_range(START, periods=len(values), freq="7D"))


def seasonal_counts(n=156, level=120.0, growth=0.004, amp=0.25, seed=0) -> np.ndarray:
    t = np.arange(n) + week_number(START)
    lam = level * (1 + growth * np.arange(n)) * (1 + amp * np.sin(2 * np.pi * t / (365.25 / 7)))
    return np.random.default_rng(seed).poisson(lam).astype(float)


# ---- fallbacks: every degenerate series gets a forecast and a plain reason -------------------
def test_all_zeros_forecasts_zero_and_says_so():
    a = assess(weekly(np.zeros(80)))
    assert a.fallback == ModelSpec("constant")
    assert "all zeros over 80 week(s)" in a.notes[0]
    p = predict(a.fallback, np.zeros(80), 0, 12)
    assert np.all(p.mean == 0) and np.all(p.hi95 == 0)


def test_five_points_fall_back_to_the_mean_with_the_reason():
    y = np.array([12.0, 9, 14, 11, 10])
    a = assess(weekly(y))
    assert a.fallback == ModelSpec("mean")
    assert f"too short: 5 week(s) < {MIN_MODEL_WEEKS}" in a.notes[-1]
    p = predict(a.fallback, y, 0, 12)
    assert np.allclose(p.mean, y.mean())
    assert np.all(p.lo95 < p.lo80) and np.all(p.lo80 < p.mean) and np.all(p.hi95 > p.hi80)


def test_structural_break_keeps_only_the_weeks_since():
    rng = np.random.default_rng(1)
    y = np.r_[rng.poisson(100, 110), rng.poisson(30, 40)].astype(float)
    a = assess(weekly(y))
    assert len(a.values) == 40
    assert a.values.index[0] == START + pd.Timedelta(weeks=110)
    assert "structural break" in a.notes[0] and "40 week(s) since" in a.notes[0]
    assert "short for seasonality" in a.notes[1]  # 40 weeks left: no yearly terms


def test_sparse_series_use_the_poisson_mean():
    rng = np.random.default_rng(2)
    y = (rng.random(150) < 0.3) * rng.poisson(2, 150)
    a = assess(weekly(y))
    assert a.fallback == ModelSpec("poisson_mean")
    assert "sparse" in a.notes[-1]
    p = predict(a.fallback, y.astype(float), 0, 4)
    assert p.lo80[0] <= p.mean[0] <= p.hi95[0]


def test_no_false_break_on_trend_and_seasonality():
    for seed in range(5):
        for level in (6.0, 40.0, 300.0):
            y = seasonal_counts(level=level, amp=0.35, growth=-0.002, seed=seed)
            assert detect_break(y) is None, (seed, level)


def test_a_clean_step_is_found_at_the_step():
    y = np.r_[np.full(60, 50.0), np.full(30, 120.0)] + np.random.default_rng(3).normal(0, 3, 90)
    at, before, after = detect_break(y)
    assert at == 60 and before < 60 < after


# ---- models -----------------------------------------------------------------------------------
def test_seasonal_naive_repeats_last_year_with_constant_width():
    y = seasonal_counts()
    p = predict(ModelSpec("seasonal_naive"), y, 0, 12)
    assert np.allclose(p.mean, y[-52:-40])
    width = p.hi80 - p.lo80
    assert np.allclose(width[width > 0], width.max())


def test_naive_interval_widens_with_the_horizon():
    y = seasonal_counts(n=60)
    p = predict(ModelSpec("naive"), y, 0, 12)
    assert np.all(p.mean == y[-1])
    assert np.all(np.diff(p.hi95 - p.lo95) >= -1e-9)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("sarimax", order=(1, 0, 0), trend="ct", fourier=2),
        ModelSpec("sarimax", order=(0, 1, 1), trend="t", fourier=2),
        ModelSpec("ets", trend="add", damped=True, fourier=2),
    ],
    ids=lambda s: s.name,
)
def test_models_forecast_the_season_with_ordered_non_negative_bounds(spec):
    y = seasonal_counts(n=156, seed=4)
    t0 = week_number(START)
    p = predict(spec, y, t0, 12)
    assert np.isfinite(p.aicc)
    assert np.all(p.lo95 <= p.lo80) and np.all(p.lo80 <= p.mean) and np.all(p.mean <= p.hi80)
    assert np.all(p.hi80 <= p.hi95) and np.all(p.lo95 >= 0)
    t = np.arange(156, 168) + t0  # the true mean of the next 12 weeks
    lam = 120 * (1 + 0.004 * np.arange(156, 168)) * (1 + 0.25 * np.sin(2 * np.pi * t / (365.25 / 7)))
    assert np.mean(np.abs(p.mean - lam)) < 0.1 * lam.mean()


def test_fourier_harmonics_are_chosen_only_when_there_is_a_season():
    t0 = week_number(START)
    assert choose_fourier(seasonal_counts(amp=0.3), t0) >= 1
    flat = np.random.default_rng(5).poisson(100, 156).astype(float)
    assert choose_fourier(flat, t0) == 0


def test_selection_is_bounded_to_one_finalist_per_comparable_group():
    finalists = select_models(seasonal_counts(), week_number(START), seasonal=True)
    families = sorted(f"{f.spec.family}-d{f.spec.order[1]}" for f in finalists)
    assert families == ["ets-d0", "sarimax-d0", "sarimax-d1"]
    assert all(np.isfinite(f.aicc) and len(f.prediction.mean) == 12 for f in finalists)


def test_a_season_that_grows_with_the_level_is_modelled_on_the_log_scale():
    n, t0 = 156, week_number(START)
    t = np.arange(n)
    lam = 40 * np.exp(0.01 * t) * np.exp(0.45 * np.sin(2 * np.pi * (t + t0) / (365.25 / 7)))
    y = np.random.default_rng(6).poisson(lam).astype(float)
    k, _, log = choose_design(y, t0)
    assert log and k >= 1
    p = predict(ModelSpec("ets", trend="add", fourier=k, log=True), y, t0, 12)
    assert np.all(p.hi95 - p.mean > p.mean - p.lo95)  # back-transformed: skewed upwards
    assert np.all(p.lo95 >= 0)
