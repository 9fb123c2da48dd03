"""Every DAG in dags/ parses without import errors and follows the house rules.

New DAGs fall under these tests automatically.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY = {
    "pandas",
    "numpy",
    "pyarrow",
    "lightgbm",
    "sklearn",
    "mlflow",
    "great_expectations",
    "statsmodels",
    "simple_salesforce",
    "hubspot",
    "duckdb",
    "scipy",
}

pytestmark = pytest.mark.dags


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_there_are_dags():
    assert DAG_FILES, "dags/ holds no DAG file"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert len(dagbag.dags) >= len(DAG_FILES)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_top_level(path: Path):
    # parse time matters: the scheduler re-imports every DAG file continuously
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {
        (a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0] for n in top for a in n.names
    }
    assert not names & HEAVY, f"{path.name} imports {names & HEAVY} at top level"


def test_dag_rules(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.doc_md, f"{dag_id}: no doc_md"
        assert dag.catchup is False, f"{dag_id}: catchup must be off"
        assert dag.max_active_runs is not None and dag.max_active_runs <= 3, dag_id
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id}: no owner"
            assert t.retries >= 2, f"{dag_id}.{t.task_id}: retries {t.retries} < 2"
            assert t.retry_delay >= dt.timedelta(seconds=10), f"{dag_id}.{t.task_id}: retry_delay too short"
