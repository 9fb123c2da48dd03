"""The world-refresh DAG runs in real Airflow and writes the world it was asked for."""

from __future__ import annotations

import datetime as dt
import json

import pytest

pytestmark = [pytest.mark.dags, pytest.mark.integration]


def test_world_refresh_runs_and_is_idempotent(airflow_db, session_settings):
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dag_integrity import DAGS_DIR

    dag = DagBag(dag_folder=str(DAGS_DIR / "prox_world_refresh.py")).get_dag("prox_world_refresh")
    conf = {"leads": 500, "days": 60, "seed": 3, "end": "2026-06-01"}
    run = dag.test(logical_date=dt.datetime(2026, 6, 1, tzinfo=dt.UTC), run_conf=conf)
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    world = session_settings.world_dir
    meta = json.loads((world / "spec.json").read_text())
    assert meta["spec"]["n_leads"] == 500 and meta["spec"]["end"] == "2026-06-01"
    first = (world / "activities.parquet").read_bytes()
    run = dag.test(logical_date=dt.datetime(2026, 6, 2, tzinfo=dt.UTC), run_conf=conf)
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    assert (world / "activities.parquet").read_bytes() == first  # a rerun rewrites identical files
