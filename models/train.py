"""Training: LightGBM with a bounded search, a logistic baseline, calibration, the winner.

* **LightGBM** with early stopping on the validation part. The search is a seeded random
  search, bounded by ``max_trials`` and ``time_budget_s`` (whichever ends first); trial 0 is
  a sensible default so a tiny budget still gives a good model. Categories are passed as
  LightGBM categorical features (indices into the spec's vocabulary, see
  :class:`models.dataset.FeatureEncoder`).
* **Logistic baseline** (statsmodels ``Logit``) on a transparent design: every categorical as
  one-hot levels against its most frequent level (rare levels folded into it), a short list
  of engagement/velocity numbers (signed log1p, standardised, with a missing indicator),
  collinear columns removed. Its coefficient table (estimate, standard error, z, p-value)
  is what an auditor reads.
* **Calibration** of both on the calibration part (a later slice than train and validation):
  centred isotonic by default, or sigmoid (Platt).
* **Winner**: the higher validation ROC AUC (ties go to the simpler logistic model). Both are
  returned, so both can be logged.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.bundle import Calibrator, LogisticModel, ModelBundle
from models.dataset import FeatureEncoder, Split, labels

log = logging.getLogger(__name__)

#: Numeric features of the logistic baseline (when present in the encoder).
BASELINE_NUMERIC = (
    "engagement_decayed",
    "n_events_30d",
    "n_events_90d",
    "n_high_intent_30d",
    "n_high_intent_7d",
    "days_since_last_event",
    "lead_age_days",
    "days_in_status",
    "data_completeness",
    "email_matches_company",
    "account_other_engagement_decayed",
    "n_pricing_visits_30d",
    "n_demo_visits_30d",
    "trend_7d_vs_prior_21d",
    "active_days_30d",
)
#: Category levels with fewer rows than this are folded into the reference level (no separation).
MIN_LEVEL_ROWS = 30


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of a training run; every field is logged to MLflow as a parameter."""

    seed: int = 7
    max_trials: int = 12
    time_budget_s: float = 600.0
    early_stopping_rounds: int = 50
    max_boost_rounds: int = 3000
    num_threads: int = 1  # 2+ pays only on large data and an idle machine (OpenMP spins)
    calibration: str = "isotonic"  # isotonic | sigmoid | none
    baseline: bool = True
    search_metric: str = "auc"  # choose the LightGBM trial by validation auc (or binary_logloss)
    #: Complexity caps of the search. Exact TreeSHAP reasons cost about sum over trees of
    #: leaves x depth^2 per lead, and on lead data shallow trees lose nothing. Measured on the
    #: 100k-lead world (2 cores, test AUC, exact pred_contrib rows/s): 7 leaves at depth 3
    #: (462 trees) 0.9193 and 11,500 rows/s; 15 leaves at depth 5 (1,300 trees) 0.9191 and
    #: 1,100 rows/s; 31 leaves, depth unbounded (1,254 trees, depth up to 22) 0.9183 and 277 rows/s.
    max_num_leaves: int = 31
    max_depth: int = 5  # -1: unbounded
    #: Among the trials whose validation AUC is within this of the best, keep the one cheapest to
    #: explain: a 0.001 AUC difference is noise, a 10x cheaper nightly explanation is not.
    explain_tolerance_auc: float = 0.002

    def to_params(self) -> dict[str, Any]:
        return {f"train.{k}": v for k, v in asdict(self).items()}


@dataclass
class Candidate:
    """One trained model: its bundle, validation figures and how it was found."""

    name: str  # "lightgbm" or "logistic"
    bundle: ModelBundle
    valid_auc: float
    valid_logloss: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    winner: Candidate
    candidates: list[Candidate]
    trials: list[dict[str, Any]]

    def by_name(self, name: str) -> Candidate | None:
        return next((c for c in self.candidates if c.name == name), None)


