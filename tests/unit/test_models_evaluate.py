"""Metrics, segments, leakage audit, gate rules, tiers, explanations and the cold-start rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from models.dataset import FeatureEncoder
from models.evaluate import (
    binary_metrics,
    deciles,
    expected_calibration_error,
    fast_auc,
    leakage_audit,
    oracle_comparison,
    segment_metrics,
)
from models.registry import GateConfig, decide

pytestmark = pytest.mark.unit


def scored(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 9, size=n)
    return (rng.random(n) < p).astype(int), p


def test_headline_metrics_of_a_calibrated_score():
    y, p = scored()
    m = binary_metrics(y, p)
    assert 0.7 < m["roc_auc"] < 0.8 and m["ece"] < 0.01
    assert m["precision_top_5pct"] > m["precision_top_10pct"] > m["precision_top_20pct"] > m["base_rate"]
    assert m["lift_top_decile"] > 2
    assert expected_calibration_error(y, np.clip(p * 2, 0, 1)) > 0.05
    dec = deciles(y, p)
    assert [d["decile"] for d in dec] == list(range(1, 11)) and dec[0]["rate"] > dec[-1]["rate"]
    from sklearn.metrics import roc_auc_score

    assert fast_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_the_worst_segment_is_flagged():
    y, p = scored()
    seg = np.where(np.arange(len(y)) % 4 == 0, "bad", "good").astype(object)
    noisy = p.copy()
    rng = np.random.default_rng(1)
    noisy[seg == "bad"] = rng.random((seg == "bad").sum())  # the model knows nothing there
    table, gaps, largest = segment_metrics(y, noisy, {"region": seg})
    assert largest["flagged"] and largest["dimension"] == "region" and largest["segment"] == "bad"
    assert gaps["region"] > 0.1
    assert {r["segment"] for r in table["region"]} == {"bad", "good"}


def test_leakage_audit_flags_a_near_perfect_feature_and_one_filled_after_conversion():
    y, p = scored(5000)
    rng = np.random.default_rng(2)
    leaky = y + rng.normal(0, 0.1, size=len(y))  # "converted flag" in disguise
    after = np.where(y == 1, rng.normal(50_000, 1000, len(y)), np.nan)  # e.g. an opportunity amount
    after[np.flatnonzero(y == 0)[:10]] = 1.0
    X = np.column_stack([p, leaky, after])
    enc = FeatureEncoder(("honest", "leaky", "deal_amount"))
    findings = {f.feature: f for f in leakage_audit(X, y, enc, allowlist=["deal_amount"])}
    assert not findings["honest"].flagged
    assert findings["leaky"].flagged and findings["leaky"].excluded and "AUC" in findings["leaky"].rule
    assert findings["deal_amount"].flagged and "converters" in findings["deal_amount"].rule
    assert not findings["deal_amount"].excluded  # allowlisted


def test_oracle_comparison_uses_the_same_rows():
    y, p = scored()
    q = p.copy()
    q[:100] = np.nan
    out = oracle_comparison(y, p * 0.5, q)
    assert out["oracle_rows"] == len(y) - 100
    assert out["oracle_gap"] == pytest.approx(0.0, abs=1e-12)  # same ranking


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted", "rule"),
    [
        ({"roc_auc": 0.80, "ece": 0.01}, None, True, "no_champion"),
        ({"roc_auc": 0.81, "ece": 0.01}, {"roc_auc": 0.80}, True, "margin"),
        ({"roc_auc": 0.801, "ece": 0.01}, {"roc_auc": 0.80}, False, "margin"),
        ({"roc_auc": 0.90, "ece": 0.08}, {"roc_auc": 0.80}, False, "calibration"),
        ({"roc_auc": 0.90, "ece": 0.01, "largest_segment_gap": 0.3}, None, False, "segment_gap"),
    ],
)
def test_gate_rules(challenger, champion, promoted, rule):
    decision = decide(challenger, champion, GateConfig(margin=0.002, max_ece=0.03, max_segment_gap=0.15))
    assert decision.promoted is promoted and decision.rule == rule
    assert decision.numbers["margin"] == 0.002 and decision.message.startswith(
        "promoted" if promoted else "refused"
    )


def test_tiers_follow_the_precision_reached_on_the_holdout():
    from models.score import score_quantiles, tier_thresholds

    y, p = scored(50_000)
    cuts, info = tier_thresholds(y, p)
    assert cuts["A"] > cuts["B"] > cuts["C"] == pytest.approx(y.mean())
    assert info["A"]["realised_lift"] > 3.5 and 1.0 < info["C"]["realised_lift"] < info["B"]["realised_lift"]
    assert info["A"]["holdout_share"] < info["B"]["holdout_share"]
    q = score_quantiles(p)
    assert len(q) == 98
    from models.bundle import Calibrator, ModelBundle

    bundle = ModelBundle(
        "logistic",
        FeatureEncoder(("x",)),
        Calibrator(),
        score_quantiles=q,
        tier_thresholds={k: v for k, v in cuts.items() if v is not None},
    )
    scores = bundle.scores(p)
    assert scores.min() == 1 and scores.max() == 99
    assert abs(np.mean(scores <= 50) - 0.5) < 0.02
    tiers = bundle.tiers(p)
    assert set(tiers) == {"A", "B", "C", "D"} and np.all(p[tiers == "A"] >= cuts["A"])
    # a useless (but calibrated) model puts nobody at 4x the average: no A leads
    flat = y.mean() * (1 + 0.1 * np.random.default_rng(0).standard_normal(len(y)))
    cuts_useless, _ = tier_thresholds(y, flat)
    assert cuts_useless["A"] is None and cuts_useless["B"] is None and cuts_useless["C"] is not None


def test_reasons_are_plain_language_from_the_spec():
    from models.bundle import Calibrator, LogisticModel, ModelBundle
    from models.explain import phrase, reasons

    enc = FeatureEncoder(
        ("n_pricing_visits_7d", "industry", "days_since_last_event"), {"industry": ("software", "retail")}
    )
    terms = [
        {
            "feature": "n_pricing_visits_7d",
            "kind": "num",
            "fill": 0.0,
            "log": False,
            "mean": 0.0,
            "scale": 1.0,
            "label": "n",
            "z_mean": 0.0,
        },
        {"feature": "industry", "kind": "level", "code": 1, "label": "industry=retail", "z_mean": 0.0},
        {
            "feature": "days_since_last_event",
            "kind": "num",
            "fill": 0.0,
            "log": False,
            "mean": 0.0,
            "scale": 1.0,
            "label": "d",
            "z_mean": 0.0,
        },
    ]
    bundle = ModelBundle("logistic", enc, Calibrator(), logistic=LogisticModel(terms, [0.8, -0.5, 0.0], -2.0))
    pos, neg = reasons(bundle, np.array([3.0, 1.0, np.nan]))
    assert [r["text"] for r in pos] == ["visited the pricing page 3 times in the last 7 days"]
    assert [r["text"] for r in neg] == ["works in retail"]
    assert phrase("days_since_last_event", float("nan")) == "has no days since last event on record"
    assert phrase("some_flat_column", 4) == "some flat column is 4"


def test_cold_start_decision_and_rules():
    from models.coldstart import decide as cold_decide
    from models.coldstart import score_rules

    table = pa.table({"lead_id": ["a", "a", "b", "c"], "label": [0, 1, 0, 0]})
    d = cold_decide(table, min_leads=3, min_conversions=2)
    assert d.cold_start and d.leads == 3 and d.conversions == 1 and "need 2" in d.reason
    feats = pa.table(
        {
            "seniority": ["vp", "student"],
            "size_band": ["201-1000", "1-10"],
            "industry": ["software", "nonprofit"],
            "lead_source": ["customer referral", "list import"],
            "email_type": ["corporate", "free"],
            "data_completeness": [1.0, 0.2],
            "engagement_decayed": [25.0, 0.0],
            "n_high_intent_30d": [4, 0],
            "days_since_last_event": [2.0, None],
            "n_sales_form_submits_30d": [1, 0],
        }
    )
    out = score_rules(feats)
    assert out["score"][0] == 99 and out["tier"][0] == "A"
    assert out["score"][1] < 10 and out["tier"][1] == "D"
    assert out["top_rules"][0][0] in ("engagement_decayed", "n_high_intent_30d")


def test_only_leads_whose_pushed_values_changed_are_explained_again():
    """Unchanged leads keep the reasons their CRM shows; the rest get exact new ones."""
    from models.bundle import Calibrator, LogisticModel, ModelBundle
    from models.score import explain_changed

    enc = FeatureEncoder(("n_pricing_visits_7d",), {})
    term = {"feature": "n_pricing_visits_7d", "kind": "num", "fill": 0.0, "log": False, "mean": 0.0,
            "scale": 1.0, "label": "n", "z_mean": 0.0}  # fmt: skip
    bundle = ModelBundle("logistic", enc, Calibrator(), logistic=LogisticModel([term], [0.8], -2.0))
    X = np.array([[3.0], [5.0], [2.0], [4.0]])
    ids = ["same", "score-moved", "never-pushed", "no-reasons-kept"]
    scores, tiers = np.array([50, 61, 40, 70]), np.array(["C", "B", "C", "B"])
    pushed = {"same": (50, "C"), "score-moved": (60, "B"), "no-reasons-kept": (70, "B")}
    carried = {"same": ((50, "C"), ["kept reason"], []), "score-moved": ((60, "B"), ["old"], [])}
    positive, negative, explained = explain_changed(bundle, X, ids, scores, tiers, pushed, carried)
    assert explained == 3
    assert positive[0] == ["kept reason"]  # carried over, no TreeSHAP
    assert positive[1] == ["visited the pricing page 5 times in the last 7 days"]
    assert positive[2] == ["visited the pricing page 2 times in the last 7 days"]
    assert positive[3] == ["visited the pricing page 4 times in the last 7 days"]
    assert negative == [[], [], [], []]
