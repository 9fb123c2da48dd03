"""Forecasts of lead volume and conversions (statsmodels), and of the open pipeline.

Modules, one per stage: :mod:`~models.forecast.series` (weekly series from canonical
leads), :mod:`~models.forecast.fit` (SARIMAX, exponential smoothing, seasonal-naive
baseline, fallbacks), :mod:`~models.forecast.backtest` (rolling-origin backtest and the
per-series choice), :mod:`~models.forecast.pipeline` (expected conversions of open leads,
Poisson-binomial intervals), :mod:`~models.forecast.report` (lake and MLflow output) and
:mod:`~prox.cli.forecast` (``prox forecast``).
"""
