"""``prox simulate``: draw a simulated CRM world to Parquet."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from prox.cli import UsageError, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate a B2B lead population, its engagement and conversions",
        description="Simulate a realistic CRM world (canonical tables, status history and hidden truth).",
    )
    p.add_argument(
        "--leads", type=positive_int, default=None, help="number of leads (default PROX_DEMO_LEADS)"
    )
    p.add_argument("--days", type=positive_int, default=None, help="days of history (default PROX_DEMO_DAYS)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="random seed (default PROX_SEED)")
    p.add_argument(
        "--end", type=_date, default=None, help="last day observed, YYYY-MM-DD (default 2026-11-01)"
    )
    p.add_argument(
        "--crm-split", default=None, help="e.g. 'salesforce=0.6,hubspot=0.4' (default PROX_CRM_SPLIT)"
    )
    p.add_argument(
        "--dirt-rate", type=float, default=None, help="share of dirty records (default PROX_DIRT_RATE)"
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default <data dir>/world)")
    p.set_defaults(func=run)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from prox.settings import Settings, ensure_writable_dir, parse_crm_split
    from sandbox.world import WorldSpec, write_world

    settings = Settings.from_env()
    split = parse_crm_split(args.crm_split, option="--crm-split") if args.crm_split else settings.crm_split
    dirt = settings.dirt_rate if args.dirt_rate is None else args.dirt_rate
    if not 0 <= dirt <= 0.5:
        raise UsageError(f"--dirt-rate: must be within [0, 0.5], got {dirt}")
    out = ensure_writable_dir(args.out or settings.world_dir, option="--out" if args.out else "PROX_DATA_DIR")
    spec = WorldSpec(
        n_leads=args.leads or settings.demo_leads,
        days=args.days or settings.demo_days,
        seed=settings.seed if args.seed is None else args.seed,
        end=args.end or WorldSpec.__dataclass_fields__["end"].default,
        crm_split=split,
        dirt_rate=dirt,
    )
    started = time.perf_counter()
    summary = write_world(spec, out)
    print(
        json.dumps({"out": str(out), "seconds": round(time.perf_counter() - started, 2), **summary}, indent=2)
    )
    return 0
