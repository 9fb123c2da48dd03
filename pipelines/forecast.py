"""The forecast run, in three steps the DAG and the CLI share.

1. :func:`forecast_volumes`: canonical leads -> weekly series -> selection, backtest and
   12-week forecasts -> ``forecasts/series_forecast`` and ``forecasts/backtest``.
2. :func:`forecast_pipeline`: open leads + calibrated probabilities -> expected conversions
   in 30 and 90 days -> ``forecasts/pipeline`` (+ per-lead ``pipeline_leads``), and earlier
   pipeline forecasts whose horizon has passed against what converted -> ``pipeline_check``.
3. :func:`log_run`: the lake tables of that date -> one MLflow run.

Each step reads and writes fixed partitions keyed by ``as_of`` and returns a small dict
(paths and figures), so a rerun of a date rewrites the same files.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.lake import Lake
from models.forecast import report
from models.forecast.backtest import HORIZON, forecast_all
from models.forecast.pipeline import (
    HORIZONS,
    compare_with_realised,
    latest_scores,
    open_leads,
    pipeline_forecast,
    summary_text,
)
from models.forecast.series import DIMENSIONS, build_weekly_series

LEADS_ZONE = "clean"
LEADS_TABLE = "leads"


class ForecastRunError(RuntimeError):
    """A forecast step cannot run; the message names the missing input."""


def as_of_date(value: str | dt.date | dt.datetime) -> dt.date:
    """The forecast date from an ISO string, a date or a datetime (taken in UTC)."""
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ForecastRunError(f"as_of: expected a date like 2026-11-02, got {value!r}") from None


def load_leads(lake: Lake, as_of: dt.date, *, zone: str = LEADS_ZONE, table: str = LEADS_TABLE) -> pa.Table:
    """Canonical leads as known on ``as_of``: every partition up to it, latest state per lead."""
    parts = [p for p in lake.partitions(zone, table) if p.run_date <= as_of]
    if not parts:
        raise ForecastRunError(
            f"no canonical leads in the lake at {lake.root / zone / table} up to {as_of}; run the extract first"
        )
    tables = [lake.read(p) for p in parts]
    run_day = np.repeat([p.run_date.toordinal() for p in parts], [t.num_rows for t in tables])
    table = pa.concat_tables(tables).append_column("_run_day", pa.array(run_day, pa.int64()))
    table = table.sort_by([("_run_day", "ascending"), ("updated_at", "ascending")])
    keep = ~pd.Series(table["lead_id"].to_numpy(zero_copy_only=False)).duplicated(keep="last").to_numpy()
    return table.filter(pa.array(keep)).drop_columns(["_run_day"])


def forecast_volumes(
    lake: Lake,
    as_of: dt.date,
    *,
    leads: pa.Table | pd.DataFrame | None = None,
    horizon: int = HORIZON,
    dimensions: Sequence[str] = DIMENSIONS,
    max_segments: int = 5,
    n_origins: int = 4,
) -> dict:
    """Step 1: series, backtests and forecasts written to the lake; returns paths and counts."""
    leads = load_leads(lake, as_of) if leads is None else leads
    series = build_weekly_series(leads, as_of=as_of, dimensions=dimensions, max_segments=max_segments)
    results = forecast_all(series, horizon=horizon, n_origins=n_origins)
    paths = report.write_volume_forecasts(lake, as_of, results)
    chosen = report.backtest_frame(results)
    chosen = chosen[chosen["chosen"]]
    return {
        "as_of": as_of.isoformat(),
        "paths": paths,
        "n_series": len(results),
        "models": {r.series.series_id: r.model for r in results},
        "why_not_a_model": {
            r.series.series_id: r.reason for r in results if r.model == r.baseline or not r.scores
        },
        "n_model": int((chosen["role"] == "candidate").sum()),
        "n_baseline": int((chosen["role"] == "baseline").sum()),
        "n_fallback": int((chosen["role"] == "fallback").sum()),
        "seconds": round(sum(r.seconds for r in results), 2),
    }


def forecast_pipeline(
    lake: Lake,
    as_of: dt.date,
    *,
    leads: pa.Table | pd.DataFrame | None = None,
    probabilities: pa.Table | pd.DataFrame | None = None,
    score_horizon_days: int = 90,
    horizons: Sequence[int] = HORIZONS,
) -> dict:
    """Step 2: expected conversions of the open leads, and the check of earlier forecasts.

    ``probabilities`` (lead_id + ``p_<h>d`` columns, or ``probability`` for
    ``score_horizon_days``) overrides the lake's ``scores`` zone.
    """
    leads = load_leads(lake, as_of) if leads is None else leads
    cutoff = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    source = "given"
    if probabilities is None:
        scores = lake.read_all("scores", "scores")
        if scores is None:
            return {
                "as_of": as_of.isoformat(),
                "skipped": "no scores in the lake's 'scores' zone and none given",
            }
        probabilities, source = latest_scores(scores, cutoff), "lake scores"
    open_ids = open_leads(leads, cutoff)["lead_id"].astype(str)
    summary, per_lead = pipeline_forecast(
        probabilities,
        as_of=cutoff,
        horizons=horizons,
        score_horizon_days=score_horizon_days,
        open_lead_ids=open_ids,
    )
    summary["probability_source"] = source
    earlier = [p for p in lake.partitions(report.ZONE, "pipeline_leads") if p.run_date < as_of]
    check = pd.DataFrame()
    if earlier:
        past = pd.concat([lake.read(p).to_pandas() for p in earlier], ignore_index=True)
        check = compare_with_realised(past, leads, known_until=cutoff)
    paths = report.write_frames(
        lake, as_of, {"pipeline": summary, "pipeline_leads": per_lead, "pipeline_check": check}
    )
    return {
        "as_of": as_of.isoformat(),
        "paths": paths,
        "n_open": len(open_ids),
        "summary": list(summary_text(summary).values()),
        "expected": {int(r.horizon_days): round(float(r.expected), 2) for r in summary.itertuples()},
        "checked": len(check),
    }


def log_run(
    lake: Lake,
    as_of: dt.date,
    *,
    tracking_uri: str,
    params: dict | None = None,
    experiment: str = report.EXPERIMENT,
) -> str:
    """Step 3: one MLflow run from the lake tables of ``as_of``; returns the run id."""
    forecasts = report.read_table(lake, "series_forecast", as_of)
    backtest = report.read_table(lake, "backtest", as_of)
    if forecasts is None or backtest is None:
        raise ForecastRunError(f"no volume forecast in the lake for {as_of}; run forecast_volumes first")
    with tempfile.TemporaryDirectory(prefix="prox-forecast-") as work:
        return report.log_mlflow_run(
            tracking_uri=tracking_uri,
            as_of=as_of,
            forecasts=forecasts,
            backtest=backtest,
            pipeline=report.read_table(lake, "pipeline", as_of),
            pipeline_check=report.read_table(lake, "pipeline_check", as_of),
            params=params,
            work_dir=Path(work),
            experiment=experiment,
        )
