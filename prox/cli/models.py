"""``prox train | evaluate | promote | rollback | audit``: the model lifecycle from a terminal.

* ``prox train [--source auto|lake|world|world:<dir>]`` builds the training set from the CRM
  data (the lake's clean zone, or the simulated world), validates it, trains, evaluates,
  registers a new version as @challenger and runs the promotion gate.
  ``prox train --source file:<csv> --label <column> [--drop <column> ...]`` does the same on
  a flat file: split by time when it has a time column (``--time-column COL``, or the one date
  column filled on every row), with date parts as features; otherwise a stratified random
  split, and a warning and the card say so. Each run writes its own training set (keyed by
  run and content) and never overwrites another run's.
  The leakage audit excludes columns that look filled in after the outcome; ``--keep COL``
  keeps one anyway (recorded; the gate then refuses the model). ``--segment COL`` measures
  the segment AUC gap on a column you name. ``--model-name`` names the registered model.
  The command exits 1 when the gate refuses for leakage or leaves no champion.
* ``prox evaluate <version>`` prints a version's figures on the newest holdout.
* ``prox promote <version>`` runs the gate for a version (``--force --reason`` overrides it).
* ``prox rollback --reason TEXT [--to VERSION]`` moves @champion back.
* ``prox audit <version>`` prints the version's lineage and every decision about it, and
  recomputes the fingerprint of its training set on disk (exit 1 when it no longer matches).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from prox.cli import UsageError, positive_int


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-11-01, got {text!r}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


def add_parser(subparsers: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "train",
        help="train, evaluate, register and gate a lead-scoring model",
        description=__doc__,
        formatter_class=fmt,
    )
    p.add_argument(
        "--source",
        default="auto",
        help="auto (lake if it has leads, else the world), lake, world, world:<dir> or file:<csv>",
    )
    p.add_argument("--label", help="label column of a flat file (file: sources only)")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COLUMN",
        help="flat-file column to leave out (repeatable), e.g. one known only afterwards",
    )
    p.add_argument("--as-of", type=_date, default=None, help="run date (YYYY-MM-DD, UTC; default today)")
    p.add_argument("--trials", type=positive_int, default=12, help="LightGBM search: max trials (default 12)")
    p.add_argument("--time-budget", type=float, default=600.0, help="LightGBM search: seconds (default 600)")
    p.add_argument("--threads", type=positive_int, default=1, help="LightGBM threads (default 1)")
    p.add_argument(
        "--max-leaves",
        type=positive_int,
        default=31,
        help="LightGBM search: most leaves per tree (fewer = cheaper reasons; default 31)",
    )
    p.add_argument(
        "--max-depth", type=int, default=5, help="LightGBM search: tree depth cap (-1: none; default 5)"
    )
    p.add_argument("--calibration", choices=("isotonic", "sigmoid", "none"), default="isotonic")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--every-days", type=positive_int, default=14, help="days between snapshots (default 14)")
    p.add_argument("--lookback-days", type=positive_int, default=365, help="history used (default 365)")
    p.add_argument("--exclude", action="append", default=[], metavar="FEATURE", help="feature to leave out")
    p.add_argument(
        "--keep",
        "--allow-leak",
        dest="keep",
        action="append",
        default=[],
        metavar="COLUMN",
        help="keep this column even if the leakage audit flags it (recorded; the gate will not promote)",
    )
    p.add_argument(
        "--time-column",
        default=None,
        metavar="COLUMN",
        help="flat files: the date/datetime column that orders the rows (default: auto-detected)",
    )
    p.add_argument(
        "--missing-value",
        action="append",
        default=[],
        metavar="TEXT",
        help="flat files: one more text read as empty (besides '', Select, NA, N/A, null, none, ...)",
    )
    p.add_argument(
        "--segment",
        action="append",
        default=[],
        metavar="COLUMN",
        help="categorical column whose segments' AUC gap is measured (repeatable)",
    )
    p.add_argument("--model-name", default=None, help="registered model name (default: from the source)")
    p.add_argument(
        "--min-leads", type=positive_int, default=None, help="cold-start minimum leads (default 1000)"
    )
    p.add_argument(
        "--min-conversions",
        type=positive_int,
        default=None,
        help="cold-start minimum converting leads (default 120)",
    )
    _gate_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser(
        "evaluate",
        help="a registered model version's figures on the newest holdout",
        description=__doc__,
        formatter_class=fmt,
    )
    p.add_argument("version", help="model version number, or an alias such as champion")
    p.add_argument("--model-name", default=None)
    p.add_argument(
        "--training-set", default=None, help="training-set partition directory (default: the version's)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "promote",
        help="run the champion/challenger gate for a version",
        description=__doc__,
        formatter_class=fmt,
    )
    p.add_argument("version")
    p.add_argument("--model-name", default=None)
    p.add_argument("--force", action="store_true", help="make it the champion without the gate")
    p.add_argument("--reason", default="", help="why (required with --force)")
    _gate_args(p)
    p.set_defaults(func=run_promote)

    p = subparsers.add_parser(
        "rollback",
        help="move @champion back to the previous champion",
        description=__doc__,
        formatter_class=fmt,
    )
    p.add_argument("--reason", required=True, help="why (recorded on the versions and in the audit log)")
    p.add_argument(
        "--to", default=None, metavar="VERSION", help="version to restore (default: the previous champion)"
    )
    p.add_argument("--model-name", default=None)
    p.set_defaults(func=run_rollback)

    p = subparsers.add_parser(
        "audit",
        help="a model version's lineage, checks, metrics and decisions",
        description=__doc__,
        formatter_class=fmt,
    )
    p.add_argument("version")
    p.add_argument("--model-name", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_audit)


def _gate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--margin", type=float, default=0.002, help="ROC AUC the challenger must gain (default 0.002)"
    )
    p.add_argument("--max-ece", type=_fraction, default=0.03, help="calibration limit (default 0.03)")
    p.add_argument(
        "--max-segment-gap", type=_fraction, default=0.15, help="segment AUC gap limit (default 0.15)"
    )


def _gate_config(args: argparse.Namespace) -> Any:
    from models.registry import GateConfig

    return GateConfig(margin=args.margin, max_ece=args.max_ece, max_segment_gap=args.max_segment_gap)


def _settings() -> Any:
    from prox.settings import Settings

    return Settings.from_env().ensure_dirs()


@contextlib.contextmanager
def captured_output(log_path: Path) -> Iterator[TextIO]:
    """Send everything libraries print while training (Python warnings, MLflow's log lines and
    progress bars, LightGBM's C++ messages) to ``log_path``; yields the console for our own
    progress lines. Works on file descriptor 2, so output from C code is caught too."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    handler: logging.Handler | None = None
    with log_path.open("a") as log, warnings.catch_warnings():
        warnings.simplefilter("default")
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        logging.captureWarnings(True)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logging.captureWarnings(False)
            root.removeHandler(handler)
            console.close()


def progress_steps(console: TextIO, total: int) -> Any:
    """``step(name)``: one progress line per long step, ``[2/5] train ...... done in 12.3 s``."""
    counter = {"n": 0}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        counter["n"] += 1
        label = f"[{counter['n']}/{total}] {name:<9}"
        live = console.isatty()
        if live:
            console.write(f"{label} ...")
            console.flush()
        started = time.monotonic()
        try:
            yield
        except BaseException:
            console.write(
                f"{chr(13) if live else ''}{label} failed after {time.monotonic() - started:.1f} s\n"
            )
            raise
        console.write(f"{chr(13) if live else ''}{label} done in {time.monotonic() - started:.1f} s\n")

    return step


def run_train(args: argparse.Namespace) -> int:
    from models.dataset import DatasetError
    from models.train import TrainConfig
    from pipelines import retrain

    settings = _settings()
    config = TrainConfig(
        seed=args.seed,
        max_trials=args.trials,
        time_budget_s=args.time_budget,
        num_threads=args.threads,
        calibration=args.calibration,
        max_num_leaves=args.max_leaves,
        max_depth=args.max_depth,
    )
    extra = {k: v for k, v in (("min_leads", args.min_leads), ("min_conversions", args.min_conversions)) if v}
    options = retrain.RunOptions(
        every_days=args.every_days,
        lookback_days=args.lookback_days,
        exclude_features=tuple(args.exclude),
        leakage_allowlist=tuple(args.keep),
        segments=tuple(args.segment),
        model_name=args.model_name,
        **extra,
    )
    try:
        if args.source.startswith("file:"):
            if not args.label:
                raise UsageError("--label is required with --source file:<csv>")
            from models.dataset import MISSING_TOKENS

            info = retrain.flat_training_set(
                settings,
                args.source.removeprefix("file:"),
                args.label,
                args.drop,
                time_column=args.time_column,
                missing_tokens=(*MISSING_TOKENS, *args.missing_value),
            )
            if info["time_column"] is None:
                print(
                    "warning: a flat file has no time column; using a stratified random split, so the holdout "
                    "is not 'the future' and the figures are optimistic if the data drifts "
                    "(name a date column with --time-column)",
                    file=sys.stderr,
                )
            elif info.get("time_column_detected"):
                print(
                    f"time column: {info['time_column']} (auto-detected; --time-column to choose another)",
                    file=sys.stderr,
                )
        else:
            if args.label or args.drop or args.time_column or args.missing_value:
                raise UsageError(
                    "--label/--drop/--time-column/--missing-value apply to --source file:<csv> only"
                )
            as_of = args.as_of or dt.datetime.now(dt.UTC).date()  # the CLI's "now"; tasks never do this
            info = retrain.build_training_set(settings, as_of, source=args.source, options=options)
        log_path = settings.data_dir / "logs" / f"train-{info.get('run_key') or info['digest'][:16]}.log"
        with captured_output(log_path) as console:
            result = retrain.run_all(
                settings,
                info,
                config=config,
                options=options,
                gate_config=_gate_config(args),
                step=progress_steps(console, 5),
            )
    except (retrain.RetrainError, DatasetError) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return int(result["gate"].get("exit_code", 0))
    trained, gate = result["trained"], result["gate"]
    print(f"training set: {info['rows']} rows from {info['source']} ({info['path']})")
    print(f"validation: {result['validation']}")
    if trained.get("cold_start"):
        print(f"COLD START: {trained['reason']}; run {trained['run_id']}")
        return 0
    m = result["evaluated"]["metrics"]
    extra_text = f"  oracle AUC {m['oracle_auc']:.4f}" if "oracle_auc" in m else ""
    gap_text = (
        f"largest segment gap {m['largest_segment_gap']:.4f}"
        if m.get("segments_measured", True)
        else "segment gap not measured"
    )
    print(
        f"model: {trained['winner']}  test ROC AUC {m['roc_auc']:.4f}  PR AUC {m['pr_auc']:.4f}  "
        f"ECE {m['ece']:.4f}  {gap_text}{extra_text}"
    )
    print(
        f"registered: {trained['model_name']} version {result['registered']['version']} (run {trained['run_id']})"
    )
    leak = trained.get("leakage") or {}
    print(
        f"leakage audit: excluded {', '.join(trained.get('excluded') or []) or 'none'}"
        + (f"; kept (--keep) {', '.join(leak['kept'])}" if leak.get("kept") else "")
        + (f"; watched {', '.join(leak['suspect'])}" if leak.get("suspect") else "")
    )
    print(f"gate: {gate['decision']} ({gate['rule']}): {gate['message']}")
    print(f"run log (library warnings and messages): {log_path}")
    return int(gate.get("exit_code", 0))


def _resolve(settings: Any, name: str, version: str) -> str:
    from models.registry import alias_version, client

    if version.isdigit():
        return version
    found = alias_version(client(settings.tracking_uri), name, version)
    if found is None:
        raise UsageError(f"{name}: no version behind alias @{version}")
    return found


def run_evaluate(args: argparse.Namespace) -> int:
    from models.registry import RegistryError
    from pipelines import retrain

    settings = _settings()
    name = args.model_name or settings.model_name
    try:
        out = retrain.evaluate_version(
            settings, name, _resolve(settings, name, args.version), training_set=args.training_set
        )
    except (RegistryError, retrain.RetrainError) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True, default=str))
        return 0
    print(f"{name} version {out['version']} on {out['training_set']}")
    for key, value in out["metrics"].items():
        print(f"  {key:<22} {value:.4f}")
    gap = out["largest_gap"]
    if gap.get("flagged"):
        print(f"  largest segment gap: {gap['dimension']}={gap['segment']} {gap['gap']:.4f}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from models.registry import RegistryError, actor, client, force_promote
    from pipelines import retrain

    settings = _settings()
    name = args.model_name or settings.model_name
    try:
        version = _resolve(settings, name, args.version)
        if args.force:
            if not args.reason.strip():
                raise UsageError("--force needs --reason")
            record = force_promote(
                client(settings.tracking_uri),
                settings.data_dir,
                name,
                version,
                reason=args.reason,
                by=actor(),
            )
            print(f"{name} version {version} is @champion (forced: {args.reason}) at {record['at']}")
            return 0
        info, registered, evaluated = retrain.version_context(settings, name, version)
        with captured_output(settings.data_dir / "logs" / f"promote-{name}-{version}.log"):
            gate = retrain.gate(settings, info, registered, evaluated, gate_config=_gate_config(args))
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    print(f"gate: {gate['decision']} ({gate['rule']}): {gate['message']}")
    return 0 if gate["promoted"] else 1


def run_rollback(args: argparse.Namespace) -> int:
    from models.registry import RegistryError, actor, client, rollback

    settings = _settings()
    name = args.model_name or settings.model_name
    try:
        record = rollback(
            client(settings.tracking_uri),
            settings.data_dir,
            name,
            reason=args.reason,
            by=actor(),
            to_version=args.to,
        )
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    print(
        f"{name}: @champion is version {record['version']} again (was {record['numbers']['replaced']}): {args.reason}"
    )
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from models.registry import RegistryError, audit_report, client, format_audit

    settings = _settings()
    name = args.model_name or settings.model_name
    try:
        report = audit_report(
            client(settings.tracking_uri), settings.data_dir, name, _resolve(settings, name, args.version)
        )
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(report, indent=2, sort_keys=True, default=str) if args.json else format_audit(report))
    return 1 if report.get("training_set_check", {}).get("matches") is False else 0
