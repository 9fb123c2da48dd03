"""Batch scoring: the SCORES rows of a set of feature rows, shared by the nightly buckets and
the micro-batch (same eligibility rule, same champion, same exact reasons for changed leads)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIVITIES, SCORES, conform
from features.lake import Lake
from pipelines.common import ALL, RunContext
from prox.settings import Settings


def activities_for(lake: Lake, lead_ids: pa.Array, ctx: RunContext) -> pa.Table:
    parts = [p for p in lake.partitions("clean", "activities") if p.run_date <= ctx.run_date]
    tables = []
    for part in parts:  # one partition at a time: memory bounded by the bucket, not the total
        t = lake.read(part)
        tables.append(t.filter(pc.is_in(t.column("lead_id"), value_set=lead_ids)))
    if not tables:
        return ACTIVITIES.empty_table()
    return pa.concat_tables([conform(t, ACTIVITIES) for t in tables])


def score_rows(
    settings: Settings,
    lake: Lake,
    ctx: RunContext,
    features: pa.Table,
    leads: pa.Table,
    *,
    consent_policy: str | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The SCORES rows of the open, consenting leads among ``features``, and their counts.

    Shared by the nightly buckets and the micro-batch: same consent rule, same champion, same
    exact reasons for the leads whose score or tier differs from the push ledger.
    """
    from features.build import is_open
    from features.eligibility import eligible_lead_ids
    from models.score import load_scorer

    policy = consent_policy or settings.consent_policy
    allowed = eligible_lead_ids(leads, policy)
    open_rows = is_open(features)
    consent_ok = pc.is_in(features.column("lead_id"), value_set=allowed)
    eligible = features.filter(pc.and_(open_rows, consent_ok))
    withheld = int(pc.sum(pc.and_(open_rows, pc.invert(consent_ok)).cast(pa.int64())).as_py() or 0)
    scorer = load_scorer(settings.tracking_uri, settings.model_name)
    ids = eligible.column("lead_id").to_pylist()
    n = len(ids)
    explained = 0
    if n and scorer.bundle is not None:
        X = scorer.encode(eligible)
        out = scorer.score_matrix(X, contributions=False)
        probability, scores, tiers = out.probability, out.score, out.tier
        positive, negative, explained = reasons_for_changes(
            settings, lake, ctx, scorer, X, ids, scores, tiers
        )
    elif n:
        out = scorer.score_table(eligible)
        probability, scores, tiers = out.probability, out.score, out.tier
        positive = [_split(r) for r in out.reasons_positive]
        negative = [_split(r) for r in out.reasons_negative]
        explained = n
    else:
        probability, scores, tiers, positive, negative = [], [], [], [], []
    table = conform(
        pa.table(
            {
                "lead_id": pa.array(ids, type=pa.string()),
                "scored_at": pa.array([ctx.as_of] * n, type=SCORES.field("scored_at").type),
                "model_name": pa.array([scorer.model_name] * n, type=pa.string()),
                "model_version": pa.array([str(scorer.model_version)] * n, type=pa.string()),
                "probability": pa.array(np.asarray(probability, dtype=np.float64)),
                "score": pa.array(np.asarray(scores, dtype=np.int16)),
                "tier": pa.array(list(tiers), type=pa.string()),
                "reasons_positive": pa.array(positive, type=pa.list_(pa.string())),
                "reasons_negative": pa.array(negative, type=pa.list_(pa.string())),
                "run_id": pa.array([ctx.run_id] * n, type=pa.string()),
            }
        ),
        SCORES,
    )
    tier_counts = (
        {
            t: int(c)
            for t, c in zip(
                *np.unique(np.asarray(tiers, dtype=object).astype(str), return_counts=True), strict=True
            )
        }
        if n
        else {}
    )
    return table, {
        "scored": n,
        "explained": explained,
        "withheld_consent": withheld,
        "closed": int(features.num_rows - int(pc.sum(open_rows.cast(pa.int64())).as_py() or 0)),
        "tiers": tier_counts,
        "model_version": str(scorer.model_version),
        "cold_start": scorer.cold_start,
    }


def reasons_for_changes(
    settings: Settings,
    lake: Lake,
    ctx: RunContext,
    scorer: Any,
    X: np.ndarray,
    ids: list[str],
    scores: np.ndarray,
    tiers: np.ndarray,
) -> tuple[list[list[str]], list[list[str]], int]:
    """Reasons: exact TreeSHAP for changed leads, carried over for the others."""
    from models.score import explain_changed
    from plugins.crm import CRMS
    from plugins.crm.base import parse_reasons
    from plugins.crm.state import ConnectorState

    state = ConnectorState.for_data_dir(settings.data_dir)
    try:
        ledger = {lead_id: v for crm in CRMS for lead_id, v in state.pushed_values(crm, ids).items()}
    finally:
        state.close()
    pushed = {lead_id: (v.score, v.tier) for lead_id, v in ledger.items()}
    # what each CRM shows is in the ledger; older ledgers lack the reasons: take the last run's
    carried = {
        lead_id: ((v.score, v.tier), *parse_reasons(v.reasons))
        for lead_id, v in ledger.items()
        if v.reasons is not None
    }
    legacy = [lead_id for lead_id in pushed if lead_id not in carried]
    if legacy:
        carried.update(_previous_reasons(lake, ctx.run_date, legacy))
    return explain_changed(scorer.bundle, X, ids, scores, tiers, pushed, carried)


def _previous_reasons(
    lake: Lake, run_date: dt.date, lead_ids: Sequence[str]
) -> dict[str, tuple[tuple[int, str], list[str], list[str]]]:
    """lead_id -> ((score, tier), reasons +, reasons -) of ``lead_ids`` in the latest earlier run."""
    earlier = [p for p in lake.partitions("scores", "scores", sources=[ALL]) if p.run_date < run_date]
    if not earlier:
        return {}
    rows = lake.read(
        earlier[-1], columns=["lead_id", "score", "tier", "reasons_positive", "reasons_negative"]
    )
    rows = rows.filter(pc.is_in(rows.column("lead_id"), value_set=pa.array(lead_ids, type=pa.string())))
    columns = rows.to_pydict()
    return {
        lead_id: ((score, tier), plus or [], minus or [])
        for lead_id, score, tier, plus, minus in zip(
            columns["lead_id"],
            columns["score"],
            columns["tier"],
            columns["reasons_positive"],
            columns["reasons_negative"],
            strict=True,
        )
    }


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(";") if part.strip()]
