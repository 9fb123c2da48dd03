"""Score ONE lead: shared feature code -> one float64 row -> the booster -> reasons. No pandas.

Features come from :func:`features.online.lead_features` (the batch builder's own code on a
few rows). The row is encoded with the bundle's encoder vocabulary through a dict lookup
(the same codes as :meth:`models.dataset.FeatureEncoder.transform`, minus the Arrow table for
one row), then :meth:`models.bundle.ModelBundle.predict` / ``contributions`` run on it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bundle import ModelBundle
from models.score import Scorer


@dataclass(frozen=True)
class LeadScore:
    """What the service answers for one lead."""

    lead_id: str
    as_of: dt.datetime
    probability: float
    score: int
    tier: str
    reasons_positive: list[str]
    reasons_negative: list[str]
    model_name: str
    model_version: str
    features: dict[str, Any]


_CODES: dict[int, tuple[ModelBundle, tuple[str, ...], tuple[dict[str, int] | None, ...]]] = {}


def _codes(bundle: ModelBundle) -> tuple[tuple[str, ...], tuple[dict[str, int] | None, ...]]:
    """Feature names and category -> code dicts of a bundle, built once per bundle."""
    cached = _CODES.get(id(bundle))
    if cached is None or cached[0] is not bundle:
        enc = bundle.encoder
        vocab = tuple(
            {v: i for i, v in enumerate(enc.categories[f])} if f in enc.categories else None
            for f in enc.features
        )
        if len(_CODES) > 16:
            _CODES.clear()
        cached = _CODES[id(bundle)] = (bundle, enc.features, vocab)
    return cached[1], cached[2]


def encode_row(bundle: ModelBundle, features: Mapping[str, Any]) -> np.ndarray:
    """A (1, n_features) float64 row; unknown categories and missing values are NaN."""
    names, vocab = _codes(bundle)
    row = np.empty((1, len(names)), dtype=np.float64)
    for j, (name, codes) in enumerate(zip(names, vocab, strict=True)):
        value = features.get(name)
        if value is None:
            row[0, j] = math.nan
        elif codes is not None:
            row[0, j] = codes.get(str(value), math.nan)
        else:
            row[0, j] = float(value)
    return row


def score_features(
    scorer: Scorer, lead_id: str, as_of: dt.datetime, features: dict[str, Any], *, top_reasons: int = 3
) -> LeadScore:
    """Probability, score, tier and reasons of one feature row with ``scorer``."""
    if scorer.bundle is None:  # cold start: the rules, through the batch code on a one-row table
        import pyarrow as pa

        out = scorer.score_table(pa.Table.from_pylist([features]), top_reasons=top_reasons)
        pos = [r for r in out.reasons_positive[0].split("; ") if r]
        return LeadScore(
            lead_id,
            as_of,
            float(out.probability[0]),
            int(out.score[0]),
            str(out.tier[0]),
            pos,
            [],
            scorer.model_name,
            scorer.model_version,
            features,
        )
    from models.explain import reasons

    bundle = scorer.bundle
    x = encode_row(bundle, features)
    p = bundle.predict(x)
    # one row: a single thread (OpenMP start-up and spinning cost more than the work on 2 cores)
    contrib = (
        bundle.booster.predict(x, pred_contrib=True, num_threads=1)
        if bundle.kind == "lightgbm"
        else bundle.contributions(x)
    )
    plus, minus = reasons(bundle, x[0], contrib[0], top=top_reasons)
    return LeadScore(
        lead_id,
        as_of,
        float(p[0]),
        int(bundle.scores(p)[0]),
        str(bundle.tiers(p)[0]),
        [r["text"] for r in plus],
        [r["text"] for r in minus],
        scorer.model_name,
        scorer.model_version,
        features,
    )
