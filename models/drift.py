"""Population stability (PSI) of features and scores against the training data.

A *profile* is a small JSON-serialisable summary of a reference table (the training
snapshot): decile bin edges and shares for numeric columns, category shares for the rest.
It is logged with the model so scoring runs compare against exactly what the model saw.

PSI = sum((actual - expected) * ln(actual / expected)) over bins. Rules of thumb used by
credit-risk teams, and our defaults: below 0.1 stable, 0.1-0.25 a warning, above 0.25 a
shift large enough to stop pushing scores (configurable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EPS = 1e-4  # floor on shares, so an empty bin does not make PSI infinite
MISSING = "__missing__"
OTHER = "__other__"


@dataclass(frozen=True)
class DriftVerdict:
    """PSI per column and what it means for the run."""

    psi: dict[str, float]
    warn_at: float
    stop_at: float

    @property
    def warnings(self) -> dict[str, float]:
        return {k: v for k, v in self.psi.items() if self.warn_at <= v <= self.stop_at}

    @property
    def breaches(self) -> dict[str, float]:
        return {k: v for k, v in self.psi.items() if v > self.stop_at}

    @property
    def stop(self) -> bool:
        return bool(self.breaches)

    def explain(self) -> str:
        if not self.psi:
            return "no columns compared"
        worst = max(self.psi, key=self.psi.get)
        if self.stop:
            cols = ", ".join(
                f"{k} (PSI {v:.3f})" for k, v in sorted(self.breaches.items(), key=lambda kv: -kv[1])
            )
            return f"drift above the stop limit {self.stop_at}: {cols}"
        if self.warnings:
            return f"drift warning (PSI >= {self.warn_at}) on {', '.join(sorted(self.warnings))}"
        return f"stable: largest PSI {self.psi[worst]:.3f} on {worst}"


def _values(table: pa.Table, column: str) -> pa.Array:
    return table.column(column).combine_chunks()


def profile(table: pa.Table, columns: Iterable[str], *, bins: int = 10) -> dict:
    """Summarise ``columns`` of a reference table for later PSI comparisons."""
    out: dict[str, dict] = {}
    for col in columns:
        arr = _values(table, col)
        if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
            x = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            finite = x[np.isfinite(x)]
            edges = (
                np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
                if finite.size
                else np.array([])
            )
            counts = _numeric_counts(x, edges)
            out[col] = {
                "kind": "numeric",
                "edges": edges.tolist(),
                "shares": (counts / max(x.size, 1)).tolist(),
            }
        else:
            vc = pc.value_counts(arr.cast(pa.string()).fill_null(MISSING)).to_pylist()
            total = max(len(arr), 1)
            out[col] = {"kind": "category", "shares": {v["values"]: v["counts"] / total for v in vc}}
    return out


def _numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (right-closed bins between edges) plus a final bin for NaN."""
    finite = np.isfinite(x)
    idx = np.searchsorted(edges, x[finite], side="left")
    counts = np.bincount(idx, minlength=edges.size + 1).astype(float)
    return np.append(counts, float((~finite).sum()))


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(expected, EPS)
    a = np.maximum(actual, EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def population_stability(
    reference: Mapping[str, dict], table: pa.Table, *, warn_at: float = 0.1, stop_at: float = 0.25
) -> DriftVerdict:
    """PSI of each profiled column present in ``table`` against its reference profile."""
    psi: dict[str, float] = {}
    for col, ref in reference.items():
        if col not in table.column_names or len(table) == 0:
            continue
        arr = _values(table, col)
        if ref["kind"] == "numeric":
            x = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            actual = _numeric_counts(x, np.asarray(ref["edges"], dtype=float)) / x.size
            psi[col] = _psi(np.asarray(ref["shares"], dtype=float), actual)
        else:
            vc = pc.value_counts(arr.cast(pa.string()).fill_null(MISSING)).to_pylist()
            counts = {v["values"]: v["counts"] for v in vc}
            cats = list(ref["shares"])
            other = sum(c for k, c in counts.items() if k not in ref["shares"])
            expected = np.array([ref["shares"][k] for k in cats] + [0.0])
            actual = np.array([counts.get(k, 0) for k in cats] + [other], dtype=float) / len(arr)
            psi[col] = _psi(expected, actual)
    return DriftVerdict(psi=psi, warn_at=warn_at, stop_at=stop_at)
