"""The rules that have one home: eligibility, the CRM registry, report paths, SQLite setup."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from features.eligibility import eligible_lead_ids, eligible_mask, ineligible_field, is_eligible
from features.lake import Lake, LakeError, safe_name
from prox.db import connect_sqlite

pytestmark = pytest.mark.unit

FLAGS = (True, False, None)


@pytest.mark.parametrize("policy", ["opt_in", "opt_out"])
def test_the_record_rule_and_the_table_rule_agree_on_every_flag_combination(policy):
    combos = list(itertools.product(FLAGS, FLAGS))
    leads = pa.table(
        {
            "lead_id": [f"l{i}" for i in range(len(combos))],
            "consent_processing": pa.array([c for c, _ in combos], pa.bool_()),
            "opted_out": pa.array([o for _, o in combos], pa.bool_()),
        }
    )
    by_table = set(eligible_lead_ids(leads, policy).to_pylist())
    by_record = {
        f"l{i}"
        for i, (c, o) in enumerate(combos)
        if is_eligible({"consent_processing": c, "opted_out": o}, policy)
    }
    assert by_table == by_record
    # opted-out leads are never eligible; under opt_in a missing consent is "no"
    assert all(not is_eligible({"consent_processing": c, "opted_out": True}, policy) for c in FLAGS)
    assert is_eligible({"consent_processing": None, "opted_out": None}, policy) is (policy == "opt_out")
    mask = eligible_mask(leads.column("consent_processing"), leads.column("opted_out"), policy)
    assert mask.null_count == 0


def test_an_unknown_policy_is_refused_by_both_forms():
    with pytest.raises(ValueError, match="opt_in"):
        is_eligible({}, "maybe")
    with pytest.raises(ValueError, match="opt_in"):
        eligible_lead_ids(
            pa.table({"lead_id": ["a"], "consent_processing": [True], "opted_out": [False]}), "x"
        )
    assert ineligible_field({"opted_out": True}) == "opted_out"
    assert ineligible_field({"consent_processing": False}) == "consent_processing"


def test_report_paths_are_made_in_one_place_with_file_safe_run_ids(tmp_path: Path):
    lake = Lake(tmp_path)
    run_id = "manual__2026-11-01T00:00:00+00:00"
    path = lake.report_dir("validation", run_id=run_id)
    assert path == tmp_path / "reports" / "validation" / f"run_id={safe_name(run_id)}"
    assert ":" not in path.name and "+" not in path.name
    assert lake.report_dir("nightly", run_date=dt.date(2026, 11, 1)).name == "run_date=2026-11-01"
    with pytest.raises(LakeError):
        lake.report_dir("nightly")


def test_the_crm_registry_is_the_one_list_the_dags_fan_out_over():
    from plugins.crm import CRMS, REGISTRY

    assert CRMS == tuple(REGISTRY) == ("salesforce", "hubspot")
    for name in ("prox_nightly", "prox_microbatch"):
        text = (Path(__file__).resolve().parents[2] / "dags" / f"{name}.py").read_text()
        assert "from plugins.crm import CRMS" in text and '"salesforce", "hubspot"' not in text


def test_sqlite_files_are_opened_in_wal_with_a_busy_timeout(tmp_path: Path):
    db = connect_sqlite(tmp_path / "deep" / "x.db", synchronous="normal")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert db.isolation_level is None
    db.close()
    with pytest.raises(ValueError, match="synchronous"):
        connect_sqlite(tmp_path / "y.db", synchronous="fast")
    assert isinstance(db, sqlite3.Connection)
