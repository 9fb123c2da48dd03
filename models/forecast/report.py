"""Forecast output: tables in the lake's ``forecasts`` zone and one MLflow run per forecast.

Lake tables (zone ``forecasts``, source ``prox``, partition = the forecast's as-of date;
outside the canonical contract, so written with ``table_name=""``):

* ``series_forecast``: per series and week, the history and the 12-week forecast with its
  80%/95% bounds, and the model used;
* ``backtest``: per series and model, sMAPE, MASE, interval coverage, the choice and why;
* ``pipeline`` / ``pipeline_leads``: expected conversions of the open leads per horizon, and
  the per-lead probabilities behind them (kept so the forecast can be judged later);
* ``pipeline_check``: earlier pipeline forecasts whose horizon has passed, against what
  actually converted.

The MLflow run (tracking URI from :attr:`prox.settings.Settings.tracking_uri`) gets the
metrics, one plot per series (history, forecast, intervals) and the backtest table. Only
aggregate counts and segment names are logged: no lead ids, no PII.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.lake import Lake, Partition
from models.forecast.backtest import SeriesForecast, scores_frame

ZONE = "forecasts"
SOURCE = "prox"
EXPERIMENT = "prox-forecast"
TABLES = ("series_forecast", "backtest", "pipeline", "pipeline_leads", "pipeline_check")
HISTORY_WEEKS_PLOTTED = 104


def partition(table: str, as_of: dt.date) -> Partition:
    return Partition(ZONE, table, SOURCE, as_of)


def forecast_frame(results: Sequence[SeriesForecast]) -> pd.DataFrame:
    """History and forecast of every series in one long table (weeks as UTC timestamps)."""
    frames = []
    for r in results:
        s = r.series
        hist = pd.DataFrame({"week": s.values.index, "kind": "history", "value": s.values.to_numpy(float)})
        fc = r.forecast.reset_index().rename(columns={"index": "week"})
        fc["kind"] = "forecast"
        part = pd.concat([hist, fc], ignore_index=True)
        part.insert(0, "series_id", s.series_id)
        part.insert(1, "metric", s.metric)
        part.insert(2, "dimension", s.dimension)
        part.insert(3, "segment", s.segment)
        part["model"] = r.model
        frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    out["week"] = pd.to_datetime(out["week"]).dt.tz_localize("UTC")
    cols = [
        "series_id",
        "metric",
        "dimension",
        "segment",
        "week",
        "kind",
        "value",
        "mean",
        "lo80",
        "hi80",
        "lo95",
        "hi95",
        "model",
    ]
    return out[cols]


def backtest_frame(results: Sequence[SeriesForecast]) -> pd.DataFrame:
    """The backtest table plus each series' notes (warm-up, break, fallback reasons)."""
    table = scores_frame(results)
    notes = {r.series.series_id: "; ".join(r.notes) for r in results}
    table["notes"] = table["series_id"].map(notes).fillna("")
    return table


def write_volume_forecasts(lake: Lake, as_of: dt.date, results: Sequence[SeriesForecast]) -> dict[str, str]:
    """Write ``series_forecast`` and ``backtest``; returns their partition paths."""
    return {
        "series_forecast": str(
            lake.write(to_arrow(forecast_frame(results)), partition("series_forecast", as_of), table_name="")
        ),
        "backtest": str(
            lake.write(to_arrow(backtest_frame(results)), partition("backtest", as_of), table_name="")
        ),
    }


