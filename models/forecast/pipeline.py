"""Pipeline forecast: how many of the currently open leads convert in the next 30 and 90 days.

With calibrated probabilities p_i that lead i converts within the horizon, and leads
converting independently, the number of conversions is Poisson-binomial: mean sum(p_i),
variance sum(p_i(1-p_i)). Its equal-tailed 80% and 95% intervals come from

* the **exact** distribution by dynamic programming (add one lead at a time:
  pmf'[k] = pmf[k](1-p) + pmf[k-1]p), on the support truncated at mean + 12 sd + 12, beyond
  which the mass is below 1e-30 (a Chernoff bound); cost O(n * support), used while that
  product is at most :data:`EXACT_MAX_WORK` (about 0.1 s);
* beyond it, the **refined normal approximation** (Volkova 1996; evaluated by Hong 2013):
  F(k) ~ G((k + 0.5 - mu) / sigma), G(x) = Phi(x) + gamma (1 - x^2) phi(x) / 6, with the
  skewness gamma = sum p(1-p)(1-2p) / sigma^3. It is only reached when sigma is large (many
  leads, many likely conversions), where its error is O(1/sigma^2) and negligible.

Independence is an assumption (a shared shock, e.g. a sales team's quarter, widens the true
interval); :func:`compare_with_realised` checks it against what actually converted.

Probabilities come from the lake's ``scores`` zone (the latest score of each open lead, for
the model's label horizon) or are passed in (tests pass the simulator's oracle). Scores
exist for one horizon H; another horizon h is derived with a constant hazard,
p_h = 1 - (1 - p_H)^(h/H), and the summary says so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import CLOSED_STATUSES

HORIZONS: Final = (30, 90)
EXACT_MAX_WORK: Final = 50_000_000
LEVELS: Final = (0.8, 0.95)


class PipelineError(ValueError):
    """Probabilities or leads cannot be used; the message names the lead and the field."""


@dataclass(frozen=True)
class ConversionInterval:
    """Poisson-binomial summary of the conversions of a set of leads."""

    n_leads: int
    expected: float
    sd: float
    lo80: int
    hi80: int
    lo95: int
    hi95: int
    method: str  # "exact" | "refined_normal"


def poisson_binomial_pmf(p: np.ndarray, *, kmax: int | None = None) -> np.ndarray:
    """Exact pmf of the number of successes, on 0..kmax (mass above kmax dropped)."""
    p = np.asarray(p, dtype=float)
    kmax = len(p) if kmax is None else min(kmax, len(p))
    pmf = np.zeros(kmax + 1)
    pmf[0] = 1.0
    for pi in p:
        if pi == 0.0:
            continue
        pmf[1:] = pmf[1:] * (1.0 - pi) + pmf[:-1] * pi
        pmf[0] *= 1.0 - pi
    return pmf


def refined_normal_cdf(k: np.ndarray, mu: float, sigma: float, gamma: float) -> np.ndarray:
    """Refined normal approximation of the Poisson-binomial CDF at integers ``k``."""
    from scipy.stats import norm

    x = (np.asarray(k, dtype=float) + 0.5 - mu) / sigma
    return np.clip(norm.cdf(x) + gamma * (1 - x**2) * norm.pdf(x) / 6, 0.0, 1.0)


def conversion_interval(probabilities: Iterable[float], *, method: str = "auto") -> ConversionInterval:
    """Expected conversions and equal-tailed 80%/95% intervals (see the module docstring)."""
    p = np.asarray(list(probabilities) if not isinstance(probabilities, np.ndarray) else probabilities, float)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        bad = int(np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))[0])
        raise PipelineError(f"probability #{bad} is {float(p[bad])!r}, outside [0, 1]")
    mu = float(p.sum())
    var = float(np.sum(p * (1 - p)))
    sigma = math.sqrt(var)
    kmax = int(min(len(p), math.ceil(mu + 12 * sigma + 12)))
    if method == "auto":
        method = "exact" if len(p) * (kmax + 1) <= EXACT_MAX_WORK or sigma < 3 else "refined_normal"
    if method == "exact":
        cdf = np.cumsum(poisson_binomial_pmf(p, kmax=kmax))
        ks = np.arange(len(cdf))
    elif method == "refined_normal" and sigma == 0:  # every p is 0 or 1: the count is certain
        cdf, ks = np.ones(1), np.array([round(mu)])
    elif method == "refined_normal":
        gamma = float(np.sum(p * (1 - p) * (1 - 2 * p))) / sigma**3
        ks = np.arange(max(0, math.floor(mu - 10 * sigma)), min(len(p), math.ceil(mu + 10 * sigma)) + 1)
        cdf = np.maximum.accumulate(refined_normal_cdf(ks, mu, sigma, gamma))  # monotone after clipping
    else:
        raise PipelineError(f"unknown method {method!r}; use 'auto', 'exact' or 'refined_normal'")

    def q(level: float) -> int:
        i = int(np.searchsorted(cdf, level - 1e-12, side="left"))
        return int(ks[min(i, len(ks) - 1)])

    bounds = {lvl: (q((1 - lvl) / 2), q(1 - (1 - lvl) / 2)) for lvl in LEVELS}
    return ConversionInterval(len(p), mu, sigma, *bounds[0.8], *bounds[0.95], method)


def open_leads(leads: pa.Table | pd.DataFrame, as_of: dt.datetime | dt.date) -> pd.DataFrame:
    """Leads open at ``as_of``: created before it, not converted before it, not closed.

    ``leads`` should be a snapshot taken at ``as_of``; a status closed later cannot be told
    from the snapshot alone, except for conversions (``converted_at`` says when).
    """
    df = leads.to_pandas() if isinstance(leads, pa.Table) else leads.copy()
    cutoff = _ts(as_of)
    created = pd.to_datetime(df["created_at"], utc=True)
    converted_at = pd.to_datetime(df["converted_at"], utc=True)
    converted_before = df["converted"].fillna(False).astype(bool) & (converted_at < cutoff)
    closed = df["status"].isin(CLOSED_STATUSES) & ~((df["status"] == "converted") & (converted_at >= cutoff))
    keep = (created < cutoff) & ~converted_before & ~closed
    return df.loc[keep].reset_index(drop=True)


def probabilities_for_horizons(
    probs: pd.DataFrame | pa.Table,
    *,
    horizons: Sequence[int] = HORIZONS,
    score_horizon_days: int | None = None,
) -> pd.DataFrame:
    """Long table (lead_id, horizon_days, probability, derived) for each horizon.

    ``probs`` has ``lead_id`` and either one column ``p_<h>d`` per horizon, or a single
    ``probability`` for ``score_horizon_days`` from which missing horizons are derived by a
    constant hazard (``derived`` is then True).
    """
    df = probs.to_pandas() if isinstance(probs, pa.Table) else probs.copy()
    if "lead_id" not in df.columns:
        raise PipelineError("probabilities: missing column lead_id")
    if df["lead_id"].isna().any():
        raise PipelineError("probabilities.lead_id: null value")
    dup = df["lead_id"].duplicated()
    if dup.any():
        raise PipelineError(
            f"probabilities: lead_id {df.loc[dup, 'lead_id'].iloc[0]!r} appears more than once"
        )
    frames = []
    for h in horizons:
        col = f"p_{h}d"
        if col in df.columns:
            p, derived = df[col].astype(float), False
        elif "probability" in df.columns and score_horizon_days:
            base = df["probability"].astype(float).clip(0, 1)
            p, derived = 1 - (1 - base) ** (h / score_horizon_days), h != score_horizon_days
        else:
            raise PipelineError(
                f"probabilities: no column {col} and no 'probability' with score_horizon_days to derive it"
            )
        bad = p.isna() | (p < 0) | (p > 1)
        if bad.any():
            i = bad.idxmax()
            raise PipelineError(
                f"probabilities: lead_id {df.loc[i, 'lead_id']!r} has {col}={float(p.loc[i])!r}, outside [0, 1]"
            )
        frames.append(
            pd.DataFrame(
                {
                    "lead_id": df["lead_id"].astype(str),
                    "horizon_days": h,
                    "probability": p.to_numpy(float),
                    "derived": derived,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def pipeline_forecast(
    probs: pd.DataFrame | pa.Table,
    *,
    as_of: dt.datetime | dt.date,
    horizons: Sequence[int] = HORIZONS,
    score_horizon_days: int | None = None,
    open_lead_ids: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Expected conversions per horizon: ``(summary, per-lead probabilities)``.

    ``open_lead_ids`` restricts the probabilities to the leads open at ``as_of``; leads open
    but without a probability are counted in ``n_unscored`` (they add nothing to the sum).
    """
    long = probabilities_for_horizons(probs, horizons=horizons, score_horizon_days=score_horizon_days)
    n_unscored = 0
    if open_lead_ids is not None:
        ids = set(map(str, open_lead_ids))
        n_unscored = len(ids - set(long["lead_id"]))
        long = long[long["lead_id"].isin(ids)].reset_index(drop=True)
    rows = []
    for h in horizons:
        part = long[long["horizon_days"] == h]
        ci = conversion_interval(part["probability"].to_numpy())
        rows.append(
            {
                "as_of": _ts(as_of),
                "horizon_days": h,
                **asdict(ci),
                "n_unscored": n_unscored,
                "derived": bool(part["derived"].any()) if len(part) else False,
            }
        )
    long.insert(0, "as_of", _ts(as_of))
    return pd.DataFrame(rows), long


