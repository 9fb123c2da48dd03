from __future__ import annotations

from pathlib import Path

import pytest

from prox.settings import Settings, SettingsError, parse_crm_split

pytestmark = pytest.mark.unit


def test_defaults_live_under_one_data_dir(tmp_path: Path):
    s = Settings.from_env({"PROX_DATA_DIR": str(tmp_path)})
    for path in (s.lake_dir, s.world_dir, s.sandbox_dir, s.airflow_home, s.mlflow_dir, s.secrets_dir):
        assert path.is_relative_to(tmp_path)
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert not tmp_path.joinpath("lake").exists()  # reading settings writes nothing


def test_environment_overrides_are_typed(tmp_path: Path):
    s = Settings.from_env(
        {
            "PROX_DATA_DIR": str(tmp_path),
            "PROX_SEED": "11",
            "PROX_DIRT_RATE": "0.1",
            "PROX_CRM_SPLIT": "salesforce=3,hubspot=1",
            "PROX_MLFLOW_TRACKING_URI": "http://m:5000",
        }
    )
    assert s.seed == 11 and s.dirt_rate == 0.1
    assert s.crm_split == {"salesforce": 0.75, "hubspot": 0.25}
    assert s.tracking_uri == "http://m:5000"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PROX_DEMO_LEADS": "-3"}, "PROX_DEMO_LEADS"),
        ({"PROX_DEMO_LEADS": "many"}, "PROX_DEMO_LEADS"),
        ({"PROX_DIRT_RATE": "0.9"}, "PROX_DIRT_RATE"),
        ({"PROX_CRM_SPLIT": "pipedrive=1"}, "PROX_CRM_SPLIT"),
        ({"PROX_CRM_SPLIT": "salesforce=-1,hubspot=2"}, "PROX_CRM_SPLIT"),
        ({"PROX_QUARANTINE_THRESHOLD": "0"}, "PROX_QUARANTINE_THRESHOLD"),
    ],
)
def test_nonsense_is_rejected_naming_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_crm_split_accepts_a_single_share():
    assert parse_crm_split("0.6") == {"salesforce": 0.6, "hubspot": pytest.approx(0.4)}


def test_unwritable_data_dir_is_named(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="PROX_DATA_DIR"):
        Settings.from_env({"PROX_DATA_DIR": str(blocker / "sub")}).ensure_dirs()
