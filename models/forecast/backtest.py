"""Rolling-origin backtest per series, and the rule that picks the model a series is forecast with.

For origins o = n-h, n-h-step, ... (at most ``n_origins``, each leaving at least
``min_train`` weeks to learn from) every finalist is refitted on the weeks before o and
forecasts the h weeks from o. Metrics over all origins and horizons:

* sMAPE = mean of 200·|f-a|/(|f|+|a|) (0 when both are 0);
* MASE = mean |f-a| divided by the in-sample MAE of the seasonal-naive forecast at each
  origin (lag 52, or lag 1 when the training window is shorter than a year and a week);
* coverage of the 80% and 95% intervals (share of actuals inside).

A model is used for a series only if its backtest MASE is strictly lower than the baseline's;
otherwise the baseline is used and the reason says so. The model structure (orders, trend,
harmonics) is selected once on the whole series and refitted per origin, a common shortcut
that makes the backtest slightly optimistic about the selection step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from models.forecast.fit import (
    SEASON,
    ForecastError,
    ModelSpec,
    assess,
    baseline_spec,
    predict,
    select_models,
    week_number,
)
from models.forecast.series import WeeklySeries

HORIZON = 12


@dataclass(frozen=True)
class BacktestScore:
    """Backtest metrics of one model on one series."""

    model: str
    smape: float
    mase: float
    coverage80: float
    coverage95: float
    n_points: int
    n_origins: int
    aicc: float = math.nan
    error: str = ""


@dataclass(frozen=True)
class SeriesForecast:
    """Everything decided for one series: the model used, why, its forecast and the backtest."""

    series: WeeklySeries
    model: str
    baseline: str
    reason: str
    forecast: pd.DataFrame  # index: future weeks; mean, lo80, hi80, lo95, hi95
    scores: tuple[BacktestScore, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    seconds: float = 0.0

    @property
    def chosen_score(self) -> BacktestScore | None:
        return next((s for s in self.scores if s.model == self.model), None)


def origins(n: int, *, horizon: int, n_origins: int, step: int, min_train: int) -> list[int]:
    """Training lengths of the backtest origins, latest last."""
    out = [n - horizon - i * step for i in range(n_origins)]
    return sorted(o for o in out if o >= min_train)


def smape(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    denom = np.abs(forecast) + np.abs(actual)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom == 0, 0.0, 200 * np.abs(forecast - actual) / denom)


def mase_scale(train: np.ndarray) -> float:
    """In-sample MAE of the seasonal-naive forecast (lag 1 on less than a year and a week)."""
    m = SEASON if len(train) > SEASON else 1
    if len(train) <= m:
        return math.nan
    return float(np.mean(np.abs(train[m:] - train[:-m])))


def backtest(
    spec: ModelSpec,
    y: np.ndarray,
    t_start: int,
    *,
    horizon: int = HORIZON,
    n_origins: int = 4,
    step: int = HORIZON,
    min_train: int = 16,
    start_params: np.ndarray | None = None,
) -> BacktestScore:
    """Rolling-origin backtest of ``spec`` on ``y``; a failed fit at any origin disqualifies it."""
    errs, smapes, in80, in95, scales = [], [], [], [], []
    used = origins(len(y), horizon=horizon, n_origins=n_origins, step=step, min_train=min_train)
    for o in used:
        train, actual = y[:o], y[o : o + horizon]
        try:
            p = predict(spec, train, t_start, horizon, start_params=start_params)
        except (ForecastError, np.linalg.LinAlgError, ValueError) as exc:
            return BacktestScore(
                spec.name, math.nan, math.nan, math.nan, math.nan, 0, len(used), error=str(exc)
            )
        scale = mase_scale(train)
        errs.append(np.abs(p.mean - actual) / (scale if scale and math.isfinite(scale) else 1.0))
        smapes.append(smape(p.mean, actual))
        in80.append((actual >= p.lo80) & (actual <= p.hi80))
        in95.append((actual >= p.lo95) & (actual <= p.hi95))
        scales.append(scale)
    if not used:
        return BacktestScore(
            spec.name, math.nan, math.nan, math.nan, math.nan, 0, 0, error="no backtest origin"
        )
    cat = np.concatenate
    return BacktestScore(
        spec.name,
        smape=float(np.mean(cat(smapes))),
        mase=float(np.mean(cat(errs))),
        coverage80=float(np.mean(cat(in80))),
        coverage95=float(np.mean(cat(in95))),
        n_points=int(sum(len(e) for e in errs)),
        n_origins=len(used),
    )


def forecast_series(
    series: WeeklySeries,
    *,
    horizon: int = HORIZON,
    n_origins: int = 4,
    step: int = HORIZON,
) -> SeriesForecast:
    """Assess, select, backtest and forecast one series; always returns a forecast and a reason."""
    started = time.perf_counter()
    a = assess(series.values)
    notes = tuple(series.notes) + a.notes
    y = a.values.to_numpy(dtype=float)
    last = series.values.index[-1] if len(series.values) else None
    weeks = _future_weeks(last, horizon)
    t0 = week_number(a.values.index[0]) if len(a.values) else 0

    if a.fallback is not None:
        p = predict(a.fallback, y, t0, horizon)
        return SeriesForecast(
            series,
            a.fallback.name,
            a.fallback.name,
            "; ".join(a.notes),
            p.frame(weeks),
            (),
            notes,
            time.perf_counter() - started,
        )

    base = baseline_spec(len(y), seasonal=a.seasonal)
    min_train = max(16, SEASON + 2) if base.family == "seasonal_naive" else 16
    kw = dict(horizon=horizon, n_origins=n_origins, step=step, min_train=min_train)
    base_score = backtest(base, y, t0, **kw)
    finalists = select_models(y, t0, seasonal=a.seasonal, horizon=horizon)
    scores = [base_score]
    for f in finalists:
        s = backtest(f.spec, y, t0, start_params=f.prediction.params, **kw)
        scores.append(replace(s, aicc=f.aicc))
    chosen, reason = _choose(base, base_score, [(f.spec, f.aicc) for f in finalists], scores[1:])
    fitted = {f.spec: f.prediction for f in finalists}
    p = fitted.get(chosen) or predict(chosen, y, t0, horizon)  # finalists were fitted on all weeks
    return SeriesForecast(
        series,
        chosen.name,
        base.name,
        reason,
        p.frame(weeks),
        tuple(scores),
        notes,
        time.perf_counter() - started,
    )


def forecast_all(
    series: Sequence[WeeklySeries], *, horizon: int = HORIZON, **kw: int
) -> list[SeriesForecast]:
    """:func:`forecast_series` for each series, in order."""
    return [forecast_series(s, horizon=horizon, **kw) for s in series]


def scores_frame(results: Sequence[SeriesForecast]) -> pd.DataFrame:
    """The backtest table: one row per series and model, with the choice and its reason."""
    rows = []
    for r in results:
        base = r.series
        if not r.scores:
            rows.append(
                {
                    "series_id": base.series_id,
                    "model": r.model,
                    "role": "fallback",
                    "chosen": True,
                    "smape": math.nan,
                    "mase": math.nan,
                    "coverage80": math.nan,
                    "coverage95": math.nan,
                    "n_points": 0,
                    "n_origins": 0,
                    "aicc": math.nan,
                    "error": "",
                    "reason": r.reason,
                }
            )
        for s in r.scores:
            rows.append(
                {
                    "series_id": base.series_id,
                    "model": s.model,
                    "role": "baseline" if s.model == r.baseline else "candidate",
                    "chosen": s.model == r.model,
                    "smape": s.smape,
                    "mase": s.mase,
                    "coverage80": s.coverage80,
                    "coverage95": s.coverage95,
                    "n_points": s.n_points,
                    "n_origins": s.n_origins,
                    "aicc": s.aicc,
                    "error": s.error,
                    "reason": r.reason if s.model == r.model else "",
                }
            )
    return pd.DataFrame(rows)


# ---- helpers ------------------------------------------------------------------------------
def _choose(
    base: ModelSpec,
    base_score: BacktestScore,
    finalists: Sequence[tuple[ModelSpec, float]],
    scores: Sequence[BacktestScore],
) -> tuple[ModelSpec, str]:
    ok = [(spec, s) for (spec, _), s in zip(finalists, scores, strict=True) if math.isfinite(s.mase)]
    if not math.isfinite(base_score.mase):
        if not ok:
            return base, f"{base.name}: no backtest possible ({base_score.error}); no model fitted either"
        return (
            base,
            f"{base.name} kept: backtest impossible ({base_score.error}), so no model can prove itself",
        )
    if not ok:
        failed = "; ".join(f"{s.model}: {s.error}" for s in scores) or "no candidate could be fitted"
        return base, f"{base.name} kept: no candidate model survived the backtest ({failed})"
    spec, best = min(ok, key=lambda pair: pair[1].mase)
    if best.mase < base_score.mase:
        return spec, (
            f"{spec.name} beats {base.name} in backtest (MASE {best.mase:.3f} < {base_score.mase:.3f}, "
            f"sMAPE {best.smape:.1f} vs {base_score.smape:.1f})"
        )
    return base, (
        f"{base.name} kept: best model {spec.name} does not beat it in backtest "
        f"(MASE {best.mase:.3f} >= {base_score.mase:.3f})"
    )


def _future_weeks(last: pd.Timestamp | None, horizon: int) -> pd.DatetimeIndex:
    start = (last if last is not None else pd.Timestamp("1970-01-05")) + pd.Timedelta(days=7)
    return pd.DatetimeIndex(pd.date_range(start, periods=horizon, freq="7D"), name="week")