def write_frames(lake: Lake, as_of: dt.date, frames: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """Write non-empty frames to ``forecasts/<name>`` for ``as_of``; returns their paths."""
    return {
        name: str(lake.write(to_arrow(frame), partition(name, as_of), table_name=""))
        for name, frame in frames.items()
        if frame is not None and len(frame)
    }


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Arrow table with tz-aware columns as ``timestamp[us, UTC]``.

    Converted by hand: pyarrow's ``from_pandas`` reads tz-aware columns through an API that
    pandas 3.1 deprecates (a warning per column and write).
    """
    frame = frame.copy()
    tz_cols = [c for c in frame.columns if isinstance(frame[c].dtype, pd.DatetimeTZDtype)]
    for c in tz_cols:
        frame[c] = frame[c].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for c in tz_cols:
        i = table.schema.get_field_index(c)
        table = table.set_column(i, c, table[c].cast(pa.timestamp("us", tz="UTC")))
    return table


def read_table(lake: Lake, table: str, as_of: dt.date) -> pd.DataFrame | None:
    part = partition(table, as_of)
    return lake.read(part).to_pandas() if lake.exists(part) else None


# ---- MLflow -------------------------------------------------------------------------------
def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from parts (segment names may hold spaces or '&')."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/]+", "_", p).strip("_") for p in parts)


def volume_metrics(backtest: pd.DataFrame, forecasts: pd.DataFrame) -> dict[str, float]:
    """Per-series backtest metrics of the chosen model, next-12-week totals, and summaries."""
    metrics: dict[str, float] = {}
    chosen = backtest[backtest["chosen"]]
    for row in chosen.itertuples(index=False):
        for name in ("mase", "smape", "coverage80", "coverage95"):
            value = float(getattr(row, name))
            if math.isfinite(value):
                metrics[metric_key("backtest", name, row.series_id)] = value
    fc = forecasts[forecasts["kind"] == "forecast"]
    for sid, part in fc.groupby("series_id"):
        metrics[metric_key("forecast_total", str(sid))] = float(part["mean"].sum())
    scored = chosen[chosen["n_points"] > 0]
    if len(scored):
        weights = scored["n_points"].to_numpy(float)
        for name in ("coverage80", "coverage95", "mase"):
            metrics[f"backtest_{name}_mean"] = float((scored[name] * weights).sum() / weights.sum())
    roles = chosen["role"].value_counts()
    metrics["n_series"] = float(len(chosen))
    metrics["n_series_model"] = float(roles.get("candidate", 0))
    metrics["n_series_baseline"] = float(roles.get("baseline", 0))
    metrics["n_series_fallback"] = float(roles.get("fallback", 0))
    return metrics


def pipeline_metrics(summary: pd.DataFrame | None, check: pd.DataFrame | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for row in summary.itertuples(index=False) if summary is not None else ():
        h = int(row.horizon_days)
        for name in ("expected", "sd", "lo80", "hi80", "lo95", "hi95", "n_leads"):
            metrics[f"pipeline_{name}_{h}d"] = float(getattr(row, name))
    if check is not None and len(check):
        for h, part in check.groupby("horizon_days"):
            metrics[f"pipeline_check_inside80_{int(h)}d"] = float(part["inside80"].mean())
            metrics[f"pipeline_check_abs_error_{int(h)}d"] = float(part["error"].abs().mean())
    return metrics


def plot_series(part: pd.DataFrame, path: Path, *, history_weeks: int = HISTORY_WEEKS_PLOTTED) -> Path:
    """History, forecast and 80%/95% bands of one series, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    hist = part[part["kind"] == "history"].tail(history_weeks)
    fc = part[part["kind"] == "forecast"]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    try:
        ax.plot(hist["week"], hist["value"], color="0.3", lw=1.2, label="history")
        ax.fill_between(fc["week"], fc["lo95"], fc["hi95"], color="tab:blue", alpha=0.15, label="95%")
        ax.fill_between(fc["week"], fc["lo80"], fc["hi80"], color="tab:blue", alpha=0.3, label="80%")
        ax.plot(fc["week"], fc["mean"], color="tab:blue", lw=1.6, label="forecast")
        ax.set_title(f"{part['series_id'].iloc[0]}  ({part['model'].iloc[0]})", fontsize=10)
        ax.set_ylabel("per week")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=8, ncols=4)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
    return path


def log_mlflow_run(
    *,
    tracking_uri: str,
    as_of: dt.date,
    forecasts: pd.DataFrame,
    backtest: pd.DataFrame,
    pipeline: pd.DataFrame | None = None,
    pipeline_check: pd.DataFrame | None = None,
    params: Mapping[str, object] | None = None,
    work_dir: Path,
    experiment: str = EXPERIMENT,
) -> str:
    """Log one forecast run (metrics, plots, tables); returns the MLflow run id."""
    import mlflow

    from models.registry import use_experiment

    use_experiment(tracking_uri, experiment)
    plots = Path(work_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for sid, part in forecasts.groupby("series_id", sort=True):
        plot_series(part, plots / f"{metric_key(str(sid)).replace('/', '__')}.png")
    tables = Path(work_dir) / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    backtest.to_csv(tables / "backtest.csv", index=False)
    forecasts[forecasts["kind"] == "forecast"].to_csv(tables / "forecast.csv", index=False)
    if pipeline is not None:
        pipeline.to_csv(tables / "pipeline.csv", index=False)
    if pipeline_check is not None and len(pipeline_check):
        pipeline_check.to_csv(tables / "pipeline_check.csv", index=False)

    metrics = volume_metrics(backtest, forecasts) | pipeline_metrics(pipeline, pipeline_check)
    with mlflow.start_run(run_name=f"forecast {as_of.isoformat()}") as run:
        mlflow.set_tags({"prox.kind": "forecast", "prox.as_of": as_of.isoformat()})
        mlflow.log_params({"as_of": as_of.isoformat(), **{k: str(v) for k, v in (params or {}).items()}})
        mlflow.log_metrics(metrics)
        mlflow.log_table(backtest.astype({"chosen": bool}), artifact_file="backtest_table.json")
        mlflow.log_artifacts(str(plots), artifact_path="plots")
        mlflow.log_artifacts(str(tables), artifact_path="tables")
        return run.info.run_id
