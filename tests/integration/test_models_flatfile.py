"""``prox train --source file:<csv>`` end to end against a real MLflow store, and its errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

# ../shared/ beside the checkout holds the product's reference datasets
BANK = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[3] / "shared" / "data" / "bank-marketing" / "bank-full.csv",
            Path("/work/shared/data/bank-marketing/bank-full.csv"),
        )
        if p.exists()
    ),
    Path("bank-full.csv (not found beside the checkout)"),
)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not BANK.exists(), reason="bank-marketing data (../shared/data) not beside the checkout"
    ),
]


@pytest.fixture
def bank_sample(tmp_path: Path) -> Path:
    """Every 6th row of bank-full.csv (7,500 rows), or a synthetic stand-in when it is absent."""
    out = tmp_path / "bank-sample.csv"
    if BANK.is_file():
        lines = BANK.read_text().splitlines()
        out.write_text("\n".join([lines[0], *lines[1::6]]) + "\n")
        return out
    import numpy as np

    rng = np.random.default_rng(0)
    with out.open("w", newline="") as handle:
        w = csv.writer(handle, delimiter=";")
        w.writerow(["age", "job", "balance", "duration", "y"])
        for _ in range(6000):
            age, job = int(rng.integers(18, 90)), str(rng.choice(["admin", "student", "retired"]))
            p = 0.05 + 0.3 * (job == "student") + 0.002 * (age - 18)
            w.writerow(
                [
                    age,
                    job,
                    int(rng.normal(1000, 500)),
                    int(rng.integers(1, 900)),
                    "yes" if rng.random() < p else "no",
                ]
            )
    return out


def test_flat_file_train_registers_a_champion_and_warns_that_time_is_unknown(settings, bank_sample, capsys):
    from models.registry import client
    from prox.cli import main

    code = main(
        [
            "train",
            "--source",
            f"file:{bank_sample}",
            "--label",
            "y",
            "--drop",
            "duration",
            "--trials",
            "1",
            "--time-budget",
            "20",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "no time column" in out.err and "stratified random split" in out.err
    assert "validation: not_applicable" in out.out and "gate: promoted (no_champion)" in out.out
    auc = float(out.out.split("test ROC AUC ")[1].split()[0])
    assert auc > 0.7
    mc = client(settings.tracking_uri)
    v = mc.get_model_version_by_alias("prox-file-bank-sample", "champion")
    run = mc.get_run(v.run_id)
    assert run.data.tags["prox.split"] == "stratified" and "duration" not in run.data.params.get(
        "run.exclude_features", ""
    )
    assert main(["evaluate", "champion", "--model-name", "prox-file-bank-sample"]) == 0
    assert "roc_auc" in capsys.readouterr().out


def test_flat_file_errors_are_one_line_usage_errors(settings, tmp_path, capsys):
    from prox.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("a,y\n1,yes\n2,perhaps\n")
    assert main(["train", "--source", f"file:{bad}", "--label", "y"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "row 3, column 'y'" in err
    assert main(["train", "--source", f"file:{bad}"]) == 2
    assert "--label is required" in capsys.readouterr().err
    assert main(["audit", "7"]) == 2
    assert "no version '7'" in capsys.readouterr().err
