from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from prox.settings import (
    Settings,
    SettingsError,
    airflow_connection_uri,
    child_environ,
    crm_environ,
    environment_variables,
    parse_crm_split,
)

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


def test_keyword_construction_validates_and_ignores_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PROX_MODEL_NAME", "from-the-environment")
    s = Settings(data_dir=tmp_path, seed=3)
    assert (s.data_dir, s.seed, s.model_name) == (tmp_path, 3, "prox-lead-scoring")
    assert s.with_changes(quarantine_threshold=0.2).quarantine_threshold == 0.2
    with pytest.raises(SettingsError, match="PROX_SEED"):
        Settings(seed=-1)
    with pytest.raises(SettingsError, match="PROX_QUARANTINE_THRESHOLD"):
        s.with_changes(quarantine_threshold=2)
    with pytest.raises(ValueError, match="frozen"):
        s.seed = 4  # type: ignore[misc]


def test_from_env_reads_the_given_mapping_not_the_process(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PROX_SEED", "99")
    assert Settings.from_env({"PROX_DATA_DIR": str(tmp_path)}).seed == 7
    assert Settings.from_env().seed == 99
    # empty counts as unset; only the exact upper-case name is read
    assert Settings.from_env({"PROX_SEED": "", "prox_seed": "5"}).seed == 7


def test_serve_and_feature_settings(tmp_path: Path):
    s = Settings.from_env({"PROX_DATA_DIR": str(tmp_path)})
    assert s.serve_token_path == tmp_path / "secrets" / "serve_tokens"
    assert s.serve_state_path == tmp_path / "serve" / "online.sqlite"
    assert (s.serve_alias, s.serve_poll_seconds, s.serve_max_body_bytes, s.serve_sync) == (
        "champion",
        0.0,
        2 * 1024 * 1024,
        "FULL",
    )
    assert (s.serve_push, s.serve_prune_hours, s.serve_max_batch) == (True, 24.0, 64)
    assert (s.features_keep_memory, s.code_version, s.web_tracking_dir, s.pii_hash_key) == (
        True,
        "unknown",
        None,
        None,
    )
    s = Settings.from_env(
        {
            "PROX_SERVE_TOKEN_FILE": str(tmp_path / "t"),
            "PROX_SERVE_STATE": str(tmp_path / "s.db"),
            "PROX_SERVE_PUSH": "0",
            "PROX_SERVE_MAX_BATCH": "8",
            "PROX_FEATURES_KEEP_MEMORY": "0",
            "PROX_WEB_TRACKING_DIR": str(tmp_path / "web"),
        }
    )
    assert (s.serve_token_path, s.serve_state_path) == (tmp_path / "t", tmp_path / "s.db")
    assert (s.serve_push, s.serve_max_batch, s.features_keep_memory) == (False, 8, False)
    assert s.web_tracking_dir == tmp_path / "web"
    with pytest.raises(SettingsError, match="PROX_SERVE_SYNC"):
        Settings.from_env({"PROX_SERVE_SYNC": "sometimes"})
    with pytest.raises(SettingsError, match="PROX_SERVE_MAX_BATCH: must be positive"):
        Settings.from_env({"PROX_SERVE_MAX_BATCH": "0"})


def test_the_pii_hash_key_is_never_printed():
    s = Settings.from_env({"PROX_PII_HASH_KEY": "top-secret-key"})
    assert s.pii_hash_key is not None and s.pii_hash_key.get_secret_value() == "top-secret-key"
    assert "top-secret-key" not in repr(s) and "top-secret-key" not in str(s)


def test_crm_credentials_and_airflow_connections_come_through_helpers():
    env = {"PROX_SALESFORCE_URL": "https://x", "PROX_SALESFORCE_PASSWORD": "", "PROX_HUBSPOT_URL": "h"}
    assert crm_environ("salesforce", env) == {"PROX_SALESFORCE_URL": "https://x"}
    assert airflow_connection_uri("prox_hubspot", {"AIRFLOW_CONN_PROX_HUBSPOT": "http://h"}) == "http://h"
    assert airflow_connection_uri("prox_hubspot", {}) is None
    assert child_environ({"EXTRA_FOR_CHILD": "1"})["EXTRA_FOR_CHILD"] == "1"


# ---- the README's configuration table and the one reader of the environment ------------------
REPO = Path(__file__).resolve().parents[2]


def _readme_variables() -> set[str]:
    """Variable names in the first column of the table(s) of README's "Configuration" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_readme_table_lists_exactly_the_variables_the_code_reads():
    code = set(environment_variables())
    assert {f"PROX_{name.upper()}" for name in Settings.model_fields} <= code
    readme = _readme_variables()
    assert not code - readme, f"read by the code but missing from README's table: {sorted(code - readme)}"
    assert not readme - code, f"in README's table but unknown to prox/settings.py: {sorted(readme - code)}"


# Passes once every reader goes through prox/settings.py. The two last readers outside it
# (expectations/runner.py, pipelines/nightly.py) belong to other changes of issue 15.
ENVIRONMENT_READERS = {"prox/settings.py", "prox/airflow_env.py"}
ENVIRONMENT_ACCESS = re.compile(
    r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import\b.*\b(environ|getenv)\b"
)


SKIPPED_DIRS = {"tests", "benchmarks", "build", "dist", "var", "node_modules", "__pycache__"}


def _source_files() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS and not d.endswith(".egg-info")
        ]
        found += [Path(root, f) for f in files if f.endswith(".py")]
    return sorted(found)


def test_only_the_settings_module_touches_the_environment():
    offenders = []
    for path in _source_files():
        rel = path.relative_to(REPO).as_posix()
        if rel in ENVIRONMENT_READERS:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if ENVIRONMENT_ACCESS.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "read the environment through prox/settings.py:\n" + "\n".join(offenders)
