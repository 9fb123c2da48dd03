"""What the gate leaves behind: lake partitions, JSON + Data Docs evidence, MLflow artifacts, the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from expectations.evidence import log_validation_to_mlflow
from expectations.runner import GateFailed, previous_stats, run_gate, validate
from features.contract import QUARANTINE, RAW_LEADS
from features.lake import Lake, Partition
from models.registry import use_experiment
from prox.settings import Settings
from tests.fixtures import synthetic_validation as syn

pytestmark = pytest.mark.integration

REF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
RUN_DATE = dt.date(2026, 11, 1)


@pytest.fixture
def dirty_leads():
    leads = syn.clean_raw_leads(300, "hubspot")
    leads = syn.set_values(leads, "email", {0: "zebulon.quux at example.com"})
    return syn.set_values(leads, "annual_revenue", {1: -1.0})


def test_quarantine_clean_rows_and_evidence_are_written(settings: Settings, dirty_leads) -> None:
    out = validate("raw_leads_hubspot", dirty_leads, run_id="scheduled__2026-11-01T00:00:00+00:00",
                   settings=settings, reference_time=REF)  # fmt: skip
    assert out.decision == "warned"
    lake = Lake(settings.lake_dir)
    quarantine = lake.read(Partition("quarantine", "raw_leads", "hubspot", RUN_DATE))
    assert quarantine.schema.equals(QUARANTINE, check_metadata=False)
    rows = {(r["record_id"], r["column"], r["value"]) for r in quarantine.to_pylist()}
    lead0, lead1 = dirty_leads["lead_id"][0].as_py(), dirty_leads["lead_id"][1].as_py()
    assert rows == {(lead0, "email", "xxxxxxx.xxxx xx xxxxxxx.xxx"), (lead1, "annual_revenue", "-1")}
    assert set(quarantine["run_id"].to_pylist()) == {"scheduled__2026-11-01T00:00:00+00:00"}
    clean = lake.read(Partition("clean", "raw_leads", "hubspot", RUN_DATE))
    assert clean.schema.equals(RAW_LEADS, check_metadata=False) and clean.num_rows == 298

    assert out.report_path.parent.name == "run_id=scheduled__2026-11-01T00_00_00_00_00"
    report = json.loads(out.report_path.read_text())
    assert report["decision"] == "warned" and report["quarantined_rows"] == 2
    assert report["great_expectations"]["success"] is False
    assert {c["expectation"] for c in report["checks"] if not c["success"]} == {
        "expect_column_values_to_match_regex",
        "expect_column_values_to_be_between",
    }
    html = out.docs_path.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert "values must match this regular expression" in html  # GX's own rendering of the suite
    assert "xxxxxxx.xxxx xx xxxxxxx.xxx" in html  # the unexpected value, masked
    for evidence in (out.report_path.read_text(), html):
        assert "zebulon" not in evidence.lower()  # raw PII never leaves the raw zone

    assert previous_stats(settings, "raw_leads_hubspot", before=REF) is None  # only older runs count
    stats = previous_stats(settings, "raw_leads_hubspot", before=REF + dt.timedelta(days=1))
    assert stats is not None and stats["rows"] == 300 and stats["newest"] is not None

    fixed = syn.clean_raw_leads(300, "hubspot")  # the rerun of the same date, source fixed
    rerun = validate("raw_leads_hubspot", fixed, run_id="rerun", settings=settings, reference_time=REF)
    assert rerun.decision == "passed"
    assert lake.read(Partition("quarantine", "raw_leads", "hubspot", RUN_DATE)).num_rows == 0
    assert lake.read(Partition("clean", "raw_leads", "hubspot", RUN_DATE)).num_rows == 300


def test_one_suite_for_several_sources_keeps_one_report_per_source(settings: Settings) -> None:
    for source in ("hubspot", "file"):
        acts = syn.clean_activities(500, source=source)
        out = validate(
            "raw_activities", acts, run_id="r", settings=settings, reference_time=REF, source=source
        )
        assert out.name == f"raw_activities-{source}"
        assert out.report_path.name == f"raw_activities-{source}.json"
    index = (out.report_path.parent / "index.html").read_text()
    assert "raw_activities-hubspot.html" in index and "raw_activities-file.html" in index
    later = REF + dt.timedelta(days=1)
    assert previous_stats(settings, "raw_activities", before=later, source="file")["rows"] == 500
    assert previous_stats(settings, "raw_activities", before=later, source="salesforce") is None


def test_a_failed_run_writes_no_clean_rows(settings: Settings, dirty_leads) -> None:
    out = validate("raw_leads_hubspot", dirty_leads.drop_columns(["status"]), run_id="r", settings=settings,
                   reference_time=REF)  # fmt: skip
    assert out.decision == "failed" and out.clean_path is None
    assert not Lake(settings.lake_dir).exists(Partition("clean", "raw_leads", "hubspot", RUN_DATE))
    assert out.report_path.is_file()  # the evidence of a failure is kept too


@pytest.mark.slow
def test_evidence_is_attached_to_the_mlflow_run(settings: Settings, dirty_leads) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    leads = validate("raw_leads_hubspot", dirty_leads, run_id="r1", settings=settings, reference_time=REF)
    scores = validate("scores", syn.clean_scores(200), run_id="r1", settings=settings, reference_time=REF,
                      write=False)  # fmt: skip
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        with pytest.raises(RuntimeError, match="no active MLflow run"):
            log_validation_to_mlflow([leads])
        use_experiment(settings.tracking_uri, "validation-test")
        with mlflow.start_run() as run:
            summary = log_validation_to_mlflow([leads, scores])
        client = MlflowClient(settings.tracking_uri)
        paths = {a.path for a in client.list_artifacts(run.info.run_id, "validation/raw_leads_hubspot")}
        assert paths == {"validation/raw_leads_hubspot/raw_leads_hubspot.json",
                         "validation/raw_leads_hubspot/raw_leads_hubspot.html"}  # fmt: skip
        score_paths = {a.path for a in client.list_artifacts(run.info.run_id, "validation/scores")}
        assert score_paths == {"validation/scores/scores.json", "validation/scores/scores.html"}
        data = client.get_run(run.info.run_id).data
        assert data.tags["validation.raw_leads_hubspot"] == "warned"
        assert data.tags["validation.scores"] == "passed"
        assert data.tags["validation.decision"] == "warned"
        assert data.metrics["validation.raw_leads_hubspot.quarantined_rows"] == 2.0
        local = client.download_artifacts(run.info.run_id, "validation/summary.json", str(settings.data_dir))
        assert json.loads(Path(local).read_text()) == summary
    finally:
        mlflow.set_tracking_uri(None)


def test_cli_prints_a_summary_and_exits_non_zero_on_critical_failure(
    settings: Settings, dirty_leads, tmp_path, capsys
) -> None:
    from prox.cli import main

    good = tmp_path / "good.parquet"
    pq.write_table(dirty_leads, good)
    code = main(
        [
            "validate",
            "raw_leads_hubspot",
            str(good),
            "--reference-time",
            "2026-11-01T00:00:00Z",
            "--run-id",
            "cli",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert text.startswith("raw_leads_hubspot: WARNED  (300 rows, 2 quarantined = 0.7%, threshold 5.0%)")
    assert "quarantined rows:\n  - raw_leads_hubspot." in text and "raw_leads_hubspot.email: 1 row(s)" in text
    assert "critical (stops the run)" not in text and "quarantine: " in text

    bad = tmp_path / "bad.parquet"
    pq.write_table(dirty_leads.slice(0, 0), bad)
    code = main(
        ["validate", "raw_leads_hubspot", str(bad), "--reference-time", "2026-11-01T00:00:00Z", "--dry-run"]
    )
    text = capsys.readouterr().out
    assert code == 1
    assert (
        "FAILED" in text
        and "critical (stops the run):\n  - raw_leads_hubspot: empty extract (0 rows)" in text
    )

    code = main(["validate", "raw_leads_hubspot", str(tmp_path / "missing.parquet")])
    assert code == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_run_gate_compares_with_the_previous_run_and_raises_on_failure(settings: Settings) -> None:
    """The DAG entry point: day 1 sets the baseline, day 2 with a 90% drop stops the run."""
    lake = Lake(settings.lake_dir)
    day1, day2 = dt.date(2026, 10, 31), dt.date(2026, 11, 1)
    path1 = lake.write(
        syn.clean_raw_leads(500, "file", end=REF - dt.timedelta(days=1)),
        Partition("raw", "raw_leads", "file", day1),
    )
    summary = run_gate("raw_leads_file", path1, run_id="d1", reference_time=REF - dt.timedelta(days=1),
                       settings=settings)  # fmt: skip
    assert summary["decision"] == "passed" and summary["run_date"] == "2026-10-31"
    assert json.loads(json.dumps(summary)) == summary  # XCom-safe
    path2 = lake.write(syn.clean_raw_leads(40, "file"), Partition("raw", "raw_leads", "file", day2))
    with pytest.raises(GateFailed, match=r"volume drop: 40 rows vs 500 in the previous run"):
        run_gate("raw_leads_file", path2, run_id="d2", reference_time=REF, settings=settings)
