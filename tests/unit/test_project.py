"""Project-level promises: the compose file is valid, the CLI is quick and honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def test_compose_file_is_valid_against_the_compose_spec():
    exe = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_packages_has_no_side_effects(tmp_path: Path):
    code = (
        "import prox.settings, prox.cli, features.privacy, features.contract, features.lake, sandbox.world, prox.cli.simulate;"
        "import sys; heavy = {'airflow', 'mlflow', 'lightgbm', 'great_expectations'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    env = {"PROX_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--leads", "-5"], "--leads"),
        (["simulate", "--days", "0"], "--days"),
        (["simulate", "--crm-split", "pipedrive=1"], "--crm-split"),
        (["simulate", "--dirt-rate", "0.9"], "--dirt-rate"),
    ],
)
def test_cli_rejects_nonsense_with_one_line_and_exit_2(args, needle, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "prox", *args],
        capture_output=True,
        text=True,
        env={"PROX_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_cli_names_an_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "prox", "simulate", "--leads", "10"],
        capture_output=True,
        text=True,
        env={"PROX_DATA_DIR": str(blocker), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode == 2 and "PROX_DATA_DIR" in result.stderr


def test_cli_simulate_writes_a_world(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prox",
            "simulate",
            "--leads",
            "300",
            "--days",
            "40",
            "--seed",
            "4",
            "--out",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        env={"PROX_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "w" / "spec.json").is_file() and (tmp_path / "w" / "activities.parquet").is_file()
    assert '"leads": 3' in result.stdout


def test_imports_follow_the_layers():
    """import-linter's contract in pyproject.toml: entry points > jobs > domain > settings, and
    nothing in the jobs or the domain imports the sandbox."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") >= 2
