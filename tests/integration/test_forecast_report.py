"""`prox forecast` end to end: lake in, lake and a real MLflow (SQLite) run out."""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.contract import SCORES, conform
from features.lake import Lake, Partition
from features.privacy import pseudonymise_leads
from models.forecast import report
from pipelines.forecast import forecast_pipeline
from prox.cli import main
from sandbox.world import WorldSpec, oracle_probability, simulate_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = WorldSpec(n_leads=6_000, days=2 * 365, seed=5, events_per_lead=0.5)


def snapshot(world, at: dt.datetime) -> pa.Table:
    """Raw leads as the CRM held them at ``at``: created before, status and conversion as of then."""
    t = world.raw_leads
    ts = pa.scalar(at, t["created_at"].type)
    t = t.filter(pc.less(t["created_at"], ts))
    hist = world.status_history.to_pandas()
    hist = hist[hist["changed_at"] < at].sort_values("changed_at").drop_duplicates("lead_id", keep="last")
    then = dict(zip(hist["lead_id"], hist["status"], strict=True))
    status = [then.get(i, s) for i, s in zip(t["lead_id"].to_pylist(), t["status"].to_pylist(), strict=True)]
    later = pc.fill_null(pc.greater_equal(t["converted_at"], ts), False)
    columns = {
        "status": pa.array(status, pa.string()),
        "converted": pc.if_else(later, False, t["converted"]),
        "converted_at": pc.if_else(later, pa.scalar(None, ts.type), t["converted_at"]),
    }
    for name, column in columns.items():
        t = t.set_column(t.schema.get_field_index(name), name, column)
    return t


def seed_lake(lake: Lake, world, at: dt.datetime) -> None:
    """Extract of the canonical leads at ``at`` per CRM, and oracle 'scores' as a calibrated model's."""
    leads = pseudonymise_leads(snapshot(world, at), b"test-key")
    for source in ("salesforce", "hubspot"):
        part = Partition("clean", "leads", source, at.date())
        lake.write(leads.filter(pc.equal(leads["source"], source)), part)
    scored_at = at - dt.timedelta(hours=1)
    p = oracle_probability(world, scored_at, 90)  # open leads only
    n = p.num_rows
    prob = p["probability"].to_numpy()
    scores = {
        "lead_id": p["lead_id"],
        "scored_at": pa.array([scored_at] * n, pa.timestamp("us", tz="UTC")),
        "model_name": pa.array(["oracle"] * n),
        "model_version": pa.array(["1"] * n),
        "probability": pa.array(prob),
        "score": pa.array(np.clip(np.round(prob * 100), 1, 99).astype(np.int16)),
        "tier": pa.array(np.where(prob > 0.3, "A", np.where(prob > 0.1, "B", "C"))),
        "reasons_positive": pa.nulls(n, pa.list_(pa.string())),
        "reasons_negative": pa.nulls(n, pa.list_(pa.string())),
        "run_id": pa.array(["test"] * n),
    }
    lake.write(conform(pa.table(scores), SCORES), Partition("scores", "scores", "all", at.date()))


def test_cli_writes_the_lake_and_an_mlflow_run_and_later_checks_the_pipeline(settings, capsys):
    world = simulate_world(SPEC)
    lake = Lake(settings.lake_dir)
    first = dt.date(2026, 8, 3)
    seed_lake(lake, world, dt.datetime(2026, 8, 3, tzinfo=dt.UTC))

    assert main(["forecast", "--as-of", first.isoformat(), "--max-segments", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "leads/overall" in out and "next 30 days:" in out and "next 90 days:" in out and "mlflow run:" in out
    )

    # the lake: forecasts with intervals, the backtest with reasons, the pipeline
    fc = report.read_table(lake, "series_forecast", first)
    future = fc[fc["kind"] == "forecast"]
    assert future.groupby("series_id").size().eq(12).all()
    assert (future["lo95"] <= future["hi95"]).all() and str(future["week"].dt.tz) == "UTC"
    bt = report.read_table(lake, "backtest", first)
    assert bt.loc[bt["chosen"], "reason"].str.len().gt(0).all()
    pipe = report.read_table(lake, "pipeline", first)
    assert pipe["horizon_days"].tolist() == [30, 90] and (pipe["probability_source"] == "lake scores").all()
    assert not lake.exists(report.partition("pipeline_check", first))  # nothing to judge yet

    # the MLflow run: metrics, one plot per series, the backtest table; no lead ids anywhere
    mlflow.set_tracking_uri(settings.tracking_uri)
    (run,) = mlflow.search_runs(experiment_names=[report.EXPERIMENT], output_format="list")
    metrics = run.data.metrics
    assert "backtest_coverage80_mean" in metrics and "pipeline_expected_90d" in metrics
    assert metrics["n_series"] == fc["series_id"].nunique()
    client = mlflow.MlflowClient()
    plots = [f.path for f in client.list_artifacts(run.info.run_id, "plots")]
    assert len(plots) == fc["series_id"].nunique() and all(p.endswith(".png") for p in plots)
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"backtest_table.json", "tables"} <= artifacts
    table = client.download_artifacts(run.info.run_id, "tables/backtest.csv", str(settings.data_dir))
    with open(table) as handle:
        handle.readline()
        assert ":" not in handle.readline().split(",")[0]  # series ids, not lead ids

    # 91 days later (a new extract, the world's end) the earlier pipeline forecast is judged
    later = first + dt.timedelta(days=91)
    assert later == SPEC.end + dt.timedelta(days=1)
    seed_lake(lake, world, dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    summary = forecast_pipeline(lake, later, score_horizon_days=90)  # the Python API, same step
    assert summary["checked"] == 2
    check = report.read_table(lake, "pipeline_check", later)
    assert check["horizon_days"].tolist() == [30, 90]
    assert check["realised"].gt(0).all() and check["inside95"].all()


def test_cli_without_leads_is_a_one_line_usage_error(settings, capsys):
    assert main(["forecast", "--as-of", "2026-11-02", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prox forecast: error: no canonical leads") and "\n" not in err