def compare_with_realised(
    lead_probs: pd.DataFrame,
    leads_now: pa.Table | pd.DataFrame,
    *,
    known_until: dt.datetime | dt.date,
) -> pd.DataFrame:
    """Compare earlier pipeline forecasts with the conversions that happened since.

    ``lead_probs`` is the per-lead table of :func:`pipeline_forecast` (possibly several
    ``as_of``); only forecasts whose horizon ended by ``known_until`` are judged. Realised
    conversions are the forecast's leads converted in [as_of, as_of + horizon).
    """
    now = leads_now.to_pandas() if isinstance(leads_now, pa.Table) else leads_now
    conv = now.loc[now["converted"].fillna(False).astype(bool), ["lead_id", "converted_at"]].copy()
    conv["converted_at"] = pd.to_datetime(conv["converted_at"], utc=True)
    conv_at = dict(zip(conv["lead_id"].astype(str), conv["converted_at"], strict=True))
    limit = _ts(known_until)
    rows = []
    for (as_of, h), part in lead_probs.groupby(["as_of", "horizon_days"], sort=True):
        as_of = _ts(as_of)
        end = as_of + pd.Timedelta(days=int(h))
        if end > limit:
            continue
        at = part["lead_id"].map(conv_at)
        realised = int(((at >= as_of) & (at < end)).sum())
        ci = conversion_interval(part["probability"].to_numpy())
        rows.append(
            {
                "as_of": as_of,
                "horizon_days": int(h),
                "n_leads": ci.n_leads,
                "expected": ci.expected,
                "lo80": ci.lo80,
                "hi80": ci.hi80,
                "lo95": ci.lo95,
                "hi95": ci.hi95,
                "realised": realised,
                "error": realised - ci.expected,
                "inside80": ci.lo80 <= realised <= ci.hi80,
                "inside95": ci.lo95 <= realised <= ci.hi95,
            }
        )
    return pd.DataFrame(rows)


def latest_scores(scores: pa.Table | pd.DataFrame, as_of: dt.datetime | dt.date) -> pd.DataFrame:
    """The latest score of each lead scored before ``as_of`` (lead_id, probability)."""
    df = scores.to_pandas() if isinstance(scores, pa.Table) else scores.copy()
    df = df[pd.to_datetime(df["scored_at"], utc=True) < _ts(as_of)]
    df = df.sort_values("scored_at", kind="stable").drop_duplicates("lead_id", keep="last")
    return df[["lead_id", "probability"]].reset_index(drop=True)


def summary_text(summary: pd.DataFrame) -> Mapping[int, str]:
    """One readable line per horizon, for logs and the CLI."""
    out = {}
    for r in summary.itertuples(index=False):
        out[int(r.horizon_days)] = (
            f"next {r.horizon_days} days: {r.expected:.1f} expected conversions from {r.n_leads} open leads "
            f"(80% {r.lo80}-{r.hi80}, 95% {r.lo95}-{r.hi95}; {r.method}"
            + ("; probabilities derived by constant hazard" if r.derived else "")
            + ")"
        )
    return out


def _ts(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
