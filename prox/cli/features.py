"""``prox features``: the feature spec for auditors, and point-in-time features from Parquet files.

prox features spec [--format md|json] [--out FILE]
prox features build --leads L.parquet --activities A.parquet [--status-history H.parquet]
                    --as-of 2026-09-01T00:00:00Z --out features.parquet [--report report.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path


def _as_of(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time such as 2026-09-01T00:00:00Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"--as-of needs a timezone (e.g. a trailing Z for UTC), got {text!r}"
        )
    return value.astimezone(dt.UTC)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="feature spec and point-in-time features")
    sub = parser.add_subparsers(dest="features_command", metavar="<action>", required=True)
    spec = sub.add_parser("spec", help="print or write the feature specification (for auditors)")
    spec.add_argument("--format", choices=("md", "json"), default="md")
    spec.add_argument("--out", type=Path, help="file to write (default: standard output)")
    spec.set_defaults(func=run_spec)
    build = sub.add_parser("build", help="build the feature table as of a time from Parquet files")
    build.add_argument("--leads", type=Path, required=True, help="LEADS Parquet file")
    build.add_argument("--activities", type=Path, required=True, nargs="+", help="ACTIVITIES Parquet file(s)")
    build.add_argument("--status-history", type=Path, help="LEAD_STATUS_HISTORY Parquet file")
    build.add_argument("--as-of", type=_as_of, required=True, help="ISO time with timezone")
    build.add_argument("--out", type=Path, required=True, help="feature table Parquet file to write")
    build.add_argument("--report", type=Path, help="data-quality report JSON to write")
    build.set_defaults(func=run_build)


def run_spec(args: argparse.Namespace) -> int:
    from features import spec

    text = spec.to_markdown() if args.format == "md" else spec.to_json()
    if args.out:
        args.out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


def run_build(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from features.build import FeatureInputError, build_features
    from features.contract import LEAD_STATUS_HISTORY
    from prox.cli import UsageError

    for path in [args.leads, *args.activities, *([args.status_history] if args.status_history else [])]:
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
    history = pq.read_table(args.status_history) if args.status_history else LEAD_STATUS_HISTORY.empty_table()
    try:
        table, report = build_features(pq.read_table(args.leads), list(args.activities), history, args.as_of)
    except FeatureInputError as exc:
        raise UsageError(str(exc)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out, compression="zstd")
    if args.report:
        args.report.write_text(report.to_json() + "\n")
    print(f"wrote {table.num_rows} feature rows to {args.out}; {report.summary()}")
    return 0
