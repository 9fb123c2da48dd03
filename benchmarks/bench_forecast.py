"""Benchmark: the whole weekly forecast run on ~10 series, against one seasonal SARIMAX fit.

Run: ``flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_forecast.py``

Builds a simulated world (30,000 leads over 3 years), its weekly series with one segment per
dimension (10 series: leads and conversions, overall + 2 lead sources + 2 regions), and times
:func:`models.forecast.backtest.forecast_all` on them: season and model selection by AICc,
the 4-origin rolling backtest of every finalist and the baseline, and the 12-week forecasts.

Reference, measured in the same run: ONE fit of SARIMAX(1,0,0)(1,0,0,52) with a trend on the
overall leads series, the textbook way to model a yearly season in weekly data that this
package avoids (Fourier terms instead). The ratio says how many such single fits the whole
per-series selection + backtest + forecast costs. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import json
import resource
import time
import warnings

import numpy as np


def main() -> dict:
    from threadpoolctl import threadpool_limits

    from models.forecast.backtest import forecast_all, scores_frame
    from models.forecast.series import build_weekly_series
    from sandbox.world import WorldSpec, simulate_world

    spec = WorldSpec(n_leads=30_000, days=3 * 365, seed=11, events_per_lead=1.0)
    world = simulate_world(spec)
    series = build_weekly_series(world.raw_leads, as_of=spec.end, max_segments=1)

    wall, cpu = time.perf_counter(), time.process_time()
    results = forecast_all(series)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    table = scores_frame(results)
    chosen = table[table["chosen"] & (table["n_points"] > 0)]
    coverage80 = float(np.average(chosen["coverage80"], weights=chosen["n_points"]))
    n_model = int((chosen["role"] == "candidate").sum())

    from statsmodels.tsa.statespace.sarimax import SARIMAX

    y = next(s for s in series if s.series_id == "leads/overall").values.to_numpy()
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        ref = time.perf_counter()
        res = SARIMAX(y / y.mean(), order=(1, 0, 0), seasonal_order=(1, 0, 0, 52), trend="ct").fit(
            disp=False, maxiter=200, start_params=[0.1, 0.0, 0.5, 0.3, 0.02]
        )
        ref = time.perf_counter() - ref

    per_series = wall / len(series)
    figures = {
        "series": len(series),
        "weeks": len(y),
        "forecast_run_wall_s": round(wall, 2),
        "forecast_run_cpu_s": round(cpu, 2),
        "per_series_wall_s": round(per_series, 3),
        "reference_seasonal_sarimax_one_fit_s": round(ref, 2),
        "reference_iterations": int(res.mle_retvals.get("iterations", -1)),
        "ratio_per_series_vs_one_seasonal_fit": round(per_series / ref, 3),
        "series_using_a_model": n_model,
        "backtest_coverage80": round(coverage80, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(
        f"forecast run on {len(series)} series of {len(y)} weeks: {wall:.2f} s wall, {cpu:.2f} s CPU "
        f"({per_series:.3f} s per series: selection + 4-origin backtest + 12-week forecast)"
    )
    print(
        f"reference, one SARIMAX(1,0,0)(1,0,0,52) fit on one series: {ref:.2f} s "
        f"({figures['reference_iterations']} iterations)"
    )
    print(
        f"ratio (whole per-series run / one seasonal fit): {figures['ratio_per_series_vs_one_seasonal_fit']}"
    )
    print(
        f"{n_model}/{len(chosen)} series use a model; backtest 80% coverage {coverage80:.3f}; "
        f"peak RSS {figures['peak_rss_mb']} MB"
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
