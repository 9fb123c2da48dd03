"""``prox validate <dataset> <path>``: run a dataset's suite on a file and print the verdict.

Exit status: 0 when the gate passes (with or without warnings), 1 on a critical failure
(the run would stop), 2 on a usage error (unknown dataset, missing file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from expectations.datasets import DATASETS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate a dataset file with its Great Expectations suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS, help="which suite to apply")
    parser.add_argument("path", type=Path, help="Parquet file, lake partition directory or CSV file")
    parser.add_argument(
        "--run-id", default=None, help="run id for quarantine and evidence (default: cli-<time>)"
    )
    parser.add_argument(
        "--reference-time",
        default=None,
        help="ISO time the checks treat as 'now' (future dates, freshness); default: the clock",
    )
    parser.add_argument(
        "--previous-rows", type=int, default=None, help="row count of the previous run (volume check)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write nothing (no quarantine, clean rows or reports)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from expectations.runner import ValidationError, validate
    from prox.cli import UsageError
    from prox.settings import Settings

    reference = _parse_time(args.reference_time) if args.reference_time else dt.datetime.now(dt.UTC)
    run_id = args.run_id or f"cli-{reference.strftime('%Y%m%dT%H%M%SZ')}"
    settings = Settings.from_env()
    if not args.dry_run:
        settings.ensure_dirs()
    previous = {"rows": args.previous_rows} if args.previous_rows else None
    try:
        outcome = validate(
            args.dataset,
            args.path,
            run_id=run_id,
            settings=settings,
            previous_run_stats=previous,
            reference_time=reference,
            write=not args.dry_run,
        )
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(outcome.summary(), indent=2) if args.json else format_summary(outcome))
    return 1 if outcome.failed else 0


def format_summary(outcome: Any) -> str:
    """A readable multi-line verdict: decision, counts, failures by severity, evidence paths."""
    checks = outcome.checks
    failed = [c for c in checks if not c.success and not c.skipped]
    skipped = [c for c in checks if c.skipped]
    lines = [
        f"{outcome.name}: {outcome.decision.upper()}  "
        f"({outcome.rows} rows, {outcome.quarantined_rows} quarantined = {outcome.bad_share:.1%}, "
        f"threshold {outcome.threshold:.1%})",
        f"checks: {len(checks) - len(failed) - len(skipped)} passed, {len(failed)} failed "
        f"({sum(c.severity == 'critical' for c in failed)} critical), {len(skipped)} skipped",
    ]
    from_checks = {c.message for c in checks}
    stopping = [m for m in outcome.messages if m not in from_checks]  # the bad-share verdict
    stopping += [c.message for c in outcome.critical_failures if not c.row_level]
    for title, items in (
        ("critical (stops the run):", stopping),
        ("quarantined rows:", [c.message for c in outcome.critical_failures if c.row_level]),
        ("warnings:", [c.message for c in outcome.warnings]),
    ):
        if items:
            lines.append(title)
            lines += [f"  - {m}" for m in items]
    if skipped:
        lines.append("skipped:")
        lines += [f"  - {c.expectation}({c.column}): {c.skipped}" for c in skipped]
    for label, path in (
        ("quarantine", outcome.quarantine_path),
        ("clean rows", outcome.clean_path),
        ("report", outcome.report_path),
        ("data docs", outcome.docs_path),
    ):
        if path is not None:
            lines.append(f"{label}: {path}")
    return "\n".join(lines)


def _parse_time(text: str) -> dt.datetime:
    from prox.cli import UsageError

    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--reference-time: not an ISO time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