# ---- LightGBM -----------------------------------------------------------------------------------
def _sample_params(
    rng: np.random.Generator, trial: int, max_leaves: int = 31, max_depth: int = 5
) -> dict[str, Any]:
    if trial == 0:  # the shape measured best on lead data (see TrainConfig)
        depth = 3 if max_depth < 0 else min(3, max_depth)
        return {
            "learning_rate": 0.1,
            "num_leaves": max(2, min(7, max_leaves, 2**depth)),
            "max_depth": depth,
            "min_data_in_leaf": 100,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "lambda_l2": 1.0,
            "min_sum_hessian_in_leaf": 1e-3,
            "cat_smooth": 10.0,
            "max_bin": 255,
        }
    depths = list(range(3, max_depth + 1)) if max_depth >= 3 else [max_depth]
    depth = int(rng.choice(depths))
    leaves = [n for n in (7, 15, 31, 63, 127) if n <= max_leaves] or [max_leaves]
    num_leaves = int(rng.choice(leaves))
    if depth > 0:
        num_leaves = max(2, min(num_leaves, 2**depth))
    return {
        "learning_rate": float(np.exp(rng.uniform(np.log(0.02), np.log(0.15)))),
        "num_leaves": num_leaves,
        "max_depth": depth,
        "min_data_in_leaf": int(rng.choice([20, 50, 100, 200, 400, 800])),
        "feature_fraction": float(rng.uniform(0.4, 1.0)),
        "bagging_fraction": float(rng.uniform(0.5, 1.0)),
        "lambda_l2": float(np.exp(rng.uniform(np.log(1e-3), np.log(30.0)))),
        "min_sum_hessian_in_leaf": float(np.exp(rng.uniform(np.log(1e-3), np.log(10.0)))),
        "cat_smooth": float(rng.choice([1.0, 10.0, 30.0])),
        "max_bin": int(rng.choice([63, 255])),
    }


def explain_cost(booster: Any) -> int:
    """Work of exact TreeSHAP for one row: sum over trees of leaves x depth^2 (the algorithm's
    O(L D^2) per tree)."""

    def walk(node: dict[str, Any], depth: int) -> tuple[int, int]:
        if "leaf_index" in node or "left_child" not in node:
            return 1, depth
        left, right = walk(node["left_child"], depth + 1), walk(node["right_child"], depth + 1)
        return left[0] + right[0], max(left[1], right[1])

    total = 0
    for tree in booster.dump_model()["tree_info"]:
        leaves, depth = walk(tree["tree_structure"], 0)
        total += leaves * max(depth, 1) ** 2
    return total


