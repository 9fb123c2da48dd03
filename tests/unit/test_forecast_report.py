"""Report helpers: lake-ready tables and MLflow-safe metrics."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.lake import Lake
from models.forecast import report
from models.forecast.backtest import forecast_all
from models.forecast.series import WeeklySeries

pytestmark = pytest.mark.unit


def _results():
    idx = pd.date_range("2024-01-01", periods=40, freq="7D")
    rng = np.random.default_rng(0)
    return forecast_all(
        [
            WeeklySeries(
                "leads", "region", "middle east & africa", pd.Series(rng.poisson(30, 40) * 1.0, index=idx)
            ),
            WeeklySeries("conversions", "overall", "overall", pd.Series(np.zeros(40), index=idx)),
        ]
    )


def test_metric_keys_are_mlflow_safe():
    assert report.metric_key("backtest", "mase", "leads/region=middle east & africa") == (
        "backtest.mase.leads/region_middle_east_africa"
    )


def test_tables_round_trip_through_the_lake_with_utc_weeks(tmp_path):
    results = _results()
    lake = Lake(tmp_path)
    day = dt.date(2024, 10, 7)
    report.write_volume_forecasts(lake, day, results)
    fc = lake.read(report.partition("series_forecast", day))
    assert fc.schema.field("week").type == pa.timestamp("us", tz="UTC")
    table = report.read_table(lake, "backtest", day)
    zeros = table[table["series_id"] == "conversions/overall"]
    assert zeros["role"].tolist() == ["fallback"] and "all zeros" in zeros["reason"].item()


def test_volume_metrics_summarise_the_chosen_models():
    results = _results()
    metrics = report.volume_metrics(report.backtest_frame(results), report.forecast_frame(results))
    assert metrics["n_series"] == 2 and metrics["n_series_fallback"] == 1
    assert (
        "forecast_total.conversions/overall" in metrics and metrics["forecast_total.conversions/overall"] == 0
    )
    assert all(np.isfinite(v) for v in metrics.values())
