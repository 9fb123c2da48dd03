"""The environment Airflow runs with on embedded defaults (SQLite, no examples, our DAGs).

Airflow reads its configuration from ``AIRFLOW__*`` variables at import, so these must be in
``os.environ`` before ``airflow`` is first imported (the demo, the tests and the Makefile do
that). The plugins folder points at an empty directory under the Airflow home on purpose:
our integration code is the installed ``plugins`` package, imported by that one name only.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from prox.settings import Settings, quiet_library_defaults

REPO_ROOT = Path(__file__).resolve().parent.parent


def airflow_environ(settings: Settings, *, dags_folder: Path | None = None) -> dict[str, str]:
    """``AIRFLOW__*`` variables for a local Airflow under ``settings.airflow_home``."""
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # A 2-core laptop: Airflow's default of 32 workers costs about 5.5 GB for nothing.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "PROX_DATA_DIR": str(settings.data_dir),
    }


def run_in_process(dag_id: str, logical_date: dt.datetime, conf: dict[str, Any] | None = None) -> Any:
    """Run one of our DAGs in-process with ``dag.test()`` (real Airflow: its metadata DB, its
    logs); returns the DagRun. Import errors of the DAG file raise, naming them."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{dag_id}.py"))
    if bag.import_errors:
        raise RuntimeError(f"{dag_id}: {bag.import_errors}")
    return bag.get_dag(dag_id).test(logical_date=logical_date, run_conf=conf or {})


def run_state(dag_run: Any) -> str:
    """A DagRun's state as text ("success", "failed")."""
    return str(getattr(dag_run.state, "value", dag_run.state))


def export_airflow_environ(settings: Settings) -> None:
    """Put Airflow's environment (and quiet library defaults) into this process, before Airflow
    is first imported; the DAG runs of this process inherit it."""
    os.environ.update(airflow_environ(settings))
    quiet_library_defaults()