def train_lightgbm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    encoder: FeatureEncoder,
    config: TrainConfig,
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Seeded random search with early stopping; returns (best booster, its params, all trials)."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(config.seed)
    cats = encoder.categorical_indices
    names = [f.replace(" ", "_") for f in encoder.features]
    # One Dataset per (max_bin, min_data_in_leaf): both are fixed when LightGBM bins the data
    # (feature_pre_filter drops features that cannot split with that many rows per leaf), so
    # reusing one Dataset for a trial with a smaller min_data_in_leaf makes LightGBM print
    # "[Fatal] Reducing min_data_in_leaf with feature_pre_filter=true" and rebuild it anyway.
    datasets: dict[tuple[int, int], Any] = {}

    def dataset_for(sampled: dict[str, Any]) -> Any:
        key = (int(sampled["max_bin"]), int(sampled["min_data_in_leaf"]))
        if key not in datasets:
            datasets[key] = lgb.Dataset(
                X_train,
                y_train,
                feature_name=names,
                categorical_feature=cats,
                free_raw_data=False,
                params={"max_bin": key[0], "min_data_in_leaf": key[1], "verbose": -1},
            )
        return datasets[key]

    started = time.monotonic()
    trials: list[dict[str, Any]] = []
    done: list[tuple[float, int, Any, dict[str, Any]]] = []  # (score, explain cost, booster, params)
    for trial in range(max(config.max_trials, 1)):
        if trial > 0 and time.monotonic() - started > config.time_budget_s:
            break
        sampled = _sample_params(rng, trial, config.max_num_leaves, config.max_depth)
        params = {
            "objective": "binary",
            "metric": ["binary_logloss", "auc"],
            "verbose": -1,
            "seed": config.seed + trial,
            "num_threads": config.num_threads,
            "bagging_freq": 1,
            "deterministic": True,
            "force_row_wise": True,
            "first_metric_only": True,
            **sampled,
        }
        dataset = dataset_for(sampled)
        valid_set = lgb.Dataset(X_valid, y_valid, reference=dataset, params=dataset.params)
        t0 = time.monotonic()
        booster = lgb.train(
            params,
            dataset,
            num_boost_round=config.max_boost_rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        p = booster.predict(X_valid, num_iteration=booster.best_iteration)
        auc = float(roc_auc_score(y_valid, p))
        loss = float(_logloss(y_valid, p))
        score = auc if config.search_metric == "auc" else -loss
        best_iteration = int(booster.best_iteration)
        # keep only the trees up to the best iteration, so scoring needs no num_iteration
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best_iteration))
        cost = explain_cost(booster)
        record = {
            "trial": trial,
            **sampled,
            "best_iteration": best_iteration,
            "valid_auc": auc,
            "valid_logloss": loss,
            "explain_cost": cost,
            "seconds": round(time.monotonic() - t0, 2),
        }
        trials.append(record)
        log.info(
            "LightGBM trial %d: valid AUC %.4f, log loss %.4f, %d trees, %.0f s",
            trial,
            auc,
            loss,
            record["best_iteration"],
            record["seconds"],
        )
        done.append((score, cost, booster, {**params, "best_iteration": best_iteration}))
    best_score = max(d[0] for d in done)
    tolerance = config.explain_tolerance_auc if config.search_metric == "auc" else 0.0
    # the cheapest to explain among the (near-)best; ties keep the earlier trial
    _, _, booster, chosen = min(
        (d for d in done if d[0] >= best_score - tolerance), key=lambda d: (d[1], -d[0])
    )
    return booster, chosen, trials


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ---- logistic baseline ---------------------------------------------------------------------------
def logistic_terms(
    X: np.ndarray, encoder: FeatureEncoder, numeric: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The baseline's design columns, with transform parameters learnt on ``X`` (training rows)."""
    wanted = set(BASELINE_NUMERIC if numeric is None else numeric)
    terms: list[dict[str, Any]] = []
    for j, name in enumerate(encoder.features):
        x = X[:, j]
        if name in encoder.categories:
            codes = x[~np.isnan(x)].astype(int)
            counts = np.bincount(codes, minlength=len(encoder.categories[name]))
            if counts.sum() == 0:
                continue
            reference = int(counts.argmax())
            for code, n in enumerate(counts):
                if code != reference and n >= MIN_LEVEL_ROWS:
                    terms.append(
                        {
                            "feature": name,
                            "kind": "level",
                            "code": code,
                            "label": f"{name}={encoder.categories[name][code]}",
                        }
                    )
            continue
        if name not in wanted:
            continue
        present = x[~np.isnan(x)]
        if present.size == 0 or np.nanstd(present) == 0:
            continue
        fill = float(np.median(present))
        skewed = bool(present.min() >= 0 and np.percentile(present, 99) > 10 * max(np.median(present), 1.0))
        v = np.where(np.isnan(x), fill, x)
        if skewed:
            v = np.sign(v) * np.log1p(np.abs(v))
        terms.append(
            {
                "feature": name,
                "kind": "num",
                "fill": fill,
                "log": skewed,
                "mean": float(v.mean()),
                "scale": float(v.std() or 1.0),
                "label": f"log1p({name})" if skewed else name,
            }
        )
        missing = np.isnan(x).mean()
        if 0.01 < missing < 0.99:
            terms.append({"feature": name, "kind": "missing", "label": f"{name} missing"})
    return terms


def train_logistic(
    X_train: np.ndarray, y_train: np.ndarray, encoder: FeatureEncoder, numeric: Sequence[str] | None = None
) -> LogisticModel:
    """statsmodels Logit on the transparent design; collinear columns are dropped first."""
    import statsmodels.api as sm
    from scipy.linalg import qr

    if numeric is None and not any(f in BASELINE_NUMERIC for f in encoder.features):
        numeric = [f for f in encoder.features if f not in encoder.categories]  # flat files: every number
    terms = logistic_terms(X_train, encoder, numeric)
    probe = LogisticModel(terms, [0.0] * len(terms), 0.0)
    Z = probe.design(X_train, encoder)
    # drop columns that are (nearly) linear combinations of others, keeping the design order
    with_const = np.column_stack([np.ones(len(Z)), Z])
    _, r, piv = qr(with_const, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > diag[0] * 1e-8).sum()) if diag.size else 0
    keep = sorted(int(i) - 1 for i in piv[:rank] if i != 0)
    terms = [terms[k] for k in keep]
    Z = Z[:, keep]
    for k, t in enumerate(terms):
        t["z_mean"] = float(Z[:, k].mean())
    from threadpoolctl import threadpool_limits

    model = sm.Logit(y_train.astype(float), sm.add_constant(Z, has_constant="add"))
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        try:
            fit = model.fit(method="newton", maxiter=100, disp=False)
        except Exception:  # singular Hessian: a quasi-Newton fit still gives estimates
            fit = model.fit(method="lbfgs", maxiter=500, disp=False)
    params = np.asarray(fit.params)
    bse = np.asarray(fit.bse)
    zval = np.asarray(fit.tvalues)
    pval = np.asarray(fit.pvalues)
    names = ["const"] + [t["label"] for t in terms]
    table = [
        {
            "term": n,
            "estimate": float(params[i]),
            "std_error": _finite(bse[i]),
            "z": _finite(zval[i]),
            "p_value": _finite(pval[i]),
        }
        for i, n in enumerate(names)
    ]
    return LogisticModel(terms, [float(c) for c in params[1:]], float(params[0]), table)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def coefficient_table_markdown(model: LogisticModel) -> str:
    """The baseline's coefficients as a Markdown table (estimates, SE, z, p-values)."""
    lines = ["| term | estimate | std. error | z | p-value |", "|---|---:|---:|---:|---:|"]

    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    for row in model.table:
        lines.append(
            f"| {row['term']} | {row['estimate']:.4f} | {fmt(row['std_error'], '.4f')} | "
            f"{fmt(row['z'], '.2f')} | {fmt(row['p_value'], '.3g')} |"
        )
    return "\n".join(lines)


