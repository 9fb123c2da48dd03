"""``prox train --source file:`` on a simulated lead file with planted post-outcome fields and a
date column: the audit excludes them, a model that keeps one is refused (exit 1) while the
honest champion stays, every run keeps its own training set, and ``prox audit`` checks it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.simulated_leads import PLANTED, lead_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = ["--trials", "1", "--time-budget", "20", "--calibration", "sigmoid", "--model-name", "leads-demo"]


@pytest.fixture
def leads_csv(tmp_path: Path) -> Path:
    import pyarrow.csv as pcsv

    table = lead_world(n=5000, seed=31, strength=0.5)
    days = np.sort(np.random.default_rng(1).integers(0, 365, table.num_rows))
    created = [dt.date(2025, 1, 1) + dt.timedelta(days=int(d)) for d in days]
    table = table.append_column("created", pa.array(created, pa.date32()))
    table = table.rename_columns(["converted" if c == "label" else c for c in table.column_names])
    path = tmp_path / "leads.csv"
    pcsv.write_csv(table, path)
    return path


def test_kept_leaks_are_refused_and_the_honest_champion_stays(settings, leads_csv, capsys):
    from models.registry import client
    from prox.cli import main

    source = ["train", "--source", f"file:{leads_csv}", "--label", "converted", *TRAIN]
    assert main([*source, "--max-ece", "0.1", "--segment", "lead_source"]) == 0
    out = capsys.readouterr()
    assert "time column: created (auto-detected" in out.err and "stratified" not in out.err
    assert "[LightGBM] [Fatal]" not in out.err + out.out and "Downloading artifacts" not in out.err
    excluded = out.out.split("leakage audit: excluded ")[1].splitlines()[0]
    assert set(excluded.split(", ")) == set(PLANTED)
    assert "gate: promoted (no_champion)" in out.out

    mc = client(settings.tracking_uri)
    v1 = mc.get_model_version_by_alias("leads-demo", "champion")
    run = mc.get_run(v1.run_id)
    assert run.data.tags["prox.split"] == "ordered" and run.data.tags["prox.time_column"] == "created"
    card = mc.download_artifacts(v1.run_id, "model_card.md", str(settings.data_dir))
    text = Path(card).read_text()
    assert "newest data" in text and "| lead_source |" in text
    assert all(f"`{name}` -> excluded" in text for name in PLANTED)

    # the same file again, keeping a flagged column: a better-looking AUC, refused, exit 1
    assert main([*source, "--max-ece", "0.1", "--keep", "lead_quality"]) == 1
    out = capsys.readouterr().out
    assert "kept (--keep) lead_quality" in out and "gate: refused (leakage_flagged_column)" in out
    assert str(mc.get_model_version_by_alias("leads-demo", "champion").version) == str(v1.version)
    v2 = mc.get_model_version("leads-demo", "2")
    assert mc.get_run(v2.run_id).data.tags["prox.leakage_kept"] == "lead_quality"

    # two runs on one file: two training sets, each still the one its version was trained on
    sets = sorted((settings.lake_dir / "features" / "training_set" / "source=file-leads").glob("run=*"))
    assert len(sets) == 2
    assert main(["audit", "1", "--model-name", "leads-demo"]) == 0
    assert "training set on disk: matches" in capsys.readouterr().out


def test_the_first_model_refused_exits_non_zero_and_says_what_to_do(settings, leads_csv, capsys):
    from prox.cli import main

    code = main(
        ["train", "--source", f"file:{leads_csv}", "--label", "converted", *TRAIN, "--max-ece", "0.0001"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "gate: refused (calibration)" in out and "no champion yet" in out and "--force" in out
