"""The leakage audit: find columns that are filled in, or changed, after the outcome.

A column that sales fill in after contact (a lead "quality" rating, a "last notable
activity", a form field left at "Select" by everyone who never talked to sales) rarely
separates the classes perfectly on its own, so one threshold on single-feature AUC misses it.
It has a *signature* instead, and the audit measures each part of it on the training part:

Data signatures (what the column looks like):

* ``missingness``: whether the column is filled predicts the outcome (filled rows convert
  at very different odds than empty ones). Empty means empty: nulls, NaN, and placeholder
  text such as ``""``, ``"Select"``, ``"NA"`` (:data:`MISSING_TOKENS`, configurable).
* ``extreme_levels``: a sizeable share of rows sits in values whose conversion rate is far
  from the base rate (log-odds apart by ``extreme_log_odds`` or more): "had a phone
  conversation" converts 95% of the time, "unreachable" never. Numbers are cut into
  quantile bins first, so a duration that is short for every lost lead shows it too.
* ``edited_after_snapshot`` (CRM sources with field history): the field was changed after
  the snapshot time for a share of rows, more often for converters.

Strong signatures (enough on their own): single-feature AUC above ``max_single_auc`` (out of
fold, so a high-cardinality column cannot score itself), and ``filled_for_converters``
(mostly empty, and when filled at least ``max_positive_share_when_filled`` converted).

Model checks (how the model leans on it), from a quick LightGBM on the training part:

* ``gain_share``: one column carries most of the model's total gain.
* ``auc_drop``: validation AUC falls by ``max_auc_drop`` or more when it is removed.

A column is flagged when a strong signature fires, or when at least one data signature and
at least two checks in all fire. Model checks alone never flag a column: an honest strong
predictor carries gain and costs AUC when removed, but it does not look like a field filled
in afterwards. The model checks are repeated without the columns already flagged (two
leaky columns that say the same thing hide each other in a drop-column test), until no new
column is flagged. Flagged columns are excluded unless the user keeps them (``keep``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from models.dataset import MISSING_TOKENS, FeatureEncoder

#: The CRM feature spec writes a missing category as "unknown"; in a flat file "unknown" is often
#: a real answer (a bank's "contact: unknown" is a contact channel), so it is "empty" only for CRM
#: features (:meth:`AuditConfig.for_crm`).
CRM_MISSING_TOKENS: tuple[str, ...] = (*MISSING_TOKENS, "unknown")

STRONG, SIGNATURE, MODEL = "strong", "signature", "model"


@dataclass(frozen=True)
class AuditConfig:
    """The audit's thresholds (logged with the run)."""

    missing_tokens: tuple[str, ...] = MISSING_TOKENS
    max_single_auc: float = 0.9
    max_positive_share_when_filled: float = 0.8
    missing_log_odds: float = 1.0  # |log-odds(filled) - log-odds(empty)|
    extreme_log_odds: float = 2.5  # log-odds(value) - log-odds(base), values converting more
    #: values converting *less*: stricter, since an honest strong column often has a region
    #: where almost nobody converts (no engagement at all)
    extreme_low_log_odds: float = 3.0
    extreme_share: float = 0.05  # share of rows in extreme values
    max_gain_share: float = 0.5
    max_auc_drop: float = 0.015
    max_edited_share: float = 0.05
    min_level_rows: int = 30
    smoothing_rows: float = 10.0  # pseudo-rows at the base rate added to every value's rate
    bins: int = 20
    folds: int = 5
    seed: int = 7
    model_checks: bool = True
    model_rows: int = 50_000  # the quick model trains on at most this many rows
    drop_candidates: int = 8  # most columns re-trained without, per round
    rounds: int = 3

    @classmethod
    def for_crm(cls, **changes: Any) -> AuditConfig:
        """The config for the CRM feature table ("unknown" is its empty category)."""
        return cls(missing_tokens=CRM_MISSING_TOKENS, **changes)

    def to_params(self) -> dict[str, Any]:
        return {
            f"leakage.{k}": (",".join(repr(t) for t in v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
        }


@dataclass
class Evidence:
    """One check on one column: its measured value, the limit and whether it fired."""

    check: str
    kind: str  # strong | signature | model
    value: float
    threshold: float
    fired: bool
    detail: str


@dataclass
class LeakageFinding:
    """The audit's verdict on one feature, with the evidence behind it."""

    feature: str
    single_auc: float
    filled_share: float
    positive_share_when_filled: float
    flagged: bool
    rule: str | None
    excluded: bool
    evidence: list[Evidence] = field(default_factory=list)
    kept: bool = False  # flagged, but the user kept it (--keep)
    point_in_time: bool = False  # computed as of the snapshot by construction: strong checks only

    def signature(self) -> bool:
        """A data signature fired on a column not known to be point-in-time."""
        return not self.point_in_time and any(e.fired and e.kind == SIGNATURE for e in self.evidence)

    def fired(self) -> list[Evidence]:
        return [e for e in self.evidence if e.fired]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("single_auc", "filled_share", "positive_share_when_filled"):
            out[key] = _finite(out[key])
        for ev in out["evidence"]:
            ev["value"] = _finite(ev["value"])
        return out


@dataclass
class AuditResult:
    """Every finding plus the quick model's figures; :meth:`summary` is what the gate compares."""

    findings: list[LeakageFinding]
    base_rate: float
    model_auc: float | None = None
    rounds: int = 0
    config: AuditConfig = field(default_factory=AuditConfig)

    @property
    def flagged(self) -> list[str]:
        return [f.feature for f in self.findings if f.flagged]

    @property
    def excluded(self) -> list[str]:
        return [f.feature for f in self.findings if f.excluded]

    @property
    def kept(self) -> list[str]:
        return [f.feature for f in self.findings if f.kept]

    def suspect_auc(self) -> float:
        """AUC the model may owe to leakage: the drop-column AUC of every column it still uses
        that is flagged (kept) or shows a data signature without being flagged."""
        total = 0.0
        for f in self.findings:
            if f.excluded:
                continue
            if f.kept or f.signature():
                drop = next((e.value for e in f.evidence if e.check == "auc_drop"), float("nan"))
                total += max(drop, 0.0) if math.isfinite(drop) else 0.0
        return total

    def summary(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "excluded": self.excluded,
            "kept": self.kept,
            "suspect": [f.feature for f in self.findings if not f.flagged and f.signature()],
            "suspect_auc": self.suspect_auc(),
            "model_auc": self.model_auc,
            "base_rate": self.base_rate,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "summary": self.summary(),
            "config": asdict(self.config),
            "rounds": self.rounds,
        }


# ---- helpers --------------------------------------------------------------------------------
def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); 0.5 with one class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return 0.5
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def missing_mask(x: np.ndarray, name: str, encoder: FeatureEncoder, tokens: Sequence[str]) -> np.ndarray:
    """True where feature ``name`` is empty: NaN, or a category that is a placeholder."""
    missing = np.isnan(x)
    if name in encoder.categories:
        wanted = {t.strip().lower() for t in tokens}
        placeholder = [i for i, c in enumerate(encoder.categories[name]) if str(c).strip().lower() in wanted]
        if placeholder:
            missing |= np.isin(np.where(missing, -1, x), placeholder)
    return missing


def levels(x: np.ndarray, missing: np.ndarray, categorical: bool, bins: int) -> tuple[np.ndarray, list[str]]:
    """Each row's level (0..k-1; the last level is 'empty') and the levels' labels."""
    if categorical:
        codes = np.where(missing, -1, np.nan_to_num(x, nan=-1)).astype(int)
        values = np.unique(codes[codes >= 0])
        index = {v: i for i, v in enumerate(values.tolist())}
        out = np.array([index.get(c, len(values)) for c in codes], dtype=int)
        labels = [f"code {v}" for v in values.tolist()]
    else:
        filled = x[~missing]
        if filled.size:
            edges = np.unique(np.quantile(filled, np.linspace(0, 1, bins + 1)[1:-1]))
        else:
            edges = np.array([])
        out = np.where(missing, len(edges) + 1, np.searchsorted(edges, np.nan_to_num(x), side="right"))
        bounds = [-np.inf, *edges.tolist(), np.inf]
        labels = [f"[{bounds[i]:.4g}, {bounds[i + 1]:.4g})" for i in range(len(edges) + 1)]
    return out, [*labels, "(empty)"]


def _smoothed(n: np.ndarray, pos: np.ndarray, base: float, m: float) -> np.ndarray:
    return (pos + m * base) / (n + m)


def out_of_fold_auc(level: np.ndarray, y: np.ndarray, folds: int, seed: int, m: float) -> float:
    """AUC of each row's level rate learnt on the other folds (a column cannot score itself)."""
    k = int(level.max()) + 1 if level.size else 1
    fold = np.random.default_rng(seed).integers(0, folds, size=len(y))
    score = np.empty(len(y))
    for f in range(folds):
        inside = fold != f
        n = np.bincount(level[inside], minlength=k).astype(float)
        pos = np.bincount(level[inside], weights=y[inside], minlength=k)
        base = float(y[inside].mean()) if inside.any() else 0.5
        score[~inside] = _smoothed(n, pos, base, m)[level[~inside]]
    auc = rank_auc(y, score)
    return max(auc, 1.0 - auc)


# ---- per-column data checks ---------------------------------------------------------------------
def column_checks(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    encoder: FeatureEncoder,
    config: AuditConfig,
    edited_after: np.ndarray | None = None,
) -> tuple[float, float, float, list[Evidence]]:
    """(single AUC, filled share, converted share when filled, evidence) of one column."""
    base = float(y.mean())
    missing = missing_mask(x, name, encoder, config.missing_tokens)
    categorical = name in encoder.categories
    level, labels = levels(x, missing, categorical, config.bins)
    auc = out_of_fold_auc(level, y, config.folds, config.seed, config.smoothing_rows)
    filled = ~missing
    filled_share = float(filled.mean())
    pos_filled = float(y[filled].mean()) if filled.sum() >= 20 else float("nan")
    evidence = [
        Evidence(
            "single_auc",
            STRONG,
            auc,
            config.max_single_auc,
            auc > config.max_single_auc,
            f"single-feature AUC {auc:.3f} (out of fold)",
        )
    ]
    fired = (
        not math.isnan(pos_filled)
        and filled_share < 0.5
        and base < 0.5
        and pos_filled >= config.max_positive_share_when_filled
    )
    evidence.append(
        Evidence(
            "filled_for_converters",
            STRONG,
            pos_filled,
            config.max_positive_share_when_filled,
            bool(fired),
            f"filled mostly for converters ({pos_filled:.0%} of filled rows converted, "
            f"filled {filled_share:.0%}, base {base:.1%})",
        )
    )
    m = config.smoothing_rows
    n_fill, n_miss = int(filled.sum()), int(missing.sum())
    if n_fill >= config.min_level_rows and n_miss >= config.min_level_rows:
        r_fill = float(_smoothed(np.array(n_fill), np.array(y[filled].sum()), base, m))
        r_miss = float(_smoothed(np.array(n_miss), np.array(y[missing].sum()), base, m))
        gap = abs(_logit(r_fill) - _logit(r_miss))
        evidence.append(
            Evidence(
                "missingness",
                SIGNATURE,
                gap,
                config.missing_log_odds,
                gap >= config.missing_log_odds,
                f"empty for {1 - filled_share:.0%} of rows; converted {r_fill:.1%} when filled vs "
                f"{r_miss:.1%} when empty (log-odds apart {gap:.2f})",
            )
        )
    k = len(labels)
    n = np.bincount(level, minlength=k).astype(float)
    pos = np.bincount(level, weights=y, minlength=k)
    rate = _smoothed(n, pos, base, m)
    extreme = [
        i
        for i in range(k - 1)  # the last level is "empty": judged by the missingness check
        if n[i] >= config.min_level_rows
        and (
            _logit(float(rate[i])) - _logit(base) >= config.extreme_log_odds
            or _logit(base) - _logit(float(rate[i])) >= config.extreme_low_log_odds
        )
    ]
    share = float(n[extreme].sum() / max(len(y), 1))
    shown = sorted(extreme, key=lambda i: -n[i])[:3]
    values = [_level_label(encoder, name, categorical, labels, i, level, x) for i in shown]
    described = ", ".join(f"{v!s} ({rate[i]:.0%} of {int(n[i])})" for v, i in zip(values, shown, strict=True))
    evidence.append(
        Evidence(
            "extreme_levels",
            SIGNATURE,
            share,
            config.extreme_share,
            share >= config.extreme_share,
            f"{share:.0%} of rows have values converting far from the base rate {base:.1%}"
            + (f": {described}" if described else ""),
        )
    )
    if edited_after is not None:
        edited = np.asarray(edited_after, dtype=bool)
        e_share = float(edited.mean())
        pos_rate = float(edited[y == 1].mean()) if (y == 1).any() else 0.0
        neg_rate = float(edited[y == 0].mean()) if (y == 0).any() else 0.0
        fired = e_share >= config.max_edited_share
        strong = fired and pos_rate >= 2 * max(neg_rate, 1e-9)
        evidence.append(
            Evidence(
                "edited_after_snapshot",
                STRONG if strong else SIGNATURE,
                e_share,
                config.max_edited_share,
                bool(fired),
                f"changed after the snapshot time for {e_share:.0%} of rows "
                f"({pos_rate:.0%} of converters, {neg_rate:.0%} of the others)",
            )
        )
    return auc, filled_share, pos_filled, evidence


def _level_label(
    encoder: FeatureEncoder,
    name: str,
    categorical: bool,
    labels: list[str],
    i: int,
    level: np.ndarray,
    x: np.ndarray,
) -> str:
    if not categorical:
        return labels[i]
    code = x[np.flatnonzero(level == i)[0]]
    return repr(encoder.decode(name, code))


# ---- model checks --------------------------------------------------------------------------------
def _quick_auc(
    X_tr: np.ndarray,
    y_tr: np.ndarray,
    X_va: np.ndarray,
    y_va: np.ndarray,
    columns: list[int],
    encoder: FeatureEncoder,
    seed: int,
) -> tuple[float, np.ndarray]:
    """Validation AUC of a small LightGBM on ``columns``, and its gain per column."""
    import lightgbm as lgb

    cats = [k for k, j in enumerate(columns) if encoder.features[j] in encoder.categories]
    params = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 50,
        "feature_fraction": 1.0,
        "verbose": -1,
        "seed": seed,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "max_cat_to_onehot": 8,
    }
    data_params = {"verbose": -1, "min_data_in_leaf": 50, "max_bin": 63}
    train = lgb.Dataset(X_tr[:, columns], y_tr, categorical_feature=cats, params=data_params)
    valid = lgb.Dataset(X_va[:, columns], y_va, reference=train, params=data_params)
    booster = lgb.train(
        params,
        train,
        num_boost_round=300,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(20, verbose=False)],
    )
    p = booster.predict(X_va[:, columns], num_iteration=booster.best_iteration)
    gain = booster.feature_importance(importance_type="gain", iteration=booster.best_iteration)
    return rank_auc(y_va, p), np.asarray(gain, dtype=float)


