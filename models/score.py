"""Scoring with the @champion: calibrated probability, score 1-99, tier A-D and reasons.

The nightly job and the hot path call :func:`load_scorer` once and then
:meth:`Scorer.score_matrix` / :meth:`Scorer.score_table` per batch: a plain LightGBM Booster
on a float64 NumPy matrix (or the baseline's NumPy algebra), no pandas and no pyfunc layer.
Without a champion (cold start) the scorer falls back to :mod:`models.coldstart`'s rules.

Cost: probabilities are cheap (~0.01-0.03 ms a lead); exact TreeSHAP contributions are not
(about sum over trees of leaves x depth^2 per lead: ~7 ms for a 1,254-tree, 31-leaf champion of
unbounded depth, ~0.2 ms for the shallow trees the search prefers, see
:class:`models.train.TrainConfig`). Ask for contributions (``contributions=True``) only for
the leads whose reasons are pushed.

**Score 1-99** is the percentile of the calibrated probability among the leads of the test
holdout the model was evaluated on (98 quantile cut points stored in the bundle): a lead
with score 80 ranks above 80% of the leads at evaluation time. It is a rank, the probability
field is the chance.

**Tiers** say how much likelier than average a lead is to convert, with "average" and
"likely" measured on that holdout: a calibrated probability p is the expected precision of
leads scored p, so tier A starts at p = 4x the holdout's conversion rate, B at 2x and C at 1x
(above average); D is the rest. For each tier the holdout's realised precision and share are
logged with the model (``evaluation/tiers.json``, the model card), so a sales team sees, for
example, "A: 8% of leads, 31% of them converted". A weak model concentrates no leads at 4x
the average, and then has no A leads, which is the honest answer.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from models.bundle import ModelBundle

TIER_LIFT = {"A": 4.0, "B": 2.0, "C": 1.0}


def score_quantiles(p_holdout: np.ndarray) -> list[float]:
    """98 cut points: a probability's score is 1 + the number of cut points <= it."""
    return [float(q) for q in np.quantile(np.asarray(p_holdout, dtype=np.float64), np.arange(1, 99) / 99.0)]


def tier_thresholds(
    y: np.ndarray, p: np.ndarray, lifts: dict[str, float] | None = None
) -> tuple[dict[str, float | None], dict[str, dict[str, float]]]:
    """Probability cut-offs of tiers A-C (lift x holdout base rate) and each tier's holdout figures."""
    lifts = lifts or TIER_LIFT
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    base = float(y.mean()) if len(y) else 0.0
    cuts: dict[str, float | None] = {}
    info: dict[str, dict[str, float]] = {}
    upper = np.inf
    for tier in ("A", "B", "C"):
        cut = lifts[tier] * base
        band = (p >= cut) & (p < upper)
        if base <= 0 or not band.any():
            cuts[tier] = None
            continue
        cuts[tier] = cut
        info[tier] = {
            "min_probability": cut,
            "holdout_share": float(band.mean()),
            "expected_precision": float(y[band].mean()),
            "target_lift": lifts[tier],
            "realised_lift": float(y[band].mean() / base),
        }
        upper = cut
    return cuts, info


@dataclass
class Scored:
    """A scored batch: one entry per row."""

    probability: np.ndarray
    score: np.ndarray
    tier: np.ndarray
    contributions: np.ndarray | None
    reasons_positive: list[str] = field(default_factory=list)
    reasons_negative: list[str] = field(default_factory=list)


