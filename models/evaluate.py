"""Evaluation on the newest holdout, per segment, and the leakage audit.

Figures: ROC AUC, PR AUC (average precision), log loss, Brier score, expected calibration
error (ECE: 10 equal-count bins, the row-weighted mean |mean prediction - rate|), lift and
conversion rate by decile, precision in the top 5/10/20%.

Segments (industry, region, lead source, company size): the same figures per segment with
enough rows and conversions to mean something; the *gap* of a dimension is the overall AUC
minus its worst segment's AUC, and the largest gap across dimensions is flagged (a model that
works for the average lead but fails one region is a fairness and a business problem).

Segments are the four CRM dimensions by default, or any categorical columns the user names
(``--segment COL``); a dimension without a segment big enough to evaluate is *not measured*
(absent from the gaps), never a gap of 0.

The leakage audit lives in :mod:`models.leakage` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from models.leakage import LeakageFinding, leakage_audit  # noqa: F401  (re-exported)

SEGMENT_DIMENSIONS: dict[str, str] = {
    "industry": "industry",
    "region": "region",
    "lead_source": "lead_source",
    "company_size": "size_band",
}
TOP_SHARES = (0.05, 0.10, 0.20)
#: A user-named segment column with more distinct values than this is not a segment.
MAX_SEGMENTS = 50


def fast_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); NaN with one class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |mean prediction - observed rate| over equal-count bins of p."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if chunk.size:
            total += chunk.size * abs(float(p[chunk].mean()) - float(y[chunk].mean()))
    return total / max(len(y), 1)


def deciles(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """Conversion rate, mean prediction and lift per decile (decile 1 = highest scores)."""
    order = np.argsort(-p, kind="stable")
    base = float(y.mean()) if len(y) else 0.0
    out = []
    for i, chunk in enumerate(np.array_split(order, 10), start=1):
        if not chunk.size:
            continue
        rate = float(y[chunk].mean())
        out.append(
            {
                "decile": i,
                "rows": int(chunk.size),
                "conversions": int(y[chunk].sum()),
                "rate": rate,
                "mean_probability": float(p[chunk].mean()),
                "lift": rate / base if base else float("nan"),
            }
        )
    return out


def precision_at(y: np.ndarray, p: np.ndarray, share: float) -> float:
    """Share of converters among the top ``share`` of leads by score."""
    k = max(round(len(y) * share), 1)
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean())


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The headline figures of a scored holdout."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    both = 0 < y.sum() < len(y)
    out = {
        "rows": float(len(y)),
        "positives": float(y.sum()),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p) if len(y) else float("nan"),
        "mean_probability": float(p.mean()) if len(y) else float("nan"),
    }
    for share in TOP_SHARES:
        out[f"precision_top_{int(share * 100)}pct"] = precision_at(y, p, share) if len(y) else float("nan")
    dec = deciles(y, p) if len(y) else []
    out["lift_top_decile"] = dec[0]["lift"] if dec else float("nan")
    return out


@dataclass
class Evaluation:
    """Everything measured on one holdout (JSON-ready via :meth:`to_json`)."""

    metrics: dict[str, float]
    deciles: list[dict[str, float]]
    segments: dict[str, list[dict[str, Any]]]
    segment_gaps: dict[str, float]
    largest_gap: dict[str, Any]
    oracle: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "deciles": self.deciles,
            "segments": self.segments,
            "segment_gaps": self.segment_gaps,
            "largest_gap": self.largest_gap,
            "oracle": self.oracle,
        }


def segment_metrics(
    y: np.ndarray,
    p: np.ndarray,
    segments: Mapping[str, np.ndarray],
    *,
    min_rows: int = 200,
    min_positives: int = 10,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float], dict[str, Any]]:
    """Per-segment figures, each dimension's AUC gap, and the largest gap (flagged)."""
    from sklearn.metrics import roc_auc_score

    overall = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    table: dict[str, list[dict[str, Any]]] = {}
    gaps: dict[str, float] = {}
    largest: dict[str, Any] = {
        "dimension": None,
        "segment": None,
        "gap": 0.0,
        "flagged": False,
        "measured": False,
    }
    for dim, values in segments.items():
        rows = []
        values = np.asarray(values, dtype=object)
        for seg in sorted({v for v in values.tolist()}, key=str):
            mask = values == seg
            ys, ps = y[mask], p[mask]
            enough = mask.sum() >= min_rows and min_positives <= ys.sum() < len(ys)
            row = {
                "segment": str(seg),
                "rows": int(mask.sum()),
                "positives": int(ys.sum()),
                "rate": float(ys.mean()),
                "mean_probability": float(ps.mean()),
                "roc_auc": float(roc_auc_score(ys, ps)) if enough else None,
                "precision_top_10pct": precision_at(ys, ps, 0.10),
                "evaluated": bool(enough),
            }
            rows.append(row)
        table[dim] = rows
        aucs = [(r["roc_auc"], r["segment"]) for r in rows if r["roc_auc"] is not None]
        if aucs and not np.isnan(overall):
            worst_auc, worst = min(aucs)
            gaps[dim] = overall - worst_auc
            largest["measured"] = True
            if gaps[dim] > largest["gap"]:
                largest = {
                    "dimension": dim,
                    "segment": worst,
                    "gap": gaps[dim],
                    "segment_auc": worst_auc,
                    "overall_auc": overall,
                    "flagged": True,
                    "measured": True,
                }
    return table, gaps, largest


