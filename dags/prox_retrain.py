"""
### ProX: retrain the lead-scoring model (weekly, or on demand)

Every Sunday night, or when triggered (with parameters for the search budget and the gate):

1. **build_training_set**: point-in-time snapshots of the canonical leads, engagement and
   status history (lake clean zone, or the simulated world), labelled "converted within the
   horizon", stacked -> `features/training_set`, in a folder keyed by the run's date and the
   content digest (a rerun on the same data reuses it; no run overwrites another's).
2. **validate**: the Great Expectations `features` suite on it; a critical failure stops here.
3. **train**: one MLflow run: lineage (digests of the training set and its sources), the
   validation evidence, the cold-start check (too little history: rules-based score, no
   model), the leakage audit, LightGBM with a bounded search and the logistic baseline, both
   calibrated; the better on validation wins.
4. **evaluate**: the newest holdout: metrics, segments, oracle (simulated data), tiers,
   plots, model card.
5. **register**: a new model version with signature and input example, `@challenger`.
6. **gate**: promoted to `@champion` only if it uses no column the leakage audit flagged,
   leaks no more than the champion, beats it on the same holdout by the margin and passes the
   calibration and segment-gap limits; the decision is recorded on the version and in the
   audit log. A refusal for leakage, or one that leaves no champion at all, fails the task
   (no retry); an ordinary refusal leaves the champion serving and the run green.

Tasks pass small dicts (paths, run ids, figures) through XCom; each re-reads its inputs.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

RUN_DATE = "{{ (data_interval_end or dag_run.run_after) | ds }}"


def _airflow_ids() -> dict:
    """The DAG and run ids of the running task, for the MLflow run's tags."""
    ctx = get_current_context()
    ti = ctx["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}


@dag(
    dag_id="prox_retrain",
    schedule="0 2 * * 0",
    start_date=dt.datetime(2026, 1, 4, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["prox", "model"],
    doc_md=__doc__,
    default_args={"owner": "prox", "retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    params={
        "source": Param("auto", type="string", description="auto, lake, world or world:<dir>"),
        "max_trials": Param(12, type="integer", minimum=1, description="LightGBM search: max trials"),
        "time_budget_s": Param(900, type="number", minimum=1, description="LightGBM search: seconds"),
        "num_threads": Param(1, type="integer", minimum=1, description="LightGBM threads"),
        "max_num_leaves": Param(31, type="integer", minimum=2, description="LightGBM search: leaves cap"),
        "max_depth": Param(5, type="integer", description="LightGBM search: depth cap (-1: none)"),
        "seed": Param(7, type="integer", minimum=0),
        "every_days": Param(14, type="integer", minimum=1, description="days between snapshots"),
        "lookback_days": Param(365, type="integer", minimum=30, description="history used"),
        "exclude_features": Param([], type="array", description="features to leave out"),
        "min_leads": Param(1000, type="integer", minimum=1, description="cold start below this many leads"),
        "min_conversions": Param(120, type="integer", minimum=1, description="... or this many conversions"),
        "segment_min_rows": Param(200, type="integer", minimum=1, description="rows for a segment's figures"),
        "margin": Param(0.002, type="number", description="ROC AUC gain needed over the champion"),
        "max_ece": Param(0.03, type="number", minimum=0, description="calibration limit"),
        "max_segment_gap": Param(0.15, type="number", minimum=0, description="segment AUC gap limit"),
    },
)
def prox_retrain():
    @task(multiple_outputs=False)
    def build_training_set(run_date: str, params: dict | None = None) -> dict:
        """Stacked snapshots with labels in the lake; returns its path and digests."""
        from pipelines.retrain import RetrainConfig
        from pipelines.retrain import build_training_set as step
        from prox.settings import Settings

        settings = Settings.from_env().ensure_dirs()
        options = RetrainConfig.from_params(params).options
        return step(settings, dt.date.fromisoformat(run_date), source=params["source"], options=options)

    @task(multiple_outputs=False)
    def validate(info: dict) -> dict:
        """GX features suite on the training set; fails the run on a critical failure."""
        from pipelines.retrain import validate_training_set
        from prox.settings import Settings

        ids = _airflow_ids()
        return validate_training_set(Settings.from_env(), info, run_id=f"{ids['dag_id']}-{ids['run_id']}")

    @task(multiple_outputs=False)
    def train(info: dict, validation: dict, params: dict | None = None) -> dict:
        """The MLflow run: lineage, evidence, cold-start check, leakage audit, models."""
        from pipelines.retrain import RetrainConfig
        from pipelines.retrain import train as step
        from prox.settings import Settings

        cfg = RetrainConfig.from_params(params)
        return step(
            Settings.from_env(),
            info,
            validation,
            config=cfg.train,
            options=cfg.options,
            airflow=_airflow_ids(),
        )

    @task(multiple_outputs=False)
    def evaluate(info: dict, trained: dict, params: dict | None = None) -> dict:
        """Newest-holdout figures, segments, oracle, tiers, plots and the model card."""
        from pipelines.retrain import RetrainConfig
        from pipelines.retrain import evaluate as step
        from prox.settings import Settings

        cfg = RetrainConfig.from_params(params)
        return step(Settings.from_env(), info, trained, config=cfg.train, options=cfg.options)

    @task(multiple_outputs=False)
    def register(info: dict, trained: dict, evaluated: dict) -> dict:
        """A new registered version, @challenger (nothing on cold start)."""
        from pipelines.retrain import register as step
        from prox.settings import Settings

        return step(Settings.from_env(), info, trained, evaluated, airflow=_airflow_ids())

    @task(multiple_outputs=False)
    def gate(info: dict, registered: dict, evaluated: dict, params: dict | None = None) -> dict:
        """Promote to @champion or refuse; recorded on the version and in the audit log."""
        from pipelines.retrain import RetrainConfig
        from pipelines.retrain import gate as step
        from pipelines.tasks import fail_run
        from prox.settings import Settings

        cfg = RetrainConfig.from_params(params)
        result = step(
            Settings.from_env(),
            info,
            registered,
            evaluated,
            gate_config=cfg.gate,
            config=cfg.train,
            options=cfg.options,
            airflow=_airflow_ids(),
        )
        if result.get("exit_code"):  # refused for leakage, or no champion at all: recorded, then fail
            fail_run(result["message"])
        return result

    info = build_training_set(RUN_DATE)
    validation = validate(info)
    trained = train(info, validation)
    evaluated = evaluate(info, trained)
    registered = register(info, trained, evaluated)
    gate(info, registered, evaluated)


prox_retrain()
