"""Pipeline forecast: Poisson-binomial intervals, open leads, horizons, the later check."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.forecast.pipeline import (
    PipelineError,
    compare_with_realised,
    conversion_interval,
    open_leads,
    pipeline_forecast,
    poisson_binomial_pmf,
    probabilities_for_horizons,
)

pytestmark = pytest.mark.unit

AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_exact_pmf_matches_enumeration():
    p = np.array([0.1, 0.5, 0.8, 0.33])
    brute = np.zeros(5)
    for outcome in itertools.product([0, 1], repeat=4):
        brute[sum(outcome)] += np.prod([pi if o else 1 - pi for pi, o in zip(p, outcome, strict=True)])
    assert np.allclose(poisson_binomial_pmf(p), brute)


def test_equal_probabilities_give_the_binomial():
    ci = conversion_interval(np.full(400, 0.1))
    assert ci.method == "exact" and ci.expected == pytest.approx(40)
    b = stats.binom(400, 0.1)
    assert (ci.lo80, ci.hi80) == (int(b.ppf(0.1)), int(b.ppf(0.9)))
    assert (ci.lo95, ci.hi95) == (int(b.ppf(0.025)), int(b.ppf(0.975)))


def test_refined_normal_agrees_with_exact_for_large_n():
    p = np.random.default_rng(0).beta(0.5, 8, 20_000)
    exact = conversion_interval(p, method="exact")
    approx = conversion_interval(p, method="refined_normal")
    for a, b in (
        (exact.lo80, approx.lo80),
        (exact.hi80, approx.hi80),
        (exact.lo95, approx.lo95),
        (exact.hi95, approx.hi95),
    ):
        assert abs(a - b) <= 1
    assert conversion_interval(np.random.default_rng(1).beta(0.5, 8, 300_000)).method == "refined_normal"


def test_interval_covers_simulated_outcomes():
    rng = np.random.default_rng(2)
    p = rng.beta(0.6, 6, 800)
    ci = conversion_interval(p)
    sims = (rng.random((5000, p.size)) < p).sum(axis=1)
    inside80 = np.mean((sims >= ci.lo80) & (sims <= ci.hi80))
    inside95 = np.mean((sims >= ci.lo95) & (sims <= ci.hi95))
    assert 0.79 <= inside80 <= 0.88 and 0.94 <= inside95 <= 0.98  # discrete: at least nominal


def test_bad_probabilities_name_the_lead():
    with pytest.raises(PipelineError, match=r"'hubspot:7'.*p_30d=1\.5"):
        probabilities_for_horizons(
            pd.DataFrame({"lead_id": ["hubspot:6", "hubspot:7"], "p_30d": [0.1, 1.5]}), horizons=(30,)
        )
    with pytest.raises(PipelineError, match="'x' appears more than once"):
        probabilities_for_horizons(pd.DataFrame({"lead_id": ["x", "x"], "p_30d": [0.1, 0.2]}), horizons=(30,))
    with pytest.raises(PipelineError, match="no column p_30d"):
        probabilities_for_horizons(pd.DataFrame({"lead_id": ["x"], "probability": [0.2]}), horizons=(30,))


def test_other_horizons_derive_by_constant_hazard():
    long = probabilities_for_horizons(
        pd.DataFrame({"lead_id": ["a"], "probability": [0.5]}), horizons=(30, 90), score_horizon_days=90
    )
    p30 = long.loc[long.horizon_days == 30, "probability"].item()
    assert p30 == pytest.approx(1 - 0.5 ** (1 / 3)) and long.loc[long.horizon_days == 30, "derived"].item()
    assert not long.loc[long.horizon_days == 90, "derived"].item()


def _leads() -> pd.DataFrame:
    ts = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    return pd.DataFrame(
        {
            "lead_id": ["a", "b", "c", "d", "e"],
            "created_at": [
                ts("2026-01-01"),
                ts("2026-02-01"),
                ts("2026-03-01"),
                ts("2026-07-01"),
                ts("2026-01-10"),
            ],
            "status": ["working", "converted", "unqualified", "open", "converted"],
            "converted": [False, True, False, False, True],
            "converted_at": [pd.NaT, ts("2026-05-01"), pd.NaT, pd.NaT, ts("2026-06-20")],
        }
    )


def test_open_leads_at_as_of():
    # b converted before as_of, c is closed, d did not exist yet; e converted only after as_of
    assert open_leads(_leads(), AS_OF)["lead_id"].tolist() == ["a", "e"]


def test_forecast_then_compare_with_what_converted():
    probs = pd.DataFrame({"lead_id": ["a", "e", "z"], "p_30d": [0.2, 0.6, 0.9], "p_90d": [0.4, 0.9, 0.95]})
    summary, per_lead = pipeline_forecast(probs, as_of=AS_OF, open_lead_ids=["a", "e", "q"])
    assert summary["expected"].round(6).tolist() == [0.8, 1.3]  # z is not open; q has no score
    assert summary["n_unscored"].tolist() == [1, 1]
    check = compare_with_realised(per_lead, _leads(), known_until=AS_OF + dt.timedelta(days=40))
    assert check["horizon_days"].tolist() == [30]  # the 90-day horizon has not passed yet
    assert check["realised"].item() == 1 and bool(check["inside95"].item())