def segment_values(
    table: pa.Table, dimensions: Mapping[str, str] = SEGMENT_DIMENSIONS
) -> dict[str, np.ndarray]:
    """The segment columns present in ``table`` (missing ones are skipped: flat files)."""
    out = {}
    for dim, column in dimensions.items():
        if column in table.column_names:
            out[dim] = np.array(
                table.column(column).cast(pa.string()).fill_null("unknown").to_pylist(), dtype=object
            )
    return out


def user_segments(table: pa.Table, columns: Sequence[str]) -> dict[str, str]:
    """Segment dimensions for the columns a user named (``--segment COL``); a column that is
    absent or has too many distinct values to be a segment is an error naming it."""
    import pyarrow.compute as pc

    out = {}
    for column in columns:
        if column not in table.column_names:
            raise ValueError(f"segment column {column!r} is not in the data")
        distinct = len(pc.unique(table.column(column)))
        if distinct > MAX_SEGMENTS:
            raise ValueError(
                f"segment column {column!r} has {distinct} distinct values (at most {MAX_SEGMENTS}): "
                f"not a categorical column"
            )
        out[column] = column
    return out


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    table: pa.Table,
    *,
    min_rows: int = 200,
    min_positives: int = 10,
    segments: Sequence[str] | None = None,
) -> Evaluation:
    """Full evaluation of probabilities ``p`` for the rows of ``table`` (labels ``y``).

    ``segments`` names the segment columns (default: the CRM dimensions present)."""
    y = np.asarray(y).astype(int)
    dims = user_segments(table, segments) if segments else SEGMENT_DIMENSIONS
    seg, gaps, largest = segment_metrics(
        y, p, segment_values(table, dims), min_rows=min_rows, min_positives=min_positives
    )
    return Evaluation(binary_metrics(y, p), deciles(y, p), seg, gaps, largest)


# ---- the oracle (simulated worlds only) -----------------------------------------------------------
def oracle_comparison(y: np.ndarray, p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """Model and oracle ROC AUC on the test rows the oracle covers (same rows, same labels).

    ``q`` is the oracle's probability per test row (:func:`sandbox.world.oracle_probability`
    at the row's snapshot), NaN for rows it leaves out (duplicates, already disqualified).
    """
    from sklearn.metrics import roc_auc_score

    keep = ~np.isnan(q)
    y = np.asarray(y).astype(int)[keep]
    model_auc = float(roc_auc_score(y, p[keep]))
    oracle_auc = float(roc_auc_score(y, q[keep]))
    return {
        "oracle_auc": oracle_auc,
        "model_auc_on_oracle_rows": model_auc,
        "oracle_gap": oracle_auc - model_auc,
        "oracle_rows": float(keep.sum()),
        "oracle_ece": expected_calibration_error(y, q[keep]),
    }
