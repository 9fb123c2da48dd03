"""The gate and leakage: a model that uses a flagged column, or leaks more than the champion,
is never promoted; refusals that matter exit non-zero and say how to proceed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models.dataset import FeatureEncoder, labels, nullify_placeholders, stratified_split
from models.evaluate import binary_metrics
from models.leakage import audit, without
from models.registry import GateConfig, decide
from models.train import TrainConfig, train_models
from tests.unit.simulated_leads import PLANTED, lead_world

pytestmark = pytest.mark.unit

CONFIG = GateConfig(margin=0.002, max_ece=0.03, max_segment_gap=0.15, max_leakage_increase=0.005)
CLEAN = {"kept": [], "suspect": [], "suspect_auc": 0.0}


def test_a_model_using_a_kept_flagged_column_is_refused_with_a_non_zero_exit():
    d = decide(
        {"roc_auc": 0.95, "ece": 0.01},
        {"roc_auc": 0.80, "ece": 0.01},
        CONFIG,
        leakage={"kept": ["lead_quality"], "suspect": [], "suspect_auc": 0.04},
        champion_leakage=CLEAN,
    )
    assert not d.promoted and d.rule == "leakage_flagged_column" and d.exit_code == 1
    assert "lead_quality" in d.message and "--keep" in d.message


def test_a_model_leaking_more_than_the_champion_is_refused():
    leaky = {"kept": [], "suspect": ["last_activity"], "suspect_auc": 0.03}
    d = decide(
        {"roc_auc": 0.85, "ece": 0.01}, {"roc_auc": 0.80}, CONFIG, leakage=leaky, champion_leakage=CLEAN
    )
    assert not d.promoted and d.rule == "leakage_vs_champion" and d.exit_code == 1
    assert "last_activity" in d.message and "0.0300" in d.message
    # the same suspicion on both sides is no reason to refuse
    same = decide(
        {"roc_auc": 0.85, "ece": 0.01}, {"roc_auc": 0.80}, CONFIG, leakage=leaky, champion_leakage=leaky
    )
    assert same.promoted and same.rule == "margin" and same.exit_code == 0
    # a champion trained before audits were kept: the comparison is skipped, not failed
    old = decide(
        {"roc_auc": 0.85, "ece": 0.01}, {"roc_auc": 0.80}, CONFIG, leakage=leaky, champion_leakage=None
    )
    assert old.promoted


def test_the_first_model_refused_exits_non_zero_and_says_how_to_proceed():
    d = decide({"roc_auc": 0.80, "ece": 0.0315}, None, CONFIG, leakage=CLEAN)
    assert not d.promoted and d.rule == "calibration" and d.first_model and d.exit_code == 1
    assert "no champion yet" in d.message and "prox promote" in d.message and "--force" in d.message
    assert d.to_json()["exit_code"] == 1


def test_ordinary_refusals_with_a_champion_in_place_exit_zero():
    d = decide(
        {"roc_auc": 0.801, "ece": 0.01}, {"roc_auc": 0.80}, CONFIG, leakage=CLEAN, champion_leakage=CLEAN
    )
    assert not d.promoted and d.rule == "margin" and d.exit_code == 0 and "prox promote" not in d.message
    first = decide({"roc_auc": 0.8, "ece": 0.01}, None, CONFIG, leakage=CLEAN)
    assert first.promoted and first.rule == "no_champion" and first.exit_code == 0


@pytest.mark.slow
def test_the_gate_keeps_the_honest_champion_over_a_model_trained_with_kept_leaks():
    """The issue's story: a model keeping post-outcome columns scores a higher AUC on the same
    holdout (the holdout leaks too), and the gate still keeps the honest champion."""
    table = nullify_placeholders(lead_world(n=5000, seed=21, strength=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = stratified_split(table, seed=7)
    encoder = FeatureEncoder.infer(split.train)
    X, y = encoder.transform(split.train), labels(split.train)
    config = TrainConfig(max_trials=1, baseline=False, calibration="sigmoid", time_budget_s=30)

    honest_audit = audit(X, y, encoder)
    assert set(honest_audit.flagged) == set(PLANTED)
    honest = train_models(split, without(encoder, honest_audit.excluded), config).winner.bundle
    leaky_audit = audit(X, y, encoder, keep=PLANTED)
    leaky = train_models(split, without(encoder, leaky_audit.excluded), config).winner.bundle

    y_test = labels(split.test)
    champion = binary_metrics(y_test, honest.predict(honest.encoder.transform(split.test)))
    challenger = binary_metrics(y_test, leaky.predict(leaky.encoder.transform(split.test)))
    assert challenger["roc_auc"] > champion["roc_auc"] + 0.02  # the leak looks like a better model
    d = decide(
        {**challenger, "ece": 0.0},
        champion,
        CONFIG,
        leakage=leaky_audit.summary(),
        champion_leakage=honest_audit.summary(),
    )
    assert not d.promoted and d.rule == "leakage_flagged_column" and d.exit_code == 1
    assert all(name in d.message for name in PLANTED)
    assert np.isfinite(d.numbers["challenger_auc"])
