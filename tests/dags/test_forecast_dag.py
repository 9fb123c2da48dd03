"""The weekly forecast DAG runs in real Airflow: lake in, forecasts and an MLflow run out."""

from __future__ import annotations

import datetime as dt

import pytest

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.slow]


def test_forecast_dag_shape():
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dag_integrity import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / "prox_forecast.py"))
    assert bag.import_errors == {}
    dag = bag.dags["prox_forecast"]  # get_dag() would read the metadata DB
    assert dag.task_dict.keys() == {"forecast_volumes", "forecast_pipeline", "log_run"}
    assert dag.task_dict["log_run"].upstream_task_ids == {"forecast_volumes", "forecast_pipeline"}
    assert "forecast" in dag.tags and dag.max_active_runs == 1


def test_forecast_dag_runs_weekly_and_writes_lake_and_mlflow(airflow_db, session_settings):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag

    from features.lake import Lake
    from models.forecast import report
    from sandbox.world import WorldSpec, simulate_world
    from tests.dags.test_dag_integrity import DAGS_DIR
    from tests.integration.test_forecast_report import seed_lake

    as_of = dt.datetime(2026, 8, 3, tzinfo=dt.UTC)  # a Monday, like the schedule
    world = simulate_world(WorldSpec(n_leads=5_000, days=2 * 365, seed=9, events_per_lead=0.5))
    lake = Lake(session_settings.lake_dir)
    seed_lake(lake, world, as_of)

    dag = DagBag(dag_folder=str(DAGS_DIR / "prox_forecast.py")).get_dag("prox_forecast")
    run = dag.test(logical_date=as_of + dt.timedelta(hours=4), run_conf={"max_segments": 1})
    assert str(run.state) in ("success", "DagRunState.SUCCESS")

    day = as_of.date()
    forecasts = report.read_table(lake, "series_forecast", day)
    assert forecasts is not None and "leads/overall" in set(forecasts["series_id"])
    # max_segments=1: overall + 2 sources + 2 regions, each for leads and conversions
    assert forecasts["series_id"].nunique() == 10
    pipeline = report.read_table(lake, "pipeline", day)
    assert pipeline["horizon_days"].tolist() == [30, 90] and pipeline["expected"].gt(0).all()

    mlflow.set_tracking_uri(session_settings.tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[report.EXPERIMENT],
        filter_string=f"tags.`prox.as_of` = '{day}'",
        output_format="list",
    )
    assert len(runs) == 1 and runs[0].data.metrics["n_series"] == 10