def _inner_split(
    X: np.ndarray, y: np.ndarray, max_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))[: max(int(max_rows / 0.75), 1)]
    cut = int(len(idx) * 0.75)
    tr, va = idx[:cut], idx[cut:]
    return X[tr], y[tr], X[va], y[va]


def model_checks(
    X: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    usable: list[int],
    signed: Sequence[int],
    config: AuditConfig,
) -> tuple[float, dict[int, list[Evidence]]]:
    """Gain share of every usable column, and the AUC drop of the columns with a data
    signature (``signed``) plus the ones with the most gain, up to ``drop_candidates``."""
    X_tr, y_tr, X_va, y_va = _inner_split(X, y, config.model_rows, config.seed)
    if len(np.unique(y_va)) < 2 or len(np.unique(y_tr)) < 2 or len(usable) < 3:
        return float("nan"), {}  # one class, or too few columns for shares and drops to mean anything
    auc_all, gain = _quick_auc(X_tr, y_tr, X_va, y_va, usable, encoder, config.seed)
    total = float(gain.sum()) or 1.0
    out: dict[int, list[Evidence]] = {}
    for k, j in enumerate(usable):
        share = float(gain[k] / total)
        out[j] = [
            Evidence(
                "gain_share",
                MODEL,
                share,
                config.max_gain_share,
                share >= config.max_gain_share,
                f"carries {share:.0%} of the quick model's gain",
            )
        ]
    by_gain = [usable[k] for k in np.argsort(-gain, kind="stable")]
    candidates = list(dict.fromkeys([*signed, *by_gain]))[: max(config.drop_candidates, len(signed))]
    for j in candidates:
        rest = [c for c in usable if c != j]
        if len(rest) < 2:  # nothing left to compare with
            continue
        auc_without, _ = _quick_auc(X_tr, y_tr, X_va, y_va, rest, encoder, config.seed)
        drop = auc_all - auc_without
        out[j].append(
            Evidence(
                "auc_drop",
                MODEL,
                drop,
                config.max_auc_drop,
                drop >= config.max_auc_drop,
                f"validation AUC {auc_all:.3f} with it, {auc_without:.3f} without ({drop:+.3f})",
            )
        )
    return auc_all, out


