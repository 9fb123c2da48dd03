"""
### ProX: weekly forecast of lead volume, conversions and the open pipeline

Every Monday, from the lake's canonical leads (complete weeks before the run's date):

1. **forecast_volumes**: weekly series of new leads and conversions, overall and per lead
   source and region; SARIMAX and exponential smoothing chosen by AICc, kept only where they
   beat the seasonal-naive baseline in a rolling-origin backtest; 12-week forecasts with 80%
   and 95% intervals -> `forecasts/series_forecast`, `forecasts/backtest`.
2. **forecast_pipeline**: expected conversions of the open leads in 30 and 90 days from their
   latest calibrated scores (Poisson-binomial intervals), and earlier pipeline forecasts
   checked against what converted -> `forecasts/pipeline`, `pipeline_leads`, `pipeline_check`.
3. **log_run**: one MLflow run with the metrics, a plot per series and the backtest table.

Each task reads and writes the partitions of the run's date, so a rerun rewrites the same files.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

AS_OF = "{{ (data_interval_end or dag_run.run_after) | ds }}"


@dag(
    dag_id="prox_forecast",
    schedule="0 4 * * 1",
    start_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["prox", "forecast"],
    doc_md=__doc__,
    default_args={"owner": "prox", "retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    params={
        "horizon_weeks": Param(12, type="integer", minimum=1, maximum=52, description="weeks to forecast"),
        "max_segments": Param(
            5, type="integer", minimum=1, description="segments per dimension; rest is 'other'"
        ),
    },
)
def prox_forecast():
    @task(multiple_outputs=False)
    def forecast_volumes(as_of: str, params: dict | None = None) -> dict:
        """Series, model choice, backtest and forecasts; returns paths and counts."""
        from features.lake import Lake
        from pipelines.forecast import as_of_date
        from pipelines.forecast import forecast_volumes as run_step
        from prox.settings import Settings

        settings = Settings.from_env()
        return run_step(
            Lake(settings.lake_dir),
            as_of_date(as_of),
            horizon=int(params["horizon_weeks"]),
            max_segments=int(params["max_segments"]),
        )

    @task(multiple_outputs=False)
    def forecast_pipeline(as_of: str) -> dict:
        """Expected conversions of the open leads in 30 and 90 days; returns the summary."""
        from features.lake import Lake
        from pipelines.forecast import as_of_date
        from pipelines.forecast import forecast_pipeline as run_step
        from prox.settings import Settings

        settings = Settings.from_env()
        return run_step(
            Lake(settings.lake_dir), as_of_date(as_of), score_horizon_days=settings.label_horizon_days
        )

    @task
    def log_run(as_of: str, volumes: dict, pipeline: dict) -> str:
        """One MLflow run from the lake tables of this date; returns its run id."""
        from features.lake import Lake
        from pipelines.forecast import as_of_date
        from pipelines.forecast import log_run as run_step
        from prox.settings import Settings

        settings = Settings.from_env()
        return run_step(
            Lake(settings.lake_dir),
            as_of_date(as_of),
            tracking_uri=settings.tracking_uri,
            params={
                "n_series": volumes["n_series"],
                "pipeline": "skipped" if "skipped" in pipeline else "done",
            },
        )

    log_run(AS_OF, forecast_volumes(AS_OF), forecast_pipeline(AS_OF))


prox_forecast()
