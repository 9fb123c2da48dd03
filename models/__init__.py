"""Training, calibration, evaluation, explanations, registry, scoring and forecasting."""
