"""Shared fixtures: an isolated data directory and a real, migrated Airflow for the session.

Airflow reads ``AIRFLOW__*`` at import, so the session's environment is set in
``pytest_configure``, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from prox.airflow_env import airflow_environ
from prox.settings import Settings

_SESSION_DIR: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_DIR
    _SESSION_DIR = Path(tempfile.mkdtemp(prefix="prox-tests-"))
    settings = Settings.from_env({"PROX_DATA_DIR": str(_SESSION_DIR / "data")})
    os.environ.update(airflow_environ(settings))
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_DIR is not None:
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a fresh data directory, also exported as PROX_DATA_DIR."""
    monkeypatch.setenv("PROX_DATA_DIR", str(tmp_path / "data"))
    return Settings.from_env({"PROX_DATA_DIR": str(tmp_path / "data")}).ensure_dirs()


@pytest.fixture(scope="session")
def session_settings() -> Settings:
    """Settings on the session's data directory (shared by Airflow DAG runs)."""
    assert _SESSION_DIR is not None
    return Settings.from_env({"PROX_DATA_DIR": str(_SESSION_DIR / "data")}).ensure_dirs()


@pytest.fixture(scope="session")
def airflow_db(session_settings: Settings) -> Iterator[Path]:
    """A migrated Airflow metadata DB (SQLite) for ``dag.test()`` runs."""
    home = session_settings.airflow_home
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run(
        [str(airflow), "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield home
