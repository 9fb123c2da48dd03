"""``prox demo``: the main job on embedded defaults, end to end.

1. simulate the CRM world if there is none yet (``PROX_DEMO_LEADS`` leads);
2. start the CRM sandbox (HTTPS emulators of Salesforce and HubSpot) and load the world;
3. run the retraining DAG once if the registry has no ``@champion``;
4. run the nightly scoring DAG in real Airflow for the world's last day;
5. print what happened and where to look; stop what it started.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on embedded defaults (what `make demo` runs)")
    p.add_argument("--retrain", action="store_true", help="retrain even if a champion exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prox.airflow_env import airflow_environ
    from prox.settings import Settings

    settings = Settings.from_env().ensure_dirs()
    os.environ.update(airflow_environ(settings))  # before Airflow is first imported
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
        if args.retrain or not has_champion(settings):
            print("No champion model yet: running the retraining DAG (prox_retrain) once ...")
            run_dag("prox_retrain", as_of, {"source": "world", "max_trials": 6, "time_budget_s": 120})
        print("Running the nightly scoring DAG (prox_nightly) in Airflow ...")
        state = run_dag("prox_nightly", as_of, {})
        report = _read_report(settings, as_of.date())
        if report is None:
            print(f"The nightly run ended {state} without a report; see {settings.airflow_home / 'logs'}")
            return 1
        from prox.nightly import summarise

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


def ensure_world(settings: Any) -> dict:
    from sandbox.world import WorldSpec, world_exists, write_world

    if world_exists(settings.world_dir):
        return json.loads((settings.world_dir / "spec.json").read_text())["summary"]
    spec = WorldSpec(
        n_leads=settings.demo_leads,
        days=settings.demo_days,
        seed=settings.seed,
        crm_split=settings.crm_split,
        dirt_rate=settings.dirt_rate,
    )
    print(f"Simulating a world of {spec.n_leads:,} leads over {spec.days} days into {settings.world_dir} ...")
    return write_world(spec, settings.world_dir)


def migrate_airflow(settings: Any) -> None:
    """Create or upgrade the Airflow metadata DB (SQLite under the data directory)."""
    (settings.airflow_home / "plugins").mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "db", "migrate"], env=os.environ.copy(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {done.stderr[-2000:]}")


@contextlib.contextmanager
def running_sandbox(settings: Any) -> Iterator[Any]:
    """The CRM sandbox with the world loaded, its credentials in the environment; stopped after
    if this call started it."""
    from sandbox import server

    already = server.status(settings.sandbox_dir)
    # ProX is for medium and large companies: their HubSpot portals are Pro/Enterprise, whose
    # real limit is 190 requests per 10 s (the sandbox's default is the Free/Starter 100)
    info = already or server.start(settings.sandbox_dir, faults={"hubspot_rate_limit": 190})
    try:
        marker = settings.sandbox_dir / "loaded-world.json"
        world_spec = (settings.world_dir / "spec.json").read_text()
        if not marker.is_file() or marker.read_text() != world_spec:
            counts = server.load_world_dir(settings.sandbox_dir, settings.world_dir, reset=True)
            marker.write_text(world_spec)
            print(f"Loaded the world into the CRM sandbox: {counts}")
        os.environ.update(info.connection_env())
        os.environ["PROX_WEB_TRACKING_DIR"] = str(info.web_tracking_dir)
        yield info
    finally:
        if already is None:
            server.stop(settings.sandbox_dir)


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
    path = settings.lake_dir / "reports" / "nightly" / f"run_date={run_date.isoformat()}" / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def top_leads(settings: Any, run_date: dt.date, n: int = 5) -> list[dict]:
    from features.lake import Lake, Partition
    from prox.nightly import ALL

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
