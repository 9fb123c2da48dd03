"""Score leads for the service: shared feature code -> float64 rows -> the booster -> reasons. No pandas.

Features come from :func:`features.online.many_lead_features` (the batch builder's own code on
a few rows; one request, or every request the service coalesced). The rows are encoded with
the bundle's encoder vocabulary through dict lookups (the same codes as
:meth:`models.dataset.FeatureEncoder.transform`, minus an Arrow table per row), then
:meth:`models.bundle.ModelBundle.predict` and exact TreeSHAP contributions run once on the
whole matrix. LightGBM scores each row on its own, so a lead's answer does not depend on the
other leads of its batch (tested).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from features.build import FeatureInputError
from features.online import FeatureRows, OnlineInput, many_lead_features
from models.bundle import ModelBundle
from models.score import Scorer
from serve.schemas import ScoreResponse


def _lead_score(
    lead_id: str,
    as_of: dt.datetime,
    probability: float,
    score: int,
    tier: str,
    positive: list[str],
    negative: list[str],
    scorer: Scorer,
    features: dict[str, Any] | None,
) -> ScoreResponse:
    """The service's answer for one lead, built without re-validating what the model computed."""
    return ScoreResponse.model_construct(
        lead_id=lead_id,
        as_of=as_of,
        probability=probability,
        score=score,
        tier=tier,
        reasons_positive=positive,
        reasons_negative=negative,
        model_name=scorer.model_name,
        model_version=scorer.model_version,
        features=features,
    )


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
    """A (1, n_features) float64 row of a feature dict; unknown categories and missing values are NaN."""
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


def _as_values(column: pa.Array | np.ndarray, rows: np.ndarray) -> list[Any]:
    """Python values of ``rows`` of a feature column, None where missing (as ``value_at``)."""
    if isinstance(column, pa.Array):  # a batch's columns are short: one conversion, then indexing
        values = column.to_pylist()
        return [values[r] for r in rows]
    values = column[rows].tolist()
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def encode_rows(
    bundle: ModelBundle, columns: Mapping[str, pa.Array | np.ndarray], rows: Sequence[int]
) -> np.ndarray:
    """``encode_row`` of each of ``rows`` of feature columns, a column at a time."""
    names, vocab = _codes(bundle)
    idx = np.asarray(rows, dtype=np.int64)
    X = np.empty((len(idx), len(names)), dtype=np.float64)
    for j, (name, codes) in enumerate(zip(names, vocab, strict=True)):
        column = columns.get(name)
        if column is None:
            X[:, j] = math.nan
        elif codes is not None:
            X[:, j] = [
                math.nan if v is None else codes.get(str(v), math.nan) for v in _as_values(column, idx)
            ]
        elif isinstance(column, pa.Array):
            X[:, j] = [math.nan if v is None else float(v) for v in _as_values(column, idx)]
        else:
            X[:, j] = column[idx]
    return X


def score_rows(
    scorer: Scorer,
    features: FeatureRows,
    lead_ids: Sequence[str],
    as_of: dt.datetime,
    *,
    with_features: Sequence[bool] | None = None,
    top_reasons: int = 3,
) -> list[ScoreResponse | FeatureInputError]:
    """Probability, score, tier and reasons of each featurised lead (its error where it has none)."""
    out: list[Any] = [r if isinstance(r, FeatureInputError) else None for r in features.rows]
    ok = [i for i, r in enumerate(features.rows) if not isinstance(r, FeatureInputError)]
    wanted = with_features or [False] * len(lead_ids)
    if not ok:
        return out
    if scorer.bundle is None:
        for i in ok:
            out[i] = _cold_start(scorer, lead_ids[i], as_of, features.values(i), wanted[i], top_reasons)
        return out
    from models.explain import reasons

    bundle = scorer.bundle
    X = encode_rows(bundle, features.columns, [features.rows[i] for i in ok])  # type: ignore[misc]
    # a few rows: one thread (OpenMP start-up and spinning cost more than the work on 2 cores)
    p = bundle.predict(X, num_threads=1)
    scores, tiers = bundle.scores(p), bundle.tiers(p)
    contrib = (
        bundle.booster.predict(X, pred_contrib=True, num_threads=1)
        if bundle.kind == "lightgbm"
        else bundle.contributions(X)
    )
    for k, i in enumerate(ok):
        plus, minus = reasons(bundle, X[k], contrib[k], top=top_reasons)
        out[i] = _lead_score(
            lead_ids[i],
            as_of,
            float(p[k]),
            int(scores[k]),
            str(tiers[k]),
            [r["text"] for r in plus],
            [r["text"] for r in minus],
            scorer,
            features.values(i) if wanted[i] else None,
        )
    return out


