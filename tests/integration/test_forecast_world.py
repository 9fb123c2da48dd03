"""Forecasts on a simulated world with a known trend and weekly and yearly seasonality.

The world (sandbox/world.py) draws leads with a linear trend, a day-of-week pattern, a yearly
cycle with a year-end dip and a drifting segment mix; conversions follow a hidden hazard. The
oracle gives each open lead's true conversion probability, which is what a perfectly
calibrated model would output.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from models.forecast.backtest import forecast_all, scores_frame
from models.forecast.pipeline import compare_with_realised, pipeline_forecast
from models.forecast.series import build_weekly_series
from sandbox.world import WorldSpec, oracle_probability, simulate_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Engagement events play no part in forecasting; few per lead keep the simulation quick.
SPEC = WorldSpec(n_leads=30_000, days=3 * 365, seed=11, events_per_lead=1.0)
AS_OF = SPEC.end  # the moment the world is observed: weeks up to it are complete


@pytest.fixture(scope="module")
def world():
    return simulate_world(SPEC)


@pytest.fixture(scope="module")
def results(world):
    return forecast_all(build_weekly_series(world.raw_leads, as_of=AS_OF, max_segments=3))


@pytest.fixture(scope="module")
def table(results) -> pd.DataFrame:
    return scores_frame(results)


def test_every_series_has_a_forecast_and_a_reason(results, table):
    ids = [r.series.series_id for r in results]
    assert "leads/overall" in ids and "conversions/overall" in ids
    assert any(i.startswith("leads/lead_source=") for i in ids) and any(
        i.startswith("leads/region=") for i in ids
    )
    for r in results:
        assert len(r.forecast) == 12 and r.reason, r.series.series_id
        f = r.forecast
        assert (
            (f["lo95"] <= f["lo80"]).all()
            and (f["lo80"] <= f["mean"]).all()
            and (f["mean"] <= f["hi95"]).all()
        )


def test_backtest_coverage_of_the_80_interval_is_between_70_and_90_percent(table):
    chosen = table[table["chosen"] & (table["n_points"] > 0)]
    assert len(chosen) >= 15
    w = chosen["n_points"].to_numpy(float)
    cov80 = float(np.average(chosen["coverage80"], weights=w))
    cov95 = float(np.average(chosen["coverage95"], weights=w))
    assert 0.70 <= cov80 <= 0.90, chosen[["series_id", "model", "coverage80"]]
    assert cov95 >= 0.85 and cov95 > cov80


def test_models_beat_seasonal_naive_where_the_signal_is_there(results):
    by_id = {r.series.series_id: r for r in results}
    # the volume series carry trend + yearly season at tens to hundreds of leads a week
    strong = [sid for sid, r in by_id.items() if sid.startswith("leads/") and r.series.values.mean() >= 20]
    strong.append("conversions/overall")
    assert len(strong) >= 6
    for sid in strong:
        r = by_id[sid]
        base = next(s for s in r.scores if s.model == r.baseline)
        assert r.baseline == "seasonal_naive(52)", sid
        assert r.model != r.baseline, (sid, r.reason)
        assert r.chosen_score.mase < base.mase and r.chosen_score.smape < base.smape, (sid, r.reason)
    # and the rule holds everywhere: nothing worse than its baseline is ever used
    for r in results:
        if r.scores and r.model != r.baseline:
            base = next(s for s in r.scores if s.model == r.baseline)
            assert r.chosen_score.mase < base.mase


def test_a_tracking_outage_is_reported_as_a_structural_break(world):
    leads = world.raw_leads
    late = pc.greater_equal(
        leads["created_at"], pa.scalar(dt.datetime(2026, 6, 1, tzinfo=dt.UTC), leads["created_at"].type)
    )
    web = pc.equal(leads["lead_source"], "Web")
    rng = np.random.default_rng(0)
    lost = pc.and_(pc.and_(late, web), pa.array(rng.random(leads.num_rows) < 0.8))
    broken = leads.filter(pc.invert(lost))
    series = [s for s in build_weekly_series(broken, as_of=AS_OF) if s.series_id == "leads/lead_source=web"]
    (r,) = forecast_all(series)
    note = next(n for n in r.notes if "structural break" in n)
    assert "2026-06-01" in note and "using only the" in note
    recent = series[0].values.iloc[-10:].mean()
    assert abs(r.forecast["mean"].mean() - recent) < 0.5 * recent  # the new level, not the old


def test_five_weeks_of_history_fall_back_with_a_clear_message():
    young = simulate_world(WorldSpec(n_leads=1_500, days=47, seed=3, events_per_lead=0.5))
    results = forecast_all(build_weekly_series(young.raw_leads, as_of=AS_OF))
    leads = next(r for r in results if r.series.series_id == "leads/overall")
    assert len(leads.series.values) == 5 and leads.model == "mean"
    assert "too short: 5 week(s)" in leads.reason
    assert all(r.reason for r in results)


def test_pipeline_forecasts_from_oracle_probabilities_hold_against_what_converted(world):
    """Monthly pipeline forecasts, judged later: the realised counts fall in the intervals."""
    per_lead = []
    for month in range(1, 8):
        as_of = dt.datetime(2026, month, 1, tzinfo=dt.UTC)
        p30 = oracle_probability(world, as_of, 30).to_pandas().rename(columns={"probability": "p_30d"})
        p90 = oracle_probability(world, as_of, 90).to_pandas().rename(columns={"probability": "p_90d"})
        summary, leads = pipeline_forecast(p30.merge(p90, on="lead_id"), as_of=as_of)
        assert summary["method"].eq("exact").all() and summary["n_leads"].gt(10_000).all()
        per_lead.append(leads)
    check = compare_with_realised(
        pd.concat(per_lead), world.raw_leads, known_until=dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    )
    assert len(check) == 14  # 7 dates x 2 horizons, all judged by the world's end
    z = check["error"] / np.sqrt(check["expected"])  # roughly standardised (p small)
    assert abs(z.mean()) < 1.0  # no bias
    assert check["inside95"].mean() >= 0.8 and check["inside80"].mean() >= 0.5, check
