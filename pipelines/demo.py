"""The demo job: the main job on embedded defaults, end to end.

1. simulate the CRM world if there is none yet (``PROX_DEMO_LEADS`` leads);
2. start the CRM sandbox (HTTPS emulators of Salesforce and HubSpot) and load the world;
3. run the retraining DAG once if the registry has no ``@champion``;
4. run the nightly scoring DAG in real Airflow for the world's last day;
5. print what happened and where to look; stop what it started.

Steps 1 and 2 are the sandbox's: the entry point (``prox demo``) passes them in, so this job
never imports the sandbox.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prox.settings import Settings


def run_demo(
    settings: Settings,
    *,
    ensure_world: Callable[[Settings], dict],
    running_sandbox: Callable[[Settings], contextlib.AbstractContextManager[Any]],
    retrain: bool = False,
) -> int:
    """Run the demo; ``ensure_world`` returns the world summary, ``running_sandbox`` yields the
    sandbox's connection info with its credentials exported."""
    from prox.airflow_env import export_airflow_environ

    export_airflow_environ(settings)  # before Airflow is first imported
    started = time.perf_counter()
    summary = ensure_world(settings)
    print(
        f"World: {summary['leads']:,} leads ({', '.join(f'{k} {v:,}' for k, v in summary['by_crm'].items())}), "
        f"{summary['events']:,} engagement events, {summary['converted']:,} converted "
        f"({summary['conversion_rate']:.1%}), {summary['start'][:10]} to {summary['end'][:10]}"
    )
    as_of = dt.datetime.fromisoformat(summary["end"])
    migrate_airflow(settings)
    with running_sandbox(settings) as info:
        if retrain or not has_champion(settings):
            print("No champion model yet: running the retraining DAG (prox_retrain) once ...")
            run_dag("prox_retrain", as_of, {"source": "world", "max_trials": 6, "time_budget_s": 120})
        print("Running the nightly scoring DAG (prox_nightly) in Airflow ...")
        state = run_dag("prox_nightly", as_of, {})
        report = _read_report(settings, as_of.date())
        if report is None:
            print(f"The nightly run ended {state} without a report; see {settings.airflow_home / 'logs'}")
            return 1
        from pipelines.nightly import summarise

        print()
        print(summarise(report, top_leads(settings, as_of.date())))
        print()
        print(f"Run report:        {report['report_path']}")
        print(f"Validation:        {report['validation_reports']}/index.html")
        print(f"MLflow runs:       .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri}")
        print(
            f"CRM records:       Salesforce {info.salesforce_url}, HubSpot {info.hubspot_url} "
            f"(sandbox state in {settings.sandbox_dir})"
        )
        print(f"Done in {time.perf_counter() - started:.0f} s (nightly DAG state: {state}).")
        return 0 if state == "success" else 1


def migrate_airflow(settings: Settings) -> None:
    """Create or upgrade the Airflow metadata DB (SQLite under the data directory)."""
    (settings.airflow_home / "plugins").mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {done.stderr[-2000:]}")


def has_champion(settings: Any) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        client.get_model_version_by_alias(settings.model_name, "champion")
    except MlflowException:
        return False
    return True


def run_dag(dag_id: str, logical_date: dt.datetime, conf: dict) -> str:
    """Run one DAG in-process (a distinct run per call; the tasks are idempotent for the date)."""
    from prox.airflow_env import run_in_process, run_state

    return run_state(run_in_process(dag_id, logical_date, conf))


def _read_report(settings: Any, run_date: dt.date) -> dict | None:
    from pipelines.common import nightly_report_dir

    path = nightly_report_dir(settings, run_date) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def top_leads(settings: Any, run_date: dt.date, n: int = 5) -> list[dict]:
    from features.lake import Lake, Partition
    from pipelines.common import ALL

    lake = Lake(settings.lake_dir)
    part = Partition("scores", "scores", ALL, run_date)
    if not lake.exists(part):
        return []
    rows = lake.read(
        part, columns=["lead_id", "probability", "score", "tier", "reasons_positive"]
    ).to_pylist()
    rows.sort(key=lambda r: -r["probability"])
    return [
        {
            "lead_id": r["lead_id"],
            "score": r["score"],
            "tier": r["tier"],
            "reasons": r["reasons_positive"] or [],
        }
        for r in rows[:n]
    ]
