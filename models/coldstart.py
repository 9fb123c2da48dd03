"""Cold start: a documented rules-based score when there is too little history to learn from.

A model is trained only when the training window holds at least ``MIN_LEADS`` distinct leads
and ``MIN_CONVERSIONS`` converting leads (by default 1,000 and 120, Salesforce Einstein's
published minimums). Below that, ProX scores with these rules and every run says so.

The score is fit points (0-50: who the lead is) plus engagement points (0-50: what the lead
did), read from the same point-in-time features as the model:

================  ====================================================================
fit               seniority (C-level/VP 12, director 10, manager 6, senior 4, IC 2),
                  company size (201-1000 10, 51-200 and 1001-5000 8, 5000+ 5, 11-50 4,
                  1-10 1), industry (software 8, financial services 6, telecoms and
                  professional services 4, healthcare 3, other known 2, education,
                  government and nonprofit 0), lead source (customer referral 10,
                  partner 8, web and webinar 6, event 5, organic search 4, other 2),
                  corporate email 6, profile completeness up to 4 (capped at 50)
engagement        decayed engagement up to 20 (20 at a score of 20+), high-intent actions
                  in 30 days up to 15 (5 each), recency (last event within 7 days 10,
                  30 days 6, 90 days 2), a sales form in 30 days 5
================  ====================================================================

Score = clip(points, 1, 99); tier A >= 70, B >= 50, C >= 30, else D. The "probability" is
``points / 100``: an ordering, NOT a calibrated chance (the score rows carry model version
``coldstart-rules-v1`` so nobody mistakes it for one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

MIN_LEADS = 1_000
MIN_CONVERSIONS = 120
VERSION = "coldstart-rules-v1"
TIER_POINTS = {"A": 70.0, "B": 50.0, "C": 30.0}

SENIORITY = {"c-level": 12, "vp": 12, "director": 10, "manager": 6, "senior": 4, "individual contributor": 2}
SIZE = {"201-1000": 10, "51-200": 8, "1001-5000": 8, "5000+": 5, "11-50": 4, "1-10": 1}
INDUSTRY = {
    "software": 8,
    "financial services": 6,
    "telecommunications": 4,
    "professional services": 4,
    "healthcare": 3,
    "education": 0,
    "government": 0,
    "nonprofit": 0,
    "unknown": 0,
}
SOURCE = {
    "customer referral": 10,
    "partner": 8,
    "web": 6,
    "webinar": 6,
    "event": 5,
    "organic search": 4,
    "unknown": 0,
}


@dataclass(frozen=True)
class ColdStartDecision:
    """Whether to train, with the counts that decided it (logged and shown)."""

    cold_start: bool
    leads: int
    conversions: int
    min_leads: int = MIN_LEADS
    min_conversions: int = MIN_CONVERSIONS

    @property
    def reason(self) -> str:
        if not self.cold_start:
            return (
                f"enough history: {self.leads} leads >= {self.min_leads} and "
                f"{self.conversions} conversions >= {self.min_conversions}"
            )
        return (
            f"cold start: {self.leads} leads (need {self.min_leads}) and {self.conversions} conversions "
            f"(need {self.min_conversions}) in the training window; using the rules-based score"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cold_start": self.cold_start,
            "leads": self.leads,
            "conversions": self.conversions,
            "min_leads": self.min_leads,
            "min_conversions": self.min_conversions,
            "reason": self.reason,
        }


def decide(
    training_set: pa.Table, *, min_leads: int = MIN_LEADS, min_conversions: int = MIN_CONVERSIONS
) -> ColdStartDecision:
    """Count distinct leads and distinct converting leads in the stacked training set."""
    import pyarrow.compute as pc

    positive = training_set.filter(pc.equal(training_set.column("label").cast(pa.int8()), 1))
    if "lead_id" not in training_set.column_names:  # a flat file: one row per record
        leads, conversions = training_set.num_rows, positive.num_rows
    else:
        leads = pc.count_distinct(training_set.column("lead_id")).as_py() if training_set.num_rows else 0
        conversions = pc.count_distinct(positive.column("lead_id")).as_py() if positive.num_rows else 0
    cold = leads < min_leads or conversions < min_conversions
    return ColdStartDecision(cold, int(leads), int(conversions), min_leads, min_conversions)


def _col(table: pa.Table, name: str, default: Any) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, dtype=object if isinstance(default, str) else np.float64)
    col = table.column(name)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.array(col.fill_null(default).to_pylist(), dtype=object)
    return col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)


def _lookup(values: np.ndarray, table: Mapping[str, float], default: float) -> np.ndarray:
    return np.array([table.get(v, default) for v in values.tolist()], dtype=np.float64)


def rule_points(features: pa.Table) -> dict[str, np.ndarray]:
    """Points per rule for every row of a feature table (the parts of the score, for reasons)."""
    fit = {
        "seniority": _lookup(_col(features, "seniority", "unknown"), SENIORITY, 0.0),
        "size_band": _lookup(_col(features, "size_band", "unknown"), SIZE, 0.0),
        "industry": _lookup(_col(features, "industry", "unknown"), INDUSTRY, 2.0),
        "lead_source": _lookup(_col(features, "lead_source", "unknown"), SOURCE, 2.0),
        "email_type": np.where(_col(features, "email_type", "unknown") == "corporate", 6.0, 0.0),
        "data_completeness": 4.0 * np.nan_to_num(_col(features, "data_completeness", np.nan)),
    }
    decayed = np.nan_to_num(_col(features, "engagement_decayed", np.nan))
    high = np.nan_to_num(_col(features, "n_high_intent_30d", np.nan))
    last = _col(features, "days_since_last_event", np.nan)
    forms = np.nan_to_num(_col(features, "n_sales_form_submits_30d", np.nan))
    engagement = {
        "engagement_decayed": 20.0 * np.clip(decayed / 20.0, 0, 1),
        "n_high_intent_30d": np.minimum(high * 5.0, 15.0),
        "days_since_last_event": np.select([last <= 7, last <= 30, last <= 90], [10.0, 6.0, 2.0], 0.0),
        "n_sales_form_submits_30d": np.where(forms > 0, 5.0, 0.0),
    }
    return {**fit, **engagement}


def score_rules(features: pa.Table) -> dict[str, np.ndarray]:
    """Points, score 1-99, tier, pseudo-probability and top rules per row."""
    parts = rule_points(features)
    fit_names = ("seniority", "size_band", "industry", "lead_source", "email_type", "data_completeness")
    fit = np.minimum(sum(parts[k] for k in fit_names), 50.0)
    engagement = np.minimum(sum(v for k, v in parts.items() if k not in fit_names), 50.0)
    points = fit + engagement
    tiers = np.full(len(points), "D", dtype=object)
    for tier in ("C", "B", "A"):
        tiers[points >= TIER_POINTS[tier]] = tier
    names = list(parts)
    matrix = np.column_stack([parts[k] for k in names]) if names else np.zeros((len(points), 0))
    top = [[names[j] for j in np.argsort(-row)[:3] if row[j] > 0] for row in matrix]
    return {
        "points": points,
        "score": np.clip(np.round(points), 1, 99).astype(np.int16),
        "tier": tiers,
        "probability": points / 100.0,
        "top_rules": top,
    }
