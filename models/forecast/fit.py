"""Forecasting models for one weekly series: SARIMAX, exponential smoothing, baselines, fallbacks.

Yearly seasonality on weekly data (period 52.18) is far too long for a seasonal SARIMAX or a
seasonal ETS (52 seasonal states, slow and over-fitted). Instead the season is a few Fourier
terms of the *absolute* week number (so training and forecast weeks line up in phase):

* SARIMAX: regression on level, slope and season with ARMA errors (d=0), or on slope (a
  drift once differenced) and season with ARIMA(p,1,q) errors; all regressors are exog
  columns of order one (time in years), which keeps the optimiser to ~10-30 iterations;
* ETS (additive errors, none/additive/damped trend) on the series deseasonalised by an OLS fit
  of level + slope + season; the seasonal part is added back to forecast and intervals.

The season is K Fourier pairs (0..:data:`MAX_FOURIER`) and, optionally, a year-end regressor
(share of the week within Dec 24 - Jan 1, a dip too sharp for a few harmonics); with the
scale (raw, or log1p for a multiplicative trend and season: a swing that grows with the
level) they are chosen by the AICc of an OLS fit (see :func:`choose_design`). Then at most :data:`SARIMAX_ORDERS` and :data:`ETS_TRENDS`
candidates are fitted and the best of each group kept by AICc (AIC is only comparable within
one differencing order and one family, so the groups' winners meet in the backtest instead).
Each statsmodels fit takes about 10-100 ms; fits run with BLAS limited to one thread, since
on these tiny matrices a multi-threaded BLAS is 5-20x *slower* (contention, worse on a shared
machine).

Intervals are normal, with the model's forecast variance plus the variance of the estimated
regression (slope and season) coefficients, which the state-space and ETS variances treat
as known; without that term the 80% intervals covered only about 70% in backtests.

The baseline is the seasonal naive forecast (same week last year) once two yearly cycles are
there, else the naive forecast (last value). Degenerate series never reach a model: see
:func:`assess`. Forecasts and interval bounds are clipped at 0, since counts cannot be negative.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import pandas as pd

#: Weeks in a year, for the Fourier terms.
YEAR_WEEKS: Final = 365.25 / 7
#: Lag of the seasonal-naive baseline.
SEASON: Final = 52
MAX_FOURIER: Final = 4
#: SARIMAX orders by differencing; the trend is a regressor: level + slope ("ct") with d=0,
#: a drift (the slope column, differenced into a constant) with d=1.
SARIMAX_ORDERS: Final = {
    0: (((1, 0, 0), "ct"), ((1, 0, 1), "ct")),
    1: (((0, 1, 1), "t"), ((1, 1, 1), "t")),
}
ETS_TRENDS: Final = ((None, False), ("add", False), ("add", True))
#: Below this, no model is fitted (nor backtested): the mean is forecast.
MIN_MODEL_WEEKS: Final = 26
#: Below two yearly cycles, seasonality is not modelled and the baseline is the naive forecast.
MIN_SEASONAL_WEEKS: Final = 2 * SEASON
#: Share of zero weeks above which a series is "sparse" and gets the Poisson-mean forecast.
SPARSE_ZERO_SHARE: Final = 0.5
BREAK_WINDOW: Final = 8
BREAK_RATIO: Final = 2.0
_EPOCH_MONDAY: Final = pd.Timestamp("1970-01-05")
_Z80: Final = 1.2815515655446004
_Z95: Final = 1.959963984540054


class ForecastError(ValueError):
    """A series cannot be forecast with the requested model; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """One forecasting model, without its fitted parameters (refitted per training window)."""

    family: str  # sarimax | ets | seasonal_naive | naive | mean | poisson_mean | constant
    order: tuple[int, int, int] = (0, 0, 0)
    trend: str | None = None
    damped: bool = False
    fourier: int = 0
    year_end: bool = False
    log: bool = False  # fitted on log1p(y): multiplicative trend and season

    @property
    def name(self) -> str:
        season = (f"+fourier{self.fourier}" if self.fourier else "") + ("+yearend" if self.year_end else "")
        log = "log-" if self.log else ""
        if self.family == "sarimax":
            return f"{log}sarimax{self.order}[{self.trend}]{season}".replace(" ", "")
        if self.family == "ets":
            trend = "N" if self.trend is None else ("Ad" if self.damped else "A")
            return f"{log}ets(A,{trend},N){season}"
        if self.family == "seasonal_naive":
            return f"seasonal_naive({SEASON})"
        return self.family

    @property
    def is_baseline(self) -> bool:
        return self.family in ("seasonal_naive", "naive")