# ---- calibration ---------------------------------------------------------------------------------
def fit_calibrator(p_raw: np.ndarray, y: np.ndarray, kind: str = "isotonic") -> Calibrator:
    """Fit the calibrator on the calibration slice (a later slice than train and validation)."""
    if kind == "none":
        return Calibrator("none")
    if kind == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        z = np.log(np.clip(p_raw, 1e-7, 1 - 1e-7) / (1 - np.clip(p_raw, 1e-7, 1 - 1e-7))).reshape(-1, 1)
        lr = LogisticRegression(C=1e6).fit(z, y)
        return Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    if kind != "isotonic":
        raise ValueError(f"calibration must be isotonic, sigmoid or none, got {kind!r}")
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(p_raw, kind="stable")
    p, t = p_raw[order], y[order].astype(float)
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit_transform(p, t)
    # blocks of equal fitted value -> knot at the block's mean raw probability (centred isotonic)
    change = np.r_[True, np.diff(fitted) != 0]
    block = np.cumsum(change) - 1
    counts = np.bincount(block)
    x = np.bincount(block, weights=p) / counts
    yv = fitted[change]
    # equal means can only come from equal raw values: keep the knots strictly increasing in x;
    # beyond the outer knots np.interp holds the end blocks' rates
    keep = np.r_[True, np.diff(x) > 0]
    x, yv = x[keep], np.clip(yv[keep], 1e-6, 1 - 1e-6)
    return Calibrator("isotonic", x=[float(v) for v in x], y=[float(v) for v in yv])


# ---- the whole step ----------------------------------------------------------------------------
def train_models(split: Split, encoder: FeatureEncoder, config: TrainConfig | None = None) -> TrainResult:
    """Train LightGBM (searched) and the logistic baseline, calibrate both, pick the winner."""
    from sklearn.metrics import roc_auc_score

    config = config or TrainConfig()
    X_tr, y_tr = encoder.transform(split.train), labels(split.train)
    X_va, y_va = encoder.transform(split.valid), labels(split.valid)
    X_ca, y_ca = encoder.transform(split.calib), labels(split.calib)
    candidates: list[Candidate] = []

    booster, best_params, trials = train_lightgbm(X_tr, y_tr, X_va, y_va, encoder, config)
    lgb_bundle = ModelBundle(
        "lightgbm",
        encoder,
        Calibrator("none"),
        booster=booster,
        meta={"params": best_params, "num_threads": config.num_threads},
    )
    lgb_bundle.calibrator = fit_calibrator(lgb_bundle.predict_raw(X_ca), y_ca, config.calibration)
    p = lgb_bundle.predict(X_va)
    candidates.append(
        Candidate(
            "lightgbm",
            lgb_bundle,
            float(roc_auc_score(y_va, p)),
            _logloss(y_va, p),
            {"params": best_params, "trials": len(trials)},
        )
    )

    if config.baseline:
        logistic = train_logistic(X_tr, y_tr, encoder)
        lr_bundle = ModelBundle("logistic", encoder, Calibrator("none"), logistic=logistic, meta={})
        lr_bundle.calibrator = fit_calibrator(lr_bundle.predict_raw(X_ca), y_ca, config.calibration)
        p = lr_bundle.predict(X_va)
        candidates.append(
            Candidate(
                "logistic",
                lr_bundle,
                float(roc_auc_score(y_va, p)),
                _logloss(y_va, p),
                {"terms": len(logistic.terms)},
            )
        )

    winner = max(candidates, key=lambda c: (round(c.valid_auc, 6), c.name == "logistic"))
    for c in candidates:
        c.bundle.meta.update(
            {"valid_auc": c.valid_auc, "valid_logloss": c.valid_logloss, "winner": c is winner}
        )
    return TrainResult(winner, candidates, trials)