def _cold_start(
    scorer: Scorer, lead_id: str, as_of: dt.datetime, values: dict[str, Any], with_features: bool, top: int
) -> ScoreResponse:
    """The cold-start rules, through the batch code on a one-row table."""
    scored = scorer.score_table(pa.Table.from_pylist([values]), top_reasons=top)
    pos = [r for r in scored.reasons_positive[0].split("; ") if r]
    return _lead_score(
        lead_id,
        as_of,
        float(scored.probability[0]),
        int(scored.score[0]),
        str(scored.tier[0]),
        pos,
        [],
        scorer,
        values if with_features else None,
    )


@dataclass(frozen=True)
class ScoreJob:
    """One lead to score with ``scorer`` (the model its request started with).

    ``inputs`` holds what the request sent (its events, status changes and peers); None
    means the lead's online state. ``as_of`` None means now, when its batch runs.
    """

    scorer: Scorer
    lead: Mapping[str, Any]
    as_of: dt.datetime | None = None
    inputs: OnlineInput | None = None
    with_features: bool = False


def state_input(state: Any, lead: Mapping[str, Any]) -> OnlineInput:
    """A lead with its stored events, status changes and account peers (an OnlineStore's)."""
    from serve.store import account_key

    lead_id = lead["lead_id"]
    peers = state.peers(lead_id, account_key(lead.get("company_domain")))
    return OnlineInput(
        lead,
        state.events([lead_id]),
        status_history=state.status_history(lead_id),
        peers=peers or None,
        peer_events=state.events([p["lead_id"] for p in peers]) if peers else None,
    )


def run_jobs(
    jobs: Sequence[ScoreJob], state: Any, now: Callable[[], dt.datetime]
) -> list[ScoreResponse | FeatureInputError]:
    """Score a batch of jobs: one feature pass and one booster call per (model, as-of) group.

    Jobs that score the same stored lead (same fields, model and time: a lead whose webhooks
    arrive in a burst) read the same state in this batch, so they are scored once."""
    at = now()
    groups: dict[tuple[int, dt.datetime], list[int]] = {}
    same: dict[tuple[Any, ...], int] = {}
    copies: list[tuple[int, int]] = []
    for i, job in enumerate(jobs):
        as_of = job.as_of or at
        if job.inputs is None:
            key = (id(job.scorer), as_of, job.with_features, tuple(sorted(job.lead.items())))
            if key in same:
                copies.append((i, same[key]))
                continue
            same[key] = i
        groups.setdefault((id(job.scorer), as_of), []).append(i)
    out: list[Any] = [None] * len(jobs)
    for (_, as_of), members in groups.items():
        scorer = jobs[members[0]].scorer
        inputs = [jobs[i].inputs or state_input(state, jobs[i].lead) for i in members]
        features = many_lead_features(inputs, as_of)
        scored = score_rows(
            scorer,
            features,
            [jobs[i].lead["lead_id"] for i in members],
            as_of,
            with_features=[jobs[i].with_features for i in members],
        )
        for i, result in zip(members, scored, strict=True):
            out[i] = result
    for i, first in copies:
        out[i] = out[first]
    return out
