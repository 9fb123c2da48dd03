"""``prox forecast``: forecast lead volume, conversions and the open pipeline from the lake.

Reads canonical leads (``clean/leads``) and, for the pipeline, the latest scores
(``scores/scores``) from the lake under ``PROX_DATA_DIR``; writes the ``forecasts`` zone and
logs an MLflow run (unless ``--no-mlflow``). Prints one line per series and per horizon.
"""

from __future__ import annotations

import argparse
import datetime as dt

from prox.cli import UsageError, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "forecast",
        help="forecast weekly leads and conversions (statsmodels) and the open pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--as-of",
        type=_date,
        default=None,
        help="forecast date (YYYY-MM-DD, UTC); complete weeks before it are used (default: today)",
    )
    p.add_argument("--horizon", type=positive_int, default=12, help="weeks to forecast (default 12)")
    p.add_argument(
        "--max-segments",
        type=positive_int,
        default=5,
        help="largest segments per dimension with their own series; the rest is 'other' (default 5)",
    )
    p.add_argument("--no-pipeline", action="store_true", help="skip the pipeline (open leads) forecast")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from features.lake import Lake
    from pipelines.forecast import ForecastRunError, forecast_pipeline, forecast_volumes, log_run
    from prox.settings import Settings

    settings = Settings.from_env().ensure_dirs()
    as_of = args.as_of or dt.datetime.now(dt.UTC).date()  # the CLI's "now"; tasks never do this
    lake = Lake(settings.lake_dir)
    try:
        volumes = forecast_volumes(lake, as_of, horizon=args.horizon, max_segments=args.max_segments)
        pipeline = (
            None
            if args.no_pipeline
            else forecast_pipeline(lake, as_of, score_horizon_days=settings.label_horizon_days)
        )
        run_id = (
            None
            if args.no_mlflow
            else log_run(
                lake,
                as_of,
                tracking_uri=settings.tracking_uri,
                params={"horizon_weeks": args.horizon, "max_segments": args.max_segments},
            )
        )
    except ForecastRunError as exc:
        raise UsageError(str(exc)) from None
    print(
        f"forecast as of {as_of}: {volumes['n_series']} series "
        f"({volumes['n_model']} model, {volumes['n_baseline']} baseline, {volumes['n_fallback']} fallback)"
    )
    for sid, model in volumes["models"].items():
        why = volumes["why_not_a_model"].get(sid)
        print(f"  {sid:<45} {model}" + (f"  ({why})" if why else ""))
    if pipeline is not None:
        for line in pipeline.get("summary", [pipeline.get("skipped", "")]):
            print(f"  pipeline {line}")
    print(f"  lake: {volumes['paths']['series_forecast']}")
    if run_id:
        print(f"  mlflow run: {run_id}")
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None
