"""Explanations: global importance, and one lead's top reasons in plain language.

Global: LightGBM gain importance, and mean |SHAP| from LightGBM's exact TreeSHAP
(``pred_contrib=True``); for the logistic baseline the same contributions come from
``coef * (z - mean z)``, so both kinds explain alike.

Per lead: the contributions of one row (log-odds), sorted; the largest positive ones become
"reasons for", the most negative "reasons against", each phrased with the feature spec's
template at the lead's value ("visited the pricing page 3 times in the last 7 days").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.bundle import ModelBundle

#: Contributions smaller than this (log-odds) are not worth telling a salesperson.
MIN_CONTRIBUTION = 0.02


def gain_importance(bundle: ModelBundle) -> dict[str, float]:
    """Total gain per feature (LightGBM); |coefficient| summed per feature for the baseline."""
    if bundle.kind == "lightgbm":
        gains = bundle.booster.feature_importance(importance_type="gain")
        return {f: float(g) for f, g in zip(bundle.encoder.features, gains, strict=True)}
    assert bundle.logistic is not None
    out = dict.fromkeys(bundle.encoder.features, 0.0)
    for t, c in zip(bundle.logistic.terms, bundle.logistic.coef, strict=True):
        out[t["feature"]] += abs(c)
    return out


def shap_importance(
    bundle: ModelBundle, X: np.ndarray, max_rows: int = 20_000, seed: int = 0
) -> dict[str, float]:
    """Mean |contribution| per feature on (a sample of) ``X``."""
    if len(X) > max_rows:
        X = X[np.random.default_rng(seed).choice(len(X), max_rows, replace=False)]
    contrib = bundle.contributions(X)[:, :-1]
    return {f: float(v) for f, v in zip(bundle.encoder.features, np.abs(contrib).mean(axis=0), strict=True)}


def phrase(name: str, value: Any) -> str:
    """The spec's plain-language phrase for ``name`` at ``value`` (generic for other columns)."""
    from features.spec import BY_NAME

    missing = value is None or (isinstance(value, float) and math.isnan(value))
    spec = BY_NAME.get(name)
    if spec is None:
        return f"{name.replace('_', ' ')} is {'unknown' if missing else value}"
    if missing:
        return f"has no {name.replace('_', ' ')} on record"
    if spec.dtype == "category":
        return spec.phrase(value)
    try:
        return spec.phrase(float(value))
    except (ValueError, TypeError):
        return f"{name.replace('_', ' ')} is {value}"


def reasons(
    bundle: ModelBundle,
    x: np.ndarray,
    contributions: np.ndarray | None = None,
    *,
    top: int = 3,
    min_contribution: float = MIN_CONTRIBUTION,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Top positive and negative reasons of ONE encoded row ``x``.

    Each reason is ``{"feature", "value", "contribution", "text"}``; ``value`` is decoded
    (category names, not codes). Pass ``contributions`` when already computed (batch).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if contributions is None:
        contributions = bundle.contributions(x.reshape(1, -1))[0]
    contrib = np.asarray(contributions).reshape(-1)[: len(bundle.encoder.features)]
    order = np.argsort(-contrib, kind="stable")
    pos, neg = [], []
    for j in order:
        if contrib[j] < min_contribution or len(pos) >= top:
            break
        pos.append(_reason(bundle, j, x[j], contrib[j]))
    for j in order[::-1]:
        if contrib[j] > -min_contribution or len(neg) >= top:
            break
        neg.append(_reason(bundle, j, x[j], contrib[j]))
    return pos, neg


def _reason(bundle: ModelBundle, j: int, raw: float, contribution: float) -> dict[str, Any]:
    name = bundle.encoder.features[j]
    value = bundle.encoder.decode(name, raw)
    return {"feature": name, "value": value, "contribution": float(contribution), "text": phrase(name, value)}


def reasons_text(items: Sequence[dict[str, Any]]) -> str:
    """Reasons joined for a CRM text field ("visited the pricing page 3 times ...; ...")."""
    return "; ".join(r["text"] for r in items)