@dataclass
class Scorer:
    """The champion (or the cold-start rules) ready to score feature rows."""

    model_name: str
    model_version: str
    run_id: str | None
    bundle: ModelBundle | None  # None: cold-start rules

    @property
    def cold_start(self) -> bool:
        return self.bundle is None

    @property
    def features(self) -> tuple[str, ...]:
        return self.bundle.encoder.features if self.bundle else ()

    def encode(self, features: pa.Table) -> np.ndarray:
        assert self.bundle is not None
        return self.bundle.encoder.transform(features)

    def score_matrix(self, X: np.ndarray, *, contributions: bool = True) -> Scored:
        """Calibrated probability, score, tier (and log-odds contributions) of encoded rows."""
        assert self.bundle is not None, "cold start has no matrix path; use score_table"
        p = self.bundle.predict(X)
        contrib = self.bundle.contributions(X) if contributions else None
        return Scored(p, self.bundle.scores(p), self.bundle.tiers(p), contrib)

    def score_table(self, features: pa.Table, *, top_reasons: int = 3) -> Scored:
        """Score a feature table (features.build output), with plain-language reasons."""
        from models.explain import reasons, reasons_text

        if self.bundle is None:
            from models.coldstart import score_rules
            from models.explain import phrase

            rules = score_rules(features)
            pos = []
            for i, names in enumerate(rules["top_rules"]):
                texts = [phrase(n, _value(features, n, i)) for n in names[:top_reasons]]
                pos.append("; ".join(texts))
            return Scored(rules["probability"], rules["score"], rules["tier"], None, pos, [""] * len(pos))
        X = self.encode(features)
        out = self.score_matrix(X)
        assert out.contributions is not None
        for i in range(len(X)):
            plus, minus = reasons(self.bundle, X[i], out.contributions[i], top=top_reasons)
            out.reasons_positive.append(reasons_text(plus))
            out.reasons_negative.append(reasons_text(minus))
        return out


def explain_changed(
    bundle: ModelBundle,
    X: np.ndarray,
    ids: Sequence[str],
    scores: np.ndarray,
    tiers: np.ndarray,
    pushed: Mapping[str, tuple[int, str]],
    carried: Mapping[str, tuple[tuple[int, str], list[str], list[str]]],
) -> tuple[list[list[str]], list[list[str]], int]:
    """Reasons of every row, computing exact TreeSHAP only where they can have changed.

    A lead whose (score, tier) equals what its CRM last received (``pushed``, from the push
    ledger) is not pushed again, and its CRM keeps showing the reasons it was sent with
    (``carried``: the (score, tier) they belong to, positive, negative): they are carried
    over. Every other lead (new, changed, or never pushed) gets exact reasons from its own
    contributions. Returns (positive reasons, negative reasons, number of leads explained).
    """
    from models.explain import reasons

    positive: list[list[str]] = [[] for _ in ids]
    negative: list[list[str]] = [[] for _ in ids]
    todo = []
    for i, lead_id in enumerate(ids):
        now = (int(scores[i]), str(tiers[i]))
        old = carried.get(lead_id)
        if pushed.get(lead_id) == now and old is not None and old[0] == now:
            positive[i], negative[i] = old[1], old[2]
        else:
            todo.append(i)
    if todo:
        rows = np.asarray(todo)
        contributions = bundle.contributions(X[rows])
        for k, i in enumerate(todo):
            plus, minus = reasons(bundle, X[i], contributions[k])
            positive[i] = [r["text"] for r in plus]
            negative[i] = [r["text"] for r in minus]
    return positive, negative, len(todo)


def _value(table: pa.Table, name: str, row: int) -> Any:
    return table.column(name)[row].as_py() if name in table.column_names else None


def cold_start_scorer(model_name: str) -> Scorer:
    from models.coldstart import VERSION

    return Scorer(model_name, VERSION, None, None)


def load_scorer(tracking_uri: str, model_name: str, alias: str = "champion") -> Scorer:
    """The model behind ``@alias`` (downloaded once per version), or the cold-start rules."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return cold_start_scorer(model_name)
    bundle = _load_bundle(tracking_uri, model_name, str(version.version))
    return Scorer(model_name, str(version.version), version.run_id, bundle)


@functools.lru_cache(maxsize=8)
def _load_bundle(tracking_uri: str, model_name: str, version: str) -> ModelBundle:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    target = Path(tempfile.mkdtemp(prefix="prox-model-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{version}", dst_path=str(target)
    )
    return ModelBundle.load(bundle_dir(Path(local)))


def bundle_dir(model_dir: Path) -> Path:
    """The bundle inside a downloaded pyfunc model directory."""
    for candidate in (model_dir / "artifacts" / "bundle", model_dir / "bundle", model_dir):
        if (candidate / "bundle.json").is_file():
            return candidate
    found = next(model_dir.rglob("bundle.json"), None)
    if found is None:
        raise FileNotFoundError(f"no bundle.json under {model_dir}")
    return found.parent