# ---- the verdict ---------------------------------------------------------------------------------
def verdict(evidence: Sequence[Evidence], point_in_time: bool = False) -> str | None:
    """The rule that flags a column, or None: a strong signature, or a data signature that
    at least one more check confirms. A point-in-time column (built from events before the
    snapshot, so nothing after the outcome can reach it) is flagged by strong checks only:
    "has had a meeting" is honestly predictive and often empty."""
    fired = [e for e in evidence if e.fired]
    strong = [e for e in fired if e.kind == STRONG]
    if strong:
        return "; ".join(e.detail for e in strong)
    if point_in_time:
        return None
    signatures = [e for e in fired if e.kind == SIGNATURE]
    if signatures and len(fired) >= 2:
        return "post-outcome signature: " + "; ".join(e.detail for e in fired)
    return None


def audit(
    X: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    *,
    config: AuditConfig | None = None,
    keep: Sequence[str] = (),
    edited_after: Mapping[str, np.ndarray] | None = None,
    point_in_time: Sequence[str] = (),
) -> AuditResult:
    """Audit every feature of ``X`` (encoded by ``encoder``) against labels ``y`` (see module doc).

    ``keep`` names flagged columns the user keeps (they stay flagged, are not excluded and
    are marked ``kept``). ``edited_after`` maps a feature to a per-row mask: its value was
    changed after the row's snapshot time (CRM field history). ``point_in_time`` names
    columns computed as of the snapshot by construction (CRM engagement features): measured
    and reported like the others, flagged only by a strong check.
    """
    config = config or AuditConfig()
    y = np.asarray(y).astype(int)
    edited_after = edited_after or {}
    names = list(encoder.features)
    pit = {j for j, name in enumerate(names) if name in set(point_in_time)}
    base = float(y.mean()) if len(y) else float("nan")
    data: dict[int, tuple[float, float, float, list[Evidence]]] = {}
    for j, name in enumerate(names):
        data[j] = column_checks(X[:, j], y, name, encoder, config, edited_after.get(name))
    model_auc: float | None = None
    flagged: set[int] = {j for j, d in data.items() if verdict(d[3], j in pit)}
    model_evidence: dict[int, list[Evidence]] = {}
    rounds = 0
    if config.model_checks and 0 < y.sum() < len(y):
        for rounds in range(1, config.rounds + 1):
            usable = [j for j in range(len(names)) if j not in flagged]
            signed = [
                j for j in usable if j not in pit and any(e.fired and e.kind == SIGNATURE for e in data[j][3])
            ]
            auc_all, found = model_checks(X, y, encoder, usable, signed, config)
            if rounds == 1:
                model_auc = _finite(auc_all)
            for j, ev in found.items():
                # gain shares from the first round (with every column: later rounds have fewer
                # columns to share it); AUC drops from the newest (without the flagged columns,
                # which would hide a column saying the same thing)
                kept_gain = [e for e in model_evidence.get(j, []) if e.check == "gain_share"]
                drops = [e for e in ev if e.check == "auc_drop"]
                model_evidence[j] = [*(kept_gain or [e for e in ev if e.check == "gain_share"]), *drops] or [
                    e for e in model_evidence.get(j, []) if e.check == "auc_drop"
                ]
            new = {j for j in usable if verdict([*data[j][3], *model_evidence.get(j, [])], j in pit)}
            if not new:
                break
            flagged |= new
    keep_set = set(keep)
    findings = []
    for j, name in enumerate(names):
        auc, filled_share, pos_filled, evidence = data[j]
        evidence = [*evidence, *model_evidence.get(j, [])]
        rule = verdict(evidence, j in pit)
        is_flagged = rule is not None
        findings.append(
            LeakageFinding(
                name,
                auc,
                filled_share,
                pos_filled,
                is_flagged,
                rule,
                is_flagged and name not in keep_set,
                evidence,
                is_flagged and name in keep_set,
                j in pit,
            )
        )
    return AuditResult(findings, base, model_auc, rounds, config)


def leakage_audit(
    X: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    *,
    max_single_auc: float | None = None,
    max_positive_share_when_filled: float | None = None,
    allowlist: Sequence[str] = (),
    config: AuditConfig | None = None,
    edited_after: Mapping[str, np.ndarray] | None = None,
) -> list[LeakageFinding]:
    """The findings of :func:`audit` (``allowlist`` = columns kept although flagged)."""
    config = config or AuditConfig()
    if max_single_auc is not None:
        config = replace(config, max_single_auc=max_single_auc)
    if max_positive_share_when_filled is not None:
        config = replace(config, max_positive_share_when_filled=max_positive_share_when_filled)
    return audit(X, y, encoder, config=config, keep=allowlist, edited_after=edited_after).findings


def without(encoder: FeatureEncoder, columns: Sequence[str]) -> FeatureEncoder:
    """``encoder`` minus ``columns`` (the excluded ones)."""
    drop = set(columns)
    return FeatureEncoder(
        tuple(f for f in encoder.features if f not in drop),
        {k: v for k, v in encoder.categories.items() if k not in drop},
    )
