"""The trained artefact: model + calibrator + encoder + score/tier cut-offs, in plain files.

A bundle directory holds ``bundle.json`` (encoder, calibrator knots, logistic coefficients,
score quantiles, tier thresholds, metadata) and, for LightGBM, ``model.txt`` (the booster's
own text format). Loading it needs only NumPy and LightGBM: no pickles, no pandas, no
sklearn, so the nightly scorer and the hot path load it in milliseconds and an auditor can
read every number in it.

Both model kinds expose the same two things: a calibrated probability and per-feature
contributions on the log-odds scale (LightGBM ``pred_contrib`` / logistic ``coef * (z - mean)``),
whose last column is the bias, so explanations do not care which kind won.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset import FeatureEncoder

BUNDLE_FILE = "bundle.json"
BOOSTER_FILE = "model.txt"
TIERS = ("A", "B", "C", "D")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Calibrator:
    """Maps a raw probability to a calibrated one.

    ``isotonic``: centred isotonic regression, i.e. linear interpolation between the mean raw
    probability and the observed rate of each isotonic block; strictly increasing between the
    knots, so the ranking (AUC) of the raw model is kept rather than flattened into steps.
    ``sigmoid``: Platt scaling on the raw log-odds. ``none``: identity.
    """

    kind: str = "none"
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "isotonic":
            out = np.interp(p, self.x, self.y)
            # a vanishing tie-breaker keeps the raw order beyond the outer knots
            return np.clip(out + 1e-9 * p, 1e-6, 1 - 1e-6)
        if self.kind == "sigmoid":
            return _sigmoid(self.a * _logit(p) + self.b)
        return p

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": self.x, "y": self.y, "a": self.a, "b": self.b}


@dataclass
class LogisticModel:
    """A fitted logistic regression on a transparent design (see :mod:`models.train`).

    ``terms`` lists each design column: ``{"feature", "kind": num|missing|level, ...}`` with the
    transform parameters; ``coef`` the estimates (same order), ``intercept`` the constant.
    """

    terms: list[dict[str, Any]]
    coef: list[float]
    intercept: float
    table: list[dict[str, Any]] = field(default_factory=list)  # estimates, SE, p-values

    def design(self, X: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        index = {f: i for i, f in enumerate(encoder.features)}
        Z = np.empty((X.shape[0], len(self.terms)), dtype=np.float64)
        for k, t in enumerate(self.terms):
            x = X[:, index[t["feature"]]]
            if t["kind"] == "num":
                v = np.where(np.isnan(x), t["fill"], x)
                if t.get("log"):
                    v = np.sign(v) * np.log1p(np.abs(v))
                Z[:, k] = (v - t["mean"]) / t["scale"]
            elif t["kind"] == "missing":
                Z[:, k] = np.isnan(x).astype(np.float64)
            else:  # level of a categorical: 1 when the code equals it
                Z[:, k] = (x == t["code"]).astype(np.float64)
        return Z

    def margin(self, X: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        return self.design(X, encoder) @ np.asarray(self.coef) + self.intercept

    def contributions(self, X: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        """Per feature ``sum over its terms of coef * (z - mean z on train)``, plus bias column."""
        Z = self.design(X, encoder)
        coef = np.asarray(self.coef)
        centre = np.array([t.get("z_mean", 0.0) for t in self.terms])
        parts = (Z - centre) * coef
        out = np.zeros((X.shape[0], len(encoder.features) + 1))
        index = {f: i for i, f in enumerate(encoder.features)}
        for k, t in enumerate(self.terms):
            out[:, index[t["feature"]]] += parts[:, k]
        out[:, -1] = self.intercept + float(centre @ coef)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"terms": self.terms, "coef": self.coef, "intercept": self.intercept, "table": self.table}


@dataclass
class ModelBundle:
    """Everything needed to score: encoder, model, calibrator, score quantiles and tier cut-offs."""

    kind: str  # "lightgbm" or "logistic"
    encoder: FeatureEncoder
    calibrator: Calibrator
    booster: Any = None  # lightgbm.Booster
    logistic: LogisticModel | None = None
    score_quantiles: list[float] = field(default_factory=list)  # 98 cut points -> scores 1..99
    tier_thresholds: dict[str, float] = field(default_factory=dict)  # A, B, C minimum probability
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- prediction ------------------------------------------------------------------------
    def predict_raw(self, X: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """The model's own probability (before calibration); ``num_threads`` 1 for a few rows."""
        if self.kind == "lightgbm":
            threads = (self.meta.get("num_threads", 0) or 0) if num_threads is None else num_threads
            return self.booster.predict(X, num_threads=threads)
        assert self.logistic is not None
        return _sigmoid(self.logistic.margin(X, self.encoder))

    def predict(self, X: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """Calibrated probability of converting within the label horizon."""
        return self.calibrator.apply(self.predict_raw(X, num_threads))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Log-odds contributions (rows x features+1, last column the bias) of the raw model."""
        if self.kind == "lightgbm":
            return self.booster.predict(X, pred_contrib=True)
        assert self.logistic is not None
        return self.logistic.contributions(X, self.encoder)

    def scores(self, probability: np.ndarray) -> np.ndarray:
        """Score 1-99: the percentile of the probability among the holdout's leads."""
        if not self.score_quantiles:
            return np.clip(np.round(np.asarray(probability) * 100), 1, 99).astype(np.int16)
        return (1 + np.searchsorted(self.score_quantiles, probability, side="right")).astype(np.int16)

    def tiers(self, probability: np.ndarray) -> np.ndarray:
        """Tier A-D from the probability cut-offs (see :func:`models.score.tier_thresholds`)."""
        out = np.full(len(probability), "D", dtype=object)
        for tier in ("C", "B", "A"):
            cut = self.tier_thresholds.get(tier)
            if cut is not None:
                out[np.asarray(probability) >= cut] = tier
        return out

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.kind == "lightgbm":
            self.booster.save_model(str(out / BOOSTER_FILE))
        data = {
            "kind": self.kind,
            "encoder": self.encoder.to_json(),
            "calibrator": self.calibrator.to_json(),
            "logistic": self.logistic.to_json() if self.logistic else None,
            "score_quantiles": list(map(float, self.score_quantiles)),
            "tier_thresholds": {
                k: (None if v is None else float(v)) for k, v in self.tier_thresholds.items()
            },
            "meta": self.meta,
        }
        (out / BUNDLE_FILE).write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
        return out

    @classmethod
    def load(cls, directory: Path | str) -> ModelBundle:
        directory = Path(directory)
        data = json.loads((directory / BUNDLE_FILE).read_text())
        booster = None
        if data["kind"] == "lightgbm":
            import lightgbm as lgb

            booster = lgb.Booster(model_file=str(directory / BOOSTER_FILE))
        logistic = LogisticModel(**data["logistic"]) if data.get("logistic") else None
        return cls(
            kind=data["kind"],
            encoder=FeatureEncoder.from_json(data["encoder"]),
            calibrator=Calibrator(**data["calibrator"]),
            booster=booster,
            logistic=logistic,
            score_quantiles=data.get("score_quantiles") or [],
            tier_thresholds={k: v for k, v in (data.get("tier_thresholds") or {}).items()},
            meta=data.get("meta") or {},
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)