@dataclass(frozen=True)
class Prediction:
    """Point forecast and 80%/95% interval bounds for ``horizon`` weeks (all clipped at 0)."""

    mean: np.ndarray
    lo80: np.ndarray
    hi80: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray
    aicc: float = math.nan
    params: np.ndarray | None = None  # fitted parameters, to warm-start refits on less data

    def frame(self, weeks: pd.DatetimeIndex) -> pd.DataFrame:
        return pd.DataFrame(
            {"mean": self.mean, "lo80": self.lo80, "hi80": self.hi80, "lo95": self.lo95, "hi95": self.hi95},
            index=weeks,
        )


@dataclass(frozen=True)
class Assessment:
    """What a series allows: the part to model, a forced fallback if any, and why."""

    values: pd.Series  # the weeks to model (after a structural break: only the weeks since)
    fallback: ModelSpec | None
    seasonal: bool
    notes: tuple[str, ...] = field(default=())


# ---- public API -----------------------------------------------------------------------------
def week_number(week: pd.Timestamp) -> int:
    """Absolute week number (weeks since Monday 1970-01-05), the phase of the Fourier terms."""
    return int((pd.Timestamp(week) - _EPOCH_MONDAY).days // 7)


def fourier_terms(t: np.ndarray, k: int) -> np.ndarray:
    """Sine/cosine pairs of the yearly cycle at absolute weeks ``t`` (``len(t)`` x ``2k``)."""
    t = np.asarray(t, dtype=float)
    if k == 0:
        return np.empty((len(t), 0))
    cols = []
    for j in range(1, k + 1):
        angle = 2 * np.pi * j * t / YEAR_WEEKS
        cols += [np.sin(angle), np.cos(angle)]
    return np.column_stack(cols)


def year_end_share(t: np.ndarray) -> np.ndarray:
    """Share of each absolute week's 7 days within Dec 24 - Jan 1, the B2B year-end lull.

    A sharp dip a few Fourier harmonics cannot follow; one regressor captures it.
    """
    t = np.asarray(t, dtype=np.int64)
    days = _EPOCH_MONDAY.to_datetime64().astype("datetime64[D]") + (7 * t)[:, None] + np.arange(7)
    idx = pd.DatetimeIndex(days.ravel())
    hit = ((idx.month == 12) & (idx.day >= 24)) | ((idx.month == 1) & (idx.day == 1))
    return np.asarray(hit, dtype=float).reshape(len(t), 7).mean(axis=1)


def season_terms(t: np.ndarray, k: int, year_end: bool) -> np.ndarray:
    """The seasonal regressors: ``k`` Fourier pairs, then the year-end share if asked."""
    f = fourier_terms(t, k)
    return np.column_stack([f, year_end_share(t)]) if year_end else f


def baseline_spec(n_weeks: int, *, seasonal: bool) -> ModelSpec:
    """Seasonal naive once the season can be used, else naive (last value)."""
    return ModelSpec("seasonal_naive") if seasonal and n_weeks > SEASON else ModelSpec("naive")


def assess(values: pd.Series) -> Assessment:
    """Decide what a series allows, with a plain reason for every fallback.

    Order: empty, structural break (keep the weeks since the latest one), constant (all
    zeros included), too short to model, sparse (mostly zero weeks), too short for seasonality.
    """
    y = values.astype(float)
    n = len(y)
    if n == 0:
        return Assessment(
            y, ModelSpec("constant"), False, ("empty: no complete week to learn from; forecasting 0",)
        )
    notes: list[str] = []
    brk = detect_break(y.to_numpy())
    if brk is not None:
        at, before, after = brk
        y = y.iloc[at:]
        notes.append(
            f"structural break in the week of {y.index[0].date()} (weekly level {before:.1f} -> {after:.1f}, "
            f"x{after / before if before else math.inf:.2f}): using only the {len(y)} week(s) since"
        )
        n = len(y)
    if np.all(y.to_numpy() == y.iloc[0]):
        level = y.iloc[0]
        what = "all zeros" if level == 0 else f"constant at {level:g}"
        notes.append(f"degenerate: {what} over {n} week(s); forecasting {level:g} with a zero-width interval")
        return Assessment(y, ModelSpec("constant"), False, tuple(notes))
    if n < MIN_MODEL_WEEKS:
        notes.append(
            f"too short: {n} week(s) < {MIN_MODEL_WEEKS} needed to fit and backtest a model; "
            "forecasting the mean with a t interval"
        )
        return Assessment(y, ModelSpec("mean"), False, tuple(notes))
    zero_share = float((y == 0).mean())
    if zero_share >= SPARSE_ZERO_SHARE:
        notes.append(
            f"sparse: {zero_share:.0%} of {n} weeks are zero; forecasting the mean weekly rate of the "
            f"last {min(n, SEASON)} weeks with Poisson intervals"
        )
        return Assessment(y, ModelSpec("poisson_mean"), False, tuple(notes))
    seasonal = n >= MIN_SEASONAL_WEEKS
    if not seasonal:
        notes.append(
            f"short for seasonality: {n} weeks < {MIN_SEASONAL_WEEKS} (two yearly cycles); yearly "
            "seasonality not modelled, baseline is the naive forecast"
        )
    return Assessment(y, None, seasonal, tuple(notes))


def detect_break(
    y: np.ndarray, *, window: int = BREAK_WINDOW, ratio: float = BREAK_RATIO, min_t: float = 5.0
) -> tuple[int, float, float] | None:
    """Latest persistent level shift: ``(first week after, level before, level after)`` or None.

    A week t is a break when the medians of the ``window`` weeks before and after differ by at
    least ``ratio`` times, a Welch t statistic on those windows exceeds ``min_t`` (so Poisson
    noise on small counts is not a break), and the mean of all weeks since differs from the
    mean of all weeks before by at least sqrt(``ratio``) in the same direction (persistent).
    Yearly seasonality and trend move a window's level by far less than 2x in 8 weeks, and
    do not shift the mean of everything after a point against everything before it.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    found = None
    for t in range(window, n - window + 1):
        before, after = y[t - window : t], y[t : t + window]
        mb, ma = float(np.median(before)), float(np.median(after))
        r = (ma + 1) / (mb + 1)
        if max(r, 1 / r) < ratio:
            continue
        se = math.sqrt(before.var(ddof=1) / window + after.var(ddof=1) / window) or 1e-9
        score = abs(after.mean() - before.mean()) / se  # peaks at the true break, unlike the medians
        if score < min_t:
            continue
        rest = (y[t:].mean() + 1) / (y[:t].mean() + 1)
        if max(rest, 1 / rest) < math.sqrt(ratio) or (rest > 1) != (r > 1):
            continue
        if found is None or t - found[0] > window or score > found[1]:
            found = (t, score)  # later breaks win; within one window the sharpest split wins
    if found is None:
        return None
    t = found[0]
    return t, float(y[max(0, t - window) : t].mean()), float(y[t : t + window].mean())


def choose_design(
    y: np.ndarray, t_start: int, *, seasonal: bool = True, max_k: int = MAX_FOURIER
) -> tuple[int, bool, bool]:
    """``(K, year_end, log)`` by the AICc of an OLS fit of level + slope + season.

    K Fourier harmonics (0..``max_k``) and the year-end regressor (tried only when the history
    holds a year end) are only considered for a ``seasonal`` series. ``log`` fits log1p(y),
    so trend and season act multiplicatively (a season's swing grows with the level); its
    AICc gets the Jacobian term 2·sum(log1p(y)) to be comparable with the raw scale.
    """
    n = len(y)
    t = np.arange(t_start, t_start + n)
    has_year_end = seasonal and bool(year_end_share(t).any())
    best, choice = math.inf, (0, False, False)
    for log in (False, True) if y.min() >= 0 else (False,):
        z = np.log1p(y) if log else y
        jacobian = 2 * float(np.sum(np.log1p(y))) if log else 0.0
        for k in range(max_k + 1 if seasonal else 1):
            for ye in (False, True) if has_year_end else (False,):
                x = np.column_stack([np.ones(n), (t - t_start) / n, season_terms(t, k, ye)])
                p = x.shape[1] + 1
                if n - p - 1 <= 0:
                    continue
                beta, *_ = np.linalg.lstsq(x, z, rcond=None)
                rss = float(np.sum((z - x @ beta) ** 2)) or 1e-12
                aicc = n * math.log(rss / n) + 2 * p + 2 * p * (p + 1) / (n - p - 1) + jacobian
                if aicc < best - 1e-9:
                    best, choice = aicc, (k, ye, log)
    return choice


def choose_fourier(y: np.ndarray, t_start: int, *, max_k: int = MAX_FOURIER) -> int:
    """Harmonics of the yearly cycle (see :func:`choose_design`)."""
    return choose_design(y, t_start, max_k=max_k)[0]


def candidate_specs(y: np.ndarray, t_start: int, *, seasonal: bool) -> list[ModelSpec]:
    """The bounded candidate set, before selection: SARIMAX orders x trend, ETS trends."""
    k, ye, log = choose_design(y, t_start, seasonal=seasonal)
    design = {"fourier": k, "year_end": ye, "log": log}
    specs = [ModelSpec("sarimax", order=o, trend=tr, **design) for d in (0, 1) for o, tr in SARIMAX_ORDERS[d]]
    specs += [ModelSpec("ets", trend=tr, damped=dm, **design) for tr, dm in ETS_TRENDS]
    return specs


@dataclass(frozen=True)
class Finalist:
    """The best candidate of a comparable group, with its fit and forecast on all the weeks."""

    spec: ModelSpec
    aicc: float
    prediction: Prediction


def select_models(y: np.ndarray, t_start: int, *, seasonal: bool, horizon: int = 12) -> list[Finalist]:
    """Best candidate by AICc within each comparable group (SARIMAX d=0, d=1, ETS).

    A candidate that fails to fit is skipped; the list may be empty.
    """
    groups: dict[str, Finalist] = {}
    for spec in candidate_specs(y, t_start, seasonal=seasonal):
        group = f"sarimax-d{spec.order[1]}" if spec.family == "sarimax" else spec.family
        try:
            p = predict(spec, y, t_start, horizon)
        except (ForecastError, np.linalg.LinAlgError, ValueError):
            continue
        if not math.isfinite(p.aicc):
            continue
        if group not in groups or p.aicc < groups[group].aicc:
            groups[group] = Finalist(spec, p.aicc, p)
    return list(groups.values())


def predict(
    spec: ModelSpec,
    y: Sequence[float] | np.ndarray,
    t_start: int,
    horizon: int,
    *,
    start_params: np.ndarray | None = None,
) -> Prediction:
    """Fit ``spec`` on ``y`` (weeks ``t_start``...) and forecast ``horizon`` weeks ahead.

    ``start_params`` (SARIMAX only) starts the optimiser there, e.g. at the full-series fit
    when refitting on a backtest window: same optimum, about half the iterations.
    """
    y = np.asarray(y, dtype=float)
    if len(y) == 0 and spec.family != "constant":
        raise ForecastError(f"{spec.name}: no data")
    fn = _PREDICTORS.get(spec.family)
    if fn is None:
        raise ForecastError(f"unknown model family {spec.family!r}")
    # statsmodels adds an "always" filter for its ConvergenceWarning when first imported:
    # import it before the block below, or that filter would beat our "ignore" once.
    import statsmodels.tools.sm_exceptions  # noqa: F401
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # statsmodels convergence chatter; AICc and the backtest judge
        z = np.log1p(y) if spec.log else y
        if spec.family == "sarimax":
            p = _sarimax(spec, z, t_start, horizon, start_params=start_params)
        else:
            p = fn(spec, z, t_start, horizon)
    if spec.log:  # quantiles survive a monotone map; the point forecast becomes the median
        p = replace(
            p,
            mean=np.expm1(p.mean),
            lo80=np.expm1(p.lo80),
            hi80=np.expm1(p.hi80),
            lo95=np.expm1(p.lo95),
            hi95=np.expm1(p.hi95),
            aicc=p.aicc + 2 * float(np.sum(np.log1p(y))),
        )
    return _clip(p)


# ---- model families -------------------------------------------------------------------------
def _sarimax(
    spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int, start_params: np.ndarray | None = None
) -> Prediction:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    n = len(y)
    scale = max(float(np.mean(np.abs(y))), 1.0)  # unit scale helps the optimiser
    t = np.arange(t_start, t_start + n + horizon)
    cols = [np.ones(len(t))] if spec.trend == "ct" else []
    cols += [(t - t_start) / SEASON, season_terms(t, spec.fourier, spec.year_end)]
    x = np.column_stack(cols)
    model = SARIMAX(y / scale, exog=x[:n], order=spec.order, trend="n", concentrate_scale=True)
    if start_params is not None and len(start_params) != len(model.start_params):
        start_params = None
    res = model.fit(start_params=start_params, disp=False, maxiter=100)
    fc = res.get_forecast(horizon, exog=x[n:])
    mean = np.asarray(fc.predicted_mean) * scale
    var = np.asarray(fc.var_pred_mean, dtype=float)
    # The state-space variance treats the regression coefficients as known; add their
    # uncertainty (x_f' Cov(beta) x_f), which matters for slope and season 12 weeks out.
    k = x.shape[1]
    cov = np.asarray(res.cov_params(), dtype=float)[:k, :k]
    if np.all(np.isfinite(cov)):
        var = var + np.maximum(np.einsum("ij,jk,ik->i", x[n:], cov, x[n:]), 0.0)
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(var)):
        raise ForecastError(f"{spec.name}: non-finite forecast")
    return replace(_normal(mean, np.sqrt(var) * scale), aicc=float(res.aicc), params=np.asarray(res.params))


def _ets(spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int) -> Prediction:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    n = len(y)
    t = np.arange(t_start, t_start + n + horizon)
    season = np.zeros(n + horizon)
    season_var = np.zeros(horizon)
    if spec.fourier or spec.year_end:
        f = season_terms(t, spec.fourier, spec.year_end)
        x = np.column_stack([np.ones(n), np.arange(n) / n, f[:n]])
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        season = f @ beta[2:]
        # uncertainty of the seasonal coefficients, added to the ETS variance below
        dof = max(n - x.shape[1], 1)
        sigma2 = float(np.sum((y - x @ beta) ** 2)) / dof
        cov = sigma2 * np.linalg.pinv(x.T @ x)[2:, 2:]
        season_var = np.maximum(np.einsum("ij,jk,ik->i", f[n:], cov, f[n:]), 0.0)
    z = pd.Series(y - season[:n])  # a pandas input: ETS prediction needs an index
    res = ETSModel(z, error="add", trend=spec.trend, damped_trend=spec.damped).fit(disp=False, maxiter=200)
    pred = res.get_prediction(n, n + horizon - 1)
    mean = np.asarray(pred.predicted_mean, dtype=float) + season[n:]
    var = np.asarray(pred.var_pred_mean, dtype=float) + season_var
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(var)):
        raise ForecastError(f"{spec.name}: non-finite forecast")
    return replace(_normal(mean, np.sqrt(var)), aicc=float(res.aicc))


def _seasonal_naive(spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int) -> Prediction:
    m = SEASON
    if len(y) <= m:
        raise ForecastError(f"{spec.name}: needs more than {m} weeks, got {len(y)}")
    h = np.arange(1, horizon + 1)
    mean = y[len(y) - m + (h - 1) % m]
    resid = y[m:] - y[:-m]
    sigma = math.sqrt(float(np.mean(resid**2))) * np.sqrt((h - 1) // m + 1)
    return _normal(mean, sigma)


def _naive(spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int) -> Prediction:
    if len(y) < 2:
        raise ForecastError(f"{spec.name}: needs at least 2 weeks, got {len(y)}")
    h = np.arange(1, horizon + 1)
    sigma = math.sqrt(float(np.mean(np.diff(y) ** 2))) * np.sqrt(h)
    return _normal(np.full(horizon, y[-1]), sigma)


def _mean(spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int) -> Prediction:
    from scipy import stats

    n = len(y)
    mu = float(y.mean())
    sd = max(float(y.std(ddof=1)) if n > 1 else 0.0, math.sqrt(max(mu, 0.0)))  # at least Poisson noise
    sd *= math.sqrt(1 + 1 / n)
    df = max(n - 1, 1)
    mean = np.full(horizon, mu)
    q80, q95 = float(stats.t.ppf(0.9, df)), float(stats.t.ppf(0.975, df))
    return Prediction(mean, mean - q80 * sd, mean + q80 * sd, mean - q95 * sd, mean + q95 * sd)


def _poisson_mean(spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int) -> Prediction:
    from scipy import stats

    mu = float(y[-SEASON:].mean())
    mean = np.full(horizon, mu)
    q = {a: np.full(horizon, float(stats.poisson.ppf(a, mu))) for a in (0.025, 0.1, 0.9, 0.975)}
    return Prediction(mean, q[0.1], q[0.9], q[0.025], q[0.975])


def _constant(spec: ModelSpec, y: np.ndarray, t_start: int, horizon: int) -> Prediction:
    level = np.full(horizon, float(y[-1]) if len(y) else 0.0)
    return Prediction(level, level, level, level, level)


def _normal(mean: np.ndarray, sigma: np.ndarray | float) -> Prediction:
    mean = np.asarray(mean, dtype=float)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), mean.shape)
    return Prediction(
        mean, mean - _Z80 * sigma, mean + _Z80 * sigma, mean - _Z95 * sigma, mean + _Z95 * sigma
    )


def _clip(p: Prediction) -> Prediction:
    c = lambda a: np.maximum(np.asarray(a, dtype=float), 0.0)  # noqa: E731
    return replace(p, mean=c(p.mean), lo80=c(p.lo80), hi80=c(p.hi80), lo95=c(p.lo95), hi95=c(p.hi95))


_PREDICTORS = {
    "sarimax": _sarimax,
    "ets": _ets,
    "seasonal_naive": _seasonal_naive,
    "naive": _naive,
    "mean": _mean,
    "poisson_mean": _poisson_mean,
    "constant": _constant,
}
