"""The retraining DAG in real Airflow against a real MLflow SQLite store, then the store inspected.

One small simulated world, three DAG runs:

1. a normal run: the version is registered, promoted to @champion (no champion yet) and the
   run holds every artifact an auditor needs;
2. a run without the engagement features (a clearly worse model): registered as
   @challenger, refused by the margin rule, the refusal on the version and in the audit log;
3. a run with cold-start minimums the world cannot meet: no model, the run says so.

Then a forced promotion and a rollback move @champion and back, and ``prox audit`` prints
the lineage. Budget: about a minute on an idle 2-core machine.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.slow]

SPEC = {"n_leads": 2_500, "days": 330, "seed": 5}
BASE_CONF = {
    "max_trials": 2,
    "time_budget_s": 20,
    "every_days": 21,
    "lookback_days": 240,
    "min_conversions": 60,
    "segment_min_rows": 150,
    "max_segment_gap": 0.5,
    "max_ece": 0.06,
}


@pytest.fixture(scope="module")
def env(airflow_db, tmp_path_factory):
    """An isolated data dir (own MLflow store, lake, audit log) and a small simulated world."""
    from prox.settings import Settings
    from sandbox.world import WorldSpec, write_world

    root = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROX_DATA_DIR", str(root / "data"))
        settings = Settings.from_env().ensure_dirs()
        world = root / "world"
        write_world(WorldSpec(**SPEC), world)
        yield settings, world


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dag_integrity import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / "prox_retrain.py"))
    assert bag.import_errors == {}
    return bag.get_dag("prox_retrain")


def _run(dag, world: Path, day: int, **conf):
    run = dag.test(
        logical_date=dt.datetime(2026, 11, day, tzinfo=dt.UTC),
        run_conf={**BASE_CONF, "source": f"world:{world}", **conf},
    )
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state
    return run


def _client(settings):
    from models.registry import client

    return client(settings.tracking_uri)


def _artifacts(mc, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in mc.list_artifacts(run_id, path):
        out |= _artifacts(mc, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def runs(env, dag):
    """The three DAG runs, in order (module-scoped: the later tests inspect their results)."""
    _settings, world = env
    from features.spec import FEATURES

    first = _run(dag, world, 1)
    engagement = [f.name for f in FEATURES if f.family in ("engagement", "account")] + [
        "status",
        "days_in_status",
    ]
    second = _run(dag, world, 2, exclude_features=engagement)
    third = _run(dag, world, 3, min_leads=10**6)
    return first, second, third


def test_first_run_is_champion_with_every_artifact(env, runs):
    settings, _ = env
    mc = _client(settings)
    v1 = mc.get_model_version_by_alias("prox-lead-scoring", "champion")
    assert str(v1.version) == "1"
    assert v1.tags["prox.decision"] == "promoted" and v1.tags["prox.decision.rule"] == "no_champion"
    run = mc.get_run(v1.run_id)
    files = _artifacts(mc, v1.run_id)
    for expected in (
        "model_card.md",
        "feature_spec/feature_spec.md",
        "feature_spec/feature_spec.json",
        "plots/roc.png",
        "plots/pr.png",
        "plots/calibration.png",
        "plots/lift.png",
        "plots/importance.png",
        "validation/features/features.json",
        "validation/features/features.html",
        "baseline/coefficients.md",
        "leakage/audit.json",
        "evaluation/evaluation.json",
        "lineage/lineage.json",
        "search/trials.json",
    ):
        assert expected in files, f"missing artifact {expected}"
    # MLflow 3 keeps the logged model beside the run; the version points at it
    import mlflow

    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/prox-lead-scoring/{v1.version}"))
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "signature:" in mlmodel and "inputs:" in mlmodel and (model_dir / "input_example.json").is_file()
    from models.score import bundle_dir

    assert (bundle_dir(model_dir) / "model.txt").is_file()
    assert run.info.run_id == v1.run_id
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["airflow.dag_id"] == "prox_retrain" and tags["airflow.run_id"]
    assert tags["prox.code_version"] and tags["validation.features"] in ("passed", "warned")
    for key in (
        "test.roc_auc",
        "test.pr_auc",
        "test.log_loss",
        "test.brier",
        "test.ece",
        "test.precision_top_10pct",
        "test.lift_top_decile",
        "test.largest_segment_gap",
        "test.oracle_auc",
        "test.logistic.roc_auc",
    ):
        assert key in metrics, key
    assert metrics["test.roc_auc"] > 0.75
    assert abs(metrics["test.oracle_auc"] - metrics["test.roc_auc"]) < 0.08
    contexts = {
        (d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
        for d in run.inputs.dataset_inputs
    }
    assert ("training_set", "training") in contexts
    assert {"raw_leads", "activities", "status_history"} <= {n for n, c in contexts if c == "source"}
    card = mc.download_artifacts(v1.run_id, "model_card.md")
    text = Path(card).read_text()
    assert "Data window" in text and "Limitations" in text and "Segments" in text


def test_worse_candidate_is_refused_and_recorded(env, runs):
    from models.registry import read_audit

    settings, _ = env
    mc = _client(settings)
    assert str(mc.get_model_version_by_alias("prox-lead-scoring", "champion").version) == "1"
    v2 = mc.get_model_version_by_alias("prox-lead-scoring", "challenger")
    assert str(v2.version) == "2"
    assert v2.tags["prox.decision"] == "refused" and v2.tags["prox.decision.rule"] == "margin"
    numbers = json.loads(v2.tags["prox.decision.numbers"])
    assert numbers["challenger_auc"] < numbers["champion_auc"]
    actions = [(r["version"], r["action"]) for r in read_audit(settings.data_dir, "prox-lead-scoring")]
    assert actions[:4] == [("1", "registered"), ("1", "promoted"), ("2", "registered"), ("2", "refused")]


def test_cold_start_trains_no_model_and_says_so(env, runs):
    from models.registry import read_audit
    from models.score import load_scorer

    settings, _ = env
    mc = _client(settings)
    assert len(mc.search_model_versions("name='prox-lead-scoring'")) == 2  # no third version
    cold = [r for r in read_audit(settings.data_dir) if r["action"] == "cold_start"]
    assert len(cold) == 1 and "cold start" in cold[0]["message"]
    run = mc.get_run(cold[0]["run_id"])
    assert run.data.tags["prox.cold_start"] == "true"
    assert "coldstart/rules.md" in _artifacts(mc, run.info.run_id)
    # a registry with no champion falls back to the rules
    scorer = load_scorer(settings.tracking_uri, "no-such-model")
    assert scorer.cold_start and scorer.model_version == "coldstart-rules-v1"


def test_force_promote_then_rollback(env, runs, capsys):
    from prox.cli import main

    settings, _ = env
    mc = _client(settings)
    assert main(["promote", "2"]) == 1  # the gate, run again from the CLI, still refuses it
    assert "refused (margin)" in capsys.readouterr().out
    assert main(["promote", "2", "--force"]) == 2  # forcing needs a reason
    assert main(["promote", "2", "--force", "--reason", "test: operator override"]) == 0
    assert str(mc.get_model_version_by_alias("prox-lead-scoring", "champion").version) == "2"
    assert main(["rollback", "--reason", "test: v2 misbehaves"]) == 0
    assert str(mc.get_model_version_by_alias("prox-lead-scoring", "champion").version) == "1"
    v2 = mc.get_model_version("prox-lead-scoring", "2")
    assert v2.tags["prox.decision"] == "rolled_back" and "misbehaves" in v2.tags["prox.decision.message"]
    assert main(["rollback", "--reason", ""]) == 2  # a rollback needs a reason
    capsys.readouterr()


def test_prox_audit_shows_the_lineage(env, runs, capsys):
    from prox.cli import main

    settings, _world = env
    mc = _client(settings)
    run = mc.get_run(mc.get_model_version("prox-lead-scoring", "1").run_id)
    assert main(["audit", "1"]) == 0
    out = capsys.readouterr().out
    assert run.data.tags["prox.training_set_digest"][:36] in out
    assert "raw_leads" in out and "activities" in out
    assert "features: passed" in out or "features: warned" in out
    assert "promoted" in out and "rule=no_champion" in out and "airflow:prox_retrain" in out
    assert "test.roc_auc" in out


def test_champion_scores_with_reasons(env, runs):
    import pyarrow.parquet as pq

    from models.score import load_scorer

    settings, _ = env
    scorer = load_scorer(settings.tracking_uri, "prox-lead-scoring")
    assert not scorer.cold_start and scorer.model_version == "1"
    mc = _client(settings)
    path = mc.get_run(mc.get_model_version("prox-lead-scoring", "1").run_id).data.tags[
        "prox.training_set_path"
    ]
    table = pq.read_table(sorted(Path(path).glob("*.parquet"))[0]).slice(0, 200)
    out = scorer.score_table(table)
    assert ((out.probability > 0) & (out.probability < 1)).all()
    assert out.score.min() >= 1 and out.score.max() <= 99
    assert set(out.tier) <= {"A", "B", "C", "D"}
    assert any(out.reasons_positive) and any(out.reasons_negative)
