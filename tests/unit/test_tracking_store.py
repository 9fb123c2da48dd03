"""MLflow runs keep their artifacts beside the local store, never in the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import artifact_location, use_experiment

pytestmark = pytest.mark.unit


def test_artifacts_land_beside_the_sqlite_store_not_in_the_working_directory(tmp_path, monkeypatch):
    import mlflow

    store = tmp_path / "store" / "mlflow.db"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{store}"
    use_experiment(uri, "prox-test")
    use_experiment(uri, "prox-test")  # a second caller finds it
    note = tmp_path / "note.txt"
    note.write_text("evidence")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(note), artifact_path="report")
    assert run.info.artifact_uri.startswith(artifact_location(uri))
    assert (store.parent / "artifacts").is_dir()
    assert list((store.parent / "artifacts").rglob("note.txt"))
    assert not (cwd / "mlruns").exists()
    assert not list(Path(cwd).iterdir())


def test_a_tracking_server_chooses_its_own_artifact_location():
    assert artifact_location("http://mlflow.internal:5000") is None
