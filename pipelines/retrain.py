"""The retraining run in steps shared by the DAG (one task each) and the CLI (all in a row).

1. :func:`build_training_set` - snapshots of the canonical tables -> stacked features + labels,
   written to the lake (``features/training_set/source=<s>/run=<key>-<content digest>``, see
   :func:`write_training_set`: never over another run's training set).
2. :func:`validate_training_set` - the GX ``features`` suite on it; a critical failure stops.
3. :func:`train` - opens the MLflow run: lineage, validation evidence, cold-start check,
   leakage audit, LightGBM search + logistic baseline, calibration; bundles on disk.
4. :func:`evaluate` - the newest holdout: metrics, segments, oracle (simulated data), score
   and tier cut-offs, plots, model card.
5. :func:`register` - the winner as an MLflow model (signature, input example), a new
   registered version, ``@challenger``.
6. :func:`gate` - champion vs challenger on the same holdout, leakage audits compared
   (:func:`models.registry.decide`); promote or refuse, recorded, with an ``exit_code``.

Every step takes and returns small JSON-able dicts (paths, ids, figures), never tables, so
the DAG passes them through XCom; each re-reads what it needs from the lake or MLflow.
Inputs come from the lake's clean zone (``source="lake"``, written by the extract DAGs) or
from the simulated world (``source="world"``); ``"auto"`` takes the lake when it has leads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import tempfile
import types
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from features.lake import Lake, latest_per_key
from models import coldstart
from models.dataset import (
    LABEL,
    MISSING_TOKENS,
    FeatureEncoder,
    Split,
    digest_file,
    labels,
    ordered_split,
    stratified_split,
    table_digest,
    time_split,
)
from models.registry import GateConfig
from models.train import TrainConfig
from prox.settings import Settings

log = logging.getLogger(__name__)

EXPERIMENT = "prox-training"
FLAT_EXPERIMENT = "prox-flatfile"
TRAINING_TABLE = "training_set"
CLEAN_TABLES = {"leads": "leads", "activities": "activities", "status_history": "lead_status_history"}


class RetrainError(RuntimeError):
    """A retraining step cannot run; the message names the input or rule."""


@dataclass(frozen=True)
class RunOptions:
    """What a run may vary besides the model knobs (all logged)."""

    every_days: int = 14
    lookback_days: int = 365
    horizon_days: int | None = None  # default: Settings.label_horizon_days
    #: Purge: drop training snapshots whose label window (as_of + horizon) reaches within this
    #: many days of the validation snapshot. Without it, a lead's label at the last training
    #: snapshots and at validation is the same conversion, and the search rewards memorising
    #: leads: on the 100k-lead world validation AUC read 0.937 for a model that tested 0.913,
    #: and the purged validation agrees with the test (0.918 / 0.917). <= 0 turns it off.
    embargo_days: float = 1.0
    exclude_features: tuple[str, ...] = ()
    #: Columns the leakage audit flags but the user keeps (``--keep``): recorded on the run
    #: and the card, and the gate will not promote a model that uses one.
    leakage_allowlist: tuple[str, ...] = ()
    max_single_auc: float = 0.9
    #: Quick-model checks of the audit (gain share, AUC drop without the column).
    leakage_model_checks: bool = True
    #: Segment columns for the fairness check (``--segment``); empty: the CRM dimensions present.
    segments: tuple[str, ...] = ()
    min_leads: int = coldstart.MIN_LEADS
    min_conversions: int = coldstart.MIN_CONVERSIONS
    segment_min_rows: int = 200
    segment_min_positives: int = 10
    model_name: str | None = None  # default: Settings.model_name

    def to_params(self) -> dict[str, Any]:
        return {f"run.{k}": (",".join(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# ---- inputs ----------------------------------------------------------------------------------------
@dataclass
class Inputs:
    leads: pa.Table
    activities: pa.Table
    status_history: pa.Table
    start: dt.datetime
    observed_until: dt.datetime
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> path, digest, rows
    world_dir: str | None = None


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def load_inputs(settings: Settings, source: str = "auto") -> Inputs:
    """Canonical leads, activities and status history with the digests of what was read."""
    lake = Lake(settings.lake_dir)
    if source == "auto":
        source = "lake" if lake.partitions("clean", CLEAN_TABLES["leads"]) else "world"
    if source == "lake":
        return _lake_inputs(lake)
    if source == "world" or source.startswith("world:"):
        directory = Path(source.partition(":")[2] or settings.world_dir)
        return _world_inputs(settings, directory)
    raise RetrainError(f"unknown source {source!r}: expected auto, lake, world or world:<dir>")


def _world_inputs(settings: Settings, directory: Path) -> Inputs:
    import pyarrow.parquet as pq

    from features.privacy import load_hash_key, pseudonymise_leads
    from plugins.world import WORLD_FILES, world_exists, world_span

    if not world_exists(directory):
        raise RetrainError(
            f"no simulated world at {directory}; run `prox world` or the prox_world_refresh DAG"
        )
    last_day, days = world_span(directory)
    raw = pq.read_table(directory / WORLD_FILES["raw_leads"])
    leads = pseudonymise_leads(raw, load_hash_key(settings.secrets_dir))
    activities = pq.read_table(directory / WORLD_FILES["activities"])
    history = pq.read_table(directory / WORLD_FILES["status_history"])
    end = _midnight(last_day)
    sources = {}
    for name, table in (("raw_leads", raw), ("activities", activities), ("status_history", history)):
        path = directory / WORLD_FILES[name]
        sources[name] = {"path": str(path), "digest": digest_file(path), "rows": table.num_rows}
    return Inputs(leads, activities, history, end - dt.timedelta(days=days), end, sources, str(directory))


def _lake_inputs(lake: Lake) -> Inputs:
    import pyarrow.compute as pc

    tables, sources = {}, {}
    newest = None
    for key, table_name in CLEAN_TABLES.items():
        parts = lake.partitions("clean", table_name)
        if not parts:
            raise RetrainError(
                f"no clean {table_name!r} in the lake at {lake.root / 'clean' / table_name}; "
                f"run the extract DAGs first"
            )
        manifests = [lake.manifest(p) for p in parts]
        tables[key] = pa.concat_tables([lake.read(p) for p in parts], promote_options="default")
        sources[table_name] = {
            "path": str(lake.root / "clean" / table_name),
            "rows": tables[key].num_rows,
            "digest": _combine([m["sha256"] for m in manifests]),
            "partitions": len(parts),
        }
        newest = max([newest or parts[0].run_date, *(p.run_date for p in parts)])
    leads = tables["leads"]
    leads = latest_per_key(leads, "lead_id", "updated_at")  # latest state; the last partition's row wins ties
    created = pc.min(leads.column("created_at")).as_py()
    start = created if created is not None else _midnight(newest)
    return Inputs(leads, tables["activities"], tables["status_history"], start, _midnight(newest), sources)


def _combine(digests: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(digests).encode()).hexdigest()


def snapshot_plan(
    start: dt.datetime, observed_until: dt.datetime, *, horizon_days: int, every_days: int, lookback_days: int
) -> list[dt.datetime]:
    """Snapshot times, newest exactly one horizon before the end of the data, going back."""
    last = observed_until - dt.timedelta(days=horizon_days)
    first = max(start + dt.timedelta(days=30), last - dt.timedelta(days=lookback_days))
    out, t = [], last
    while t >= first:
        out.append(t)
        t -= dt.timedelta(days=every_days)
    return out[::-1]


# ---- 1. training set ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainConfig:
    """The model, run and gate settings of one retraining run, made in one place from the DAG's
    params (each task rebuilds the same object from the same params)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    options: RunOptions = field(default_factory=RunOptions)
    gate: GateConfig = field(default_factory=GateConfig)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RetrainConfig:
        return cls(
            train=TrainConfig(
                max_trials=int(params["max_trials"]),
                time_budget_s=float(params["time_budget_s"]),
                seed=int(params["seed"]),
                num_threads=int(params["num_threads"]),
                max_num_leaves=int(params["max_num_leaves"]),
                max_depth=int(params["max_depth"]),
            ),
            options=RunOptions(
                every_days=int(params["every_days"]),
                lookback_days=int(params["lookback_days"]),
                exclude_features=tuple(params["exclude_features"]),
                min_leads=int(params["min_leads"]),
                min_conversions=int(params["min_conversions"]),
                segment_min_rows=int(params["segment_min_rows"]),
            ),
            gate=GateConfig(
                margin=float(params["margin"]),
                max_ece=float(params["max_ece"]),
                max_segment_gap=float(params["max_segment_gap"]),
            ),
        )


def build_training_set(
    settings: Settings, run_date: dt.date, *, source: str = "auto", options: RunOptions | None = None
) -> dict[str, Any]:
    """Stack point-in-time snapshots with labels into ``features/training_set`` (keyed by
    ``run_date`` and the content digest, :func:`write_training_set`)."""
    from features.labels import build_training_set as stack

    options = options or RunOptions()
    horizon = options.horizon_days or settings.label_horizon_days
    inputs = load_inputs(settings, source)
    until = min(inputs.observed_until, _midnight(run_date) + dt.timedelta(days=1))
    snaps = snapshot_plan(
        inputs.start,
        until,
        horizon_days=horizon,
        every_days=options.every_days,
        lookback_days=options.lookback_days,
    )
    if len(snaps) < 4:
        raise RetrainError(
            f"only {len(snaps)} snapshots fit between {inputs.start.date()} and {until.date()} with a "
            f"{horizon}-day horizon every {options.every_days} days; need 4 (train, valid, calib, test)"
        )
    table, reports = stack(
        inputs.leads,
        inputs.activities,
        inputs.status_history,
        snaps,
        horizon_days=horizon,
        observed_until=until,
    )
    name = "world" if inputs.world_dir else "lake"
    # keyed by run date and content: a rerun on the same data reuses the folder, new data gets
    # its own, and no run ever rewrites the training set of a registered version
    path, manifest = write_training_set(settings, table, name, run_date.isoformat())
    quality = {}
    for r in reports:
        quality[r.as_of] = {
            "leads_known": r.leads_known,
            "events_used": r.events_used,
            "dirty_events": r.dirty_events,
        }
    return {
        "path": str(path),
        "digest": manifest["sha256"],
        "content_digest": manifest["content_sha256"],
        "rows": table.num_rows,
        "source": name,
        "run_date": run_date.isoformat(),
        "snapshots": [s.isoformat() for s in snaps],
        "horizon_days": horizon,
        "observed_until": until.isoformat(),
        "sources": inputs.sources,
        "world_dir": inputs.world_dir,
        "split": "time",
        "quality": quality,
    }


def write_training_set(
    settings: Settings, table: pa.Table, source: str, run_key: str
) -> tuple[Path, dict[str, Any]]:
    """Write a training set under its own folder ``features/training_set/source=<source>/
    run=<run_key>-<content digest>``, atomically, never over another's.

    The folder name carries the content digest (:func:`models.dataset.table_digest`), so the
    same rows written again (a rerun) land in the same folder, which is kept as it is, and
    different rows can never replace it. ``_manifest.json`` records the SHA-256 of the Parquet
    files (what ``prox audit`` recomputes) and of the content."""
    import hashlib
    import os
    import shutil
    import uuid

    import pyarrow.parquet as pq

    content = table_digest(table)
    parent = Path(settings.lake_dir) / "features" / TRAINING_TABLE / f"source={source}"
    final = parent / f"run={run_key}-{content[:16]}"
    manifest_path = final / "_manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("content_sha256") == content:
            return final, manifest
        raise RetrainError(f"training set {final} exists with other content; refusing to overwrite it")
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        file = staging / "part-00000.parquet"
        pq.write_table(table, file, compression="zstd")
        manifest = {
            "table": TRAINING_TABLE,
            "source": source,
            "run_key": run_key,
            "rows": table.num_rows,
            "files": [file.name],
            "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
            "content_sha256": content,
        }
        (staging / "_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.rename(staging, final)  # fails if another writer got there first: keep theirs
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return final, json.loads(manifest_path.read_text())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, manifest


def flat_run_key(now: dt.datetime | None = None) -> str:
    """A training run's key for a flat file: UTC time plus a random suffix (two runs on one
    file, even in the same second, get two training sets)."""
    import uuid

    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def flat_training_set(
    settings: Settings,
    csv: Path | str,
    label: str,
    drop: Sequence[str] = (),
    *,
    time_column: str | None = None,
    missing_tokens: Sequence[str] = MISSING_TOKENS,
    run_key: str | None = None,
) -> dict[str, Any]:
    """A flat file as a training set, written under its own run key (never over another run's).

    The time column is ``time_column``, else the date/datetime column filled on nearly every
    row (:func:`models.dataset.detect_time_column`); with one the split is by time and date
    columns become date parts, without one the split is stratified random."""
    from models.dataset import add_date_parts, detect_time_column, read_flat_file

    csv = Path(csv)
    table = read_flat_file(csv, label, drop, missing_tokens=missing_tokens)
    time = detect_time_column(table, time_column)
    table = add_date_parts(table, time)
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in csv.stem).lower()
    key = run_key or flat_run_key()
    path, manifest = write_training_set(settings, table, f"file-{stem}", key)
    return {
        "path": str(path),
        "digest": manifest["sha256"],
        "content_digest": manifest["content_sha256"],
        "run_key": key,
        "rows": table.num_rows,
        "source": f"file:{csv.name}",
        "run_date": None,
        "snapshots": [],
        "horizon_days": None,
        "observed_until": None,
        "sources": {csv.name: {"path": str(csv), "digest": digest_file(csv), "rows": table.num_rows}},
        "world_dir": None,
        "flat": True,
        "split": "ordered" if time else "stratified",
        "time_column": time,
        "time_column_detected": time is not None and time_column is None,
        "label": label,
        "dropped": list(drop),
        "missing_tokens": list(missing_tokens),
        "flat_name": stem,
    }


def is_flat(info: Mapping[str, Any]) -> bool:
    """A flat-file training set (no feature spec, no GX suite)."""
    return bool(info.get("flat")) or info.get("split") in ("stratified", "ordered")


def read_training_set(info: Mapping[str, Any]) -> pa.Table:
    import pyarrow.parquet as pq

    path = Path(info["path"])
    files = sorted(path.glob("part-*.parquet"))
    if not files:
        raise RetrainError(f"training set {path} has no data files")
    return pa.concat_tables([pq.read_table(f) for f in files])


def make_split(info: Mapping[str, Any], table: pa.Table, options: RunOptions, seed: int) -> Split:
    if info.get("split") == "ordered":
        return ordered_split(table, info["time_column"])
    if info.get("split") == "stratified":
        import warnings

        from models.dataset import TimeUnknownWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TimeUnknownWarning)
            return stratified_split(table, seed=seed)
    return time_split(
        table, embargo_days=options.embargo_days, horizon_days=float(info.get("horizon_days") or 0)
    )


# ---- 2. validation ------------------------------------------------------------------------------
def validate_training_set(settings: Settings, info: Mapping[str, Any], *, run_id: str) -> dict[str, Any]:
    """The GX ``features`` suite on the training set; raises RetrainError on a critical failure."""
    if is_flat(info):
        return {
            "dataset": "flat_file",
            "decision": "not_applicable",
            "messages": ["no Great Expectations suite applies to an arbitrary flat file"],
        }
    from expectations.runner import report_dir, validate

    table = read_training_set(info)
    reference = dt.datetime.fromisoformat(info["observed_until"])
    outcome = validate(
        "features",
        table.drop_columns([LABEL]),
        run_id=run_id,
        settings=settings,
        reference_time=reference,
        write=False,
    )
    directory = report_dir(settings, run_id)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / "features.json"
    docs = directory / "features.html"
    report.write_text(json.dumps(outcome.to_json(), indent=2, sort_keys=True, default=str))
    docs.write_text(outcome.docs_html)
    checks = [c for c in outcome.checks if not c.skipped]
    summary = {
        **outcome.summary(),
        "report_path": str(report),
        "docs_path": str(docs),
        "checks_passed": sum(c.success for c in checks),
        "checks_failed": sum(not c.success for c in checks),
    }
    summary.pop("stats", None)
    if outcome.failed:
        raise RetrainError("training set failed validation: " + "; ".join(outcome.messages[:5]))
    return summary


# ---- 3. train ----------------------------------------------------------------------------------------
def _start_run(settings: Settings, info: Mapping[str, Any], run_id: str | None = None) -> Any:
    import mlflow

    from models.registry import client, ensure_store, use_experiment

    ensure_store(settings.tracking_uri)
    client(settings.tracking_uri)
    if run_id:
        return mlflow.start_run(run_id=run_id)
    use_experiment(settings.tracking_uri, FLAT_EXPERIMENT if is_flat(info) else EXPERIMENT)
    return mlflow.start_run()


def model_name_for(settings: Settings, info: Mapping[str, Any], options: RunOptions) -> str:
    if options.model_name:
        return options.model_name
    if is_flat(info):
        return f"prox-file-{info['flat_name']}"
    return settings.model_name


def _log_lineage(info: Mapping[str, Any]) -> None:
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = resolve_dataset_source(info["path"])
    mlflow.log_input(MetaDataset(source, name=TRAINING_TABLE, digest=info["digest"][:36]), context="training")
    for name, src in info["sources"].items():
        ds = MetaDataset(resolve_dataset_source(src["path"]), name=name, digest=src["digest"][:36])
        mlflow.log_input(ds, context="source")
    mlflow.log_dict(
        {
            "training_set": {
                k: info[k]
                for k in ("path", "digest", "rows", "snapshots", "horizon_days", "observed_until", "source")
            }
            | {k: info[k] for k in ("content_digest", "run_key", "time_column", "split") if k in info},
            "sources": info["sources"],
        },
        "lineage/lineage.json",
    )


def _log_validation(validation: Mapping[str, Any]) -> None:
    """Attach the GX evidence files to the run (as expectations.evidence does for outcomes)."""
    import mlflow

    dataset = validation.get("dataset", "features")
    folder = f"validation/{dataset}"
    for key in ("report_path", "docs_path"):
        path = validation.get(key)
        if path and Path(path).is_file():
            mlflow.log_artifact(path, artifact_path=folder)
    mlflow.set_tag(f"validation.{dataset}", validation.get("decision"))
    mlflow.set_tag("validation.decision", validation.get("decision"))
    for key in ("checks_passed", "checks_failed", "rows", "quarantined_rows"):
        if isinstance(validation.get(key), int | float):
            mlflow.log_metric(f"validation.{dataset}.{key}", float(validation[key]))
    mlflow.log_text(json.dumps(validation, indent=2, sort_keys=True, default=str), "validation/summary.json")


def _bundle_root(settings: Settings, run_id: str) -> Path:
    return settings.data_dir / "models" / "runs" / run_id


def train(
    settings: Settings,
    info: Mapping[str, Any],
    validation: Mapping[str, Any],
    *,
    config: TrainConfig | None = None,
    options: RunOptions | None = None,
    airflow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Open the MLflow run, log lineage and evidence, train (or fall back to cold start)."""
    import mlflow

    from features import spec as feature_spec
    from models.leakage import AuditConfig, without
    from models.leakage import audit as leakage_audit
    from models.registry import actor, append_audit, code_version
    from models.train import coefficient_table_markdown, train_models

    config = config or TrainConfig()
    options = options or RunOptions()
    model_name = model_name_for(settings, info, options)
    table = read_training_set(info)
    unknown = [c for c in options.segments if c not in table.column_names]
    if unknown:
        raise RetrainError(f"--segment {', '.join(unknown)}: no such column in the training set")
    with _start_run(settings, info) as run:
        run_id = run.info.run_id
        version = code_version()
        tags = {
            "prox.source": info["source"],
            "prox.code_version": version,
            "prox.model_name": model_name,
            "prox.training_set_path": info["path"],
            "prox.training_set_digest": info["digest"],
            "prox.split": info["split"],
            "prox.horizon_days": str(info.get("horizon_days")),
        }
        if version != "unknown":
            tags["mlflow.source.git.commit"] = version.removesuffix("-dirty")
        for key, value in (airflow or {}).items():
            tags[f"airflow.{key}"] = str(value)
        mlflow.set_tags(tags)
        mlflow.log_params(
            {
                **config.to_params(),
                **options.to_params(),
                "data.rows": info["rows"],
                "data.snapshots": len(info.get("snapshots") or []),
            }
        )
        _log_lineage(info)
        _log_validation(validation)
        if not is_flat(info):
            mlflow.log_text(feature_spec.to_markdown(), "feature_spec/feature_spec.md")
            mlflow.log_text(feature_spec.to_json(), "feature_spec/feature_spec.json")

        decision = coldstart.decide(
            table, min_leads=options.min_leads, min_conversions=options.min_conversions
        )
        mlflow.log_dict(decision.to_json(), "coldstart/decision.json")
        mlflow.log_metrics({"data.leads": decision.leads, "data.converting_leads": decision.conversions})
        if decision.cold_start:
            mlflow.set_tag("prox.cold_start", "true")
            mlflow.log_text(coldstart.__doc__ or "", "coldstart/rules.md")
            append_audit(
                settings.data_dir,
                {
                    "model": model_name,
                    "version": None,
                    "action": "cold_start",
                    "rule": "min_history",
                    "numbers": decision.to_json(),
                    "by": actor(airflow),
                    "message": decision.reason,
                    "run_id": run_id,
                },
            )
            log.warning(decision.reason)
            return {"run_id": run_id, "cold_start": True, "reason": decision.reason, "model_name": model_name}
        mlflow.set_tag("prox.cold_start", "false")

        split = make_split(info, table, options, config.seed)
        if info["split"] == "time":
            encoder = FeatureEncoder.from_spec(exclude=options.exclude_features)
            # built from events before the snapshot: only lead fields ("fit") can be edited later
            point_in_time = [f.name for f in feature_spec.FEATURES if f.family != "fit"]
            audit_config = AuditConfig.for_crm(
                max_single_auc=options.max_single_auc, model_checks=options.leakage_model_checks
            )
        else:
            time_column = [info["time_column"]] if info.get("time_column") else []
            encoder = FeatureEncoder.infer(table, exclude=[*options.exclude_features, *time_column])
            point_in_time = []
            audit_config = AuditConfig(
                missing_tokens=tuple(info.get("missing_tokens") or AuditConfig().missing_tokens),
                max_single_auc=options.max_single_auc,
                model_checks=options.leakage_model_checks,
            )
        unknown = [c for c in options.leakage_allowlist if c not in encoder.features]
        if unknown:
            raise RetrainError(f"--keep {', '.join(unknown)}: no such feature")
        audited = leakage_audit(
            encoder.transform(split.train),
            labels(split.train),
            encoder,
            config=audit_config,
            keep=options.leakage_allowlist,
            point_in_time=point_in_time,
        )
        excluded = audited.excluded
        audit_json = audited.to_json()
        mlflow.log_dict(audit_json, "leakage/audit.json")
        audit_file = _bundle_root(settings, run_id) / "leakage_audit.json"  # read back by evaluate
        audit_file.parent.mkdir(parents=True, exist_ok=True)
        audit_file.write_text(json.dumps(audit_json, sort_keys=True, default=str))
        mlflow.log_params(audit_config.to_params())
        mlflow.log_metric("leakage.flagged", float(len(audited.flagged)))
        mlflow.log_metric("leakage.suspect_auc", float(audited.suspect_auc()))
        if excluded:
            log.warning("leakage audit excluded %s", ", ".join(excluded))
            encoder = without(encoder, excluded)
        if audited.kept:
            log.warning("leakage audit flagged %s, kept by request (--keep)", ", ".join(audited.kept))
        mlflow.set_tags(
            {
                "prox.leakage_excluded": ",".join(excluded) or "none",
                "prox.leakage_kept": ",".join(audited.kept) or "none",
                "prox.leakage_suspect": ",".join(audited.summary()["suspect"]) or "none",
                "prox.leakage_suspect_auc": f"{audited.suspect_auc():.4f}",
                "prox.leakage_summary": json.dumps(audited.summary(), sort_keys=True, default=str)[:4900],
                "prox.time_column": str(info.get("time_column")),
            }
        )

        result = train_models(split, encoder, config)
        root = _bundle_root(settings, run_id)
        dirs = {}
        for cand in result.candidates:
            cand.bundle.meta.update(
                {
                    "run_id": run_id,
                    "model_name": model_name,
                    "horizon_days": info.get("horizon_days"),
                    "kind": cand.name,
                }
            )
            dirs[cand.name] = str(cand.bundle.save(root / cand.name))
        mlflow.set_tag("prox.winner", result.winner.name)
        for cand in result.candidates:
            mlflow.log_metrics(
                {
                    f"valid.{cand.name}.roc_auc": cand.valid_auc,
                    f"valid.{cand.name}.log_loss": cand.valid_logloss,
                }
            )
        lgb = result.by_name("lightgbm")
        if lgb is not None:
            mlflow.log_params(
                {
                    f"lgb.{k}": v
                    for k, v in lgb.details["params"].items()
                    if k not in ("metric", "objective", "verbose")
                }
            )
        mlflow.log_dict({"trials": result.trials}, "search/trials.json")
        mlflow.log_metric("search.trials", float(len(result.trials)))
        baseline = result.by_name("logistic")
        if baseline is not None and baseline.bundle.logistic is not None:
            mlflow.log_text(coefficient_table_markdown(baseline.bundle.logistic), "baseline/coefficients.md")
            mlflow.log_dict({"coefficients": baseline.bundle.logistic.table}, "baseline/coefficients.json")
        mlflow.log_dict(split.describe(), "data/split.json")
        return {
            "run_id": run_id,
            "cold_start": False,
            "winner": result.winner.name,
            "bundles": dirs,
            "model_name": model_name,
            "excluded": excluded,
            "kept": audited.kept,
            "leakage": audited.summary(),
            "features": len(encoder.features),
        }


# ---- 4. evaluate ------------------------------------------------------------------------------------
def _oracle_probabilities(info: Mapping[str, Any], test: pa.Table) -> np.ndarray | None:
    """The simulated world's true probability per test row (NaN where it has none)."""
    if not info.get("world_dir"):
        return None
    import pyarrow.parquet as pq

    from plugins.world import WORLD_FILES, oracle_probability

    truth = pq.read_table(Path(info["world_dir"]) / WORLD_FILES["truth"])
    world = types.SimpleNamespace(truth=truth)
    q = np.full(test.num_rows, np.nan)
    as_of = test.column("as_of").cast(pa.int64()).to_numpy()
    ids = np.array(test.column("lead_id").to_pylist(), dtype=object)
    for t in np.unique(as_of):
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(t))
        oracle = oracle_probability(world, moment, float(info["horizon_days"]))  # type: ignore[arg-type]
        lookup = dict(
            zip(oracle.column("lead_id").to_pylist(), oracle.column("probability").to_numpy(), strict=True)
        )
        rows = np.flatnonzero(as_of == t)
        q[rows] = [lookup.get(i, np.nan) for i in ids[rows]]
    return q


def evaluate(
    settings: Settings,
    info: Mapping[str, Any],
    trained: Mapping[str, Any],
    *,
    config: TrainConfig | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Score the newest holdout; log metrics, segments, oracle, plots and the model card."""
    import mlflow

    from models.bundle import ModelBundle
    from models.evaluate import evaluate as run_evaluation
    from models.evaluate import oracle_comparison
    from models.explain import gain_importance, shap_importance
    from models.registry import code_version
    from models.report import model_card, write_plots
    from models.score import score_quantiles, tier_thresholds

    if trained.get("cold_start"):
        return {"cold_start": True, "run_id": trained["run_id"]}
    config = config or TrainConfig()
    options = options or RunOptions()
    table = read_training_set(info)
    split = make_split(info, table, options, config.seed)
    y = labels(split.test)
    results: dict[str, Any] = {}
    winner_name = trained["winner"]
    with _start_run(settings, info, trained["run_id"]):
        evaluations = {}
        for name, directory in trained["bundles"].items():
            bundle = ModelBundle.load(directory)
            p = bundle.predict(bundle.encoder.transform(split.test))
            evaluations[name] = (
                bundle,
                p,
                run_evaluation(
                    y,
                    p,
                    split.test,
                    min_rows=options.segment_min_rows,
                    min_positives=options.segment_min_positives,
                    segments=options.segments or None,
                ),
            )
        bundle, p, ev = evaluations[winner_name]
        X_test = bundle.encoder.transform(split.test)
        q = _oracle_probabilities(info, split.test)
        if q is not None and (~np.isnan(q)).sum() and 0 < y[~np.isnan(q)].sum() < (~np.isnan(q)).sum():
            ev.oracle = oracle_comparison(y, p, q)
        cuts, tier_info = tier_thresholds(y, p)
        bundle.score_quantiles = score_quantiles(p)
        bundle.tier_thresholds = {k: v for k, v in cuts.items() if v is not None}
        bundle.meta.update(
            {
                "test_metrics": ev.metrics,
                "tiers": tier_info,
                "drift_profile": _drift_profile(split.test, bundle),
            }
        )
        bundle.save(trained["bundles"][winner_name])

        metrics = {f"test.{k}": v for k, v in ev.metrics.items() if isinstance(v, float) and np.isfinite(v)}
        metrics["test.largest_segment_gap"] = float(ev.largest_gap.get("gap", 0.0))
        metrics.update({f"test.segment_gap.{k}": v for k, v in ev.segment_gaps.items()})
        metrics.update({f"test.{k}": v for k, v in ev.oracle.items()})
        for name, (_, _, other) in evaluations.items():
            metrics.update(
                {
                    f"test.{name}.{k}": v
                    for k, v in other.metrics.items()
                    if k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece") and np.isfinite(v)
                }
            )
        mlflow.log_metrics(metrics)
        mlflow.log_dict(ev.to_json(), "evaluation/evaluation.json")
        mlflow.log_dict(
            {"thresholds": cuts, "tiers": tier_info, "score_quantiles": bundle.score_quantiles},
            "evaluation/tiers.json",
        )
        if ev.largest_gap.get("flagged"):
            mlflow.set_tag(
                "prox.largest_segment_gap",
                f"{ev.largest_gap['dimension']}={ev.largest_gap['segment']} gap {ev.largest_gap['gap']:.4f}",
            )

        shap = shap_importance(bundle, X_test, max_rows=1_000)  # exact TreeSHAP is costly on big models
        gain = gain_importance(bundle)
        mlflow.log_dict({"mean_abs_shap": shap, "gain": gain}, "explain/importance.json")
        with tempfile.TemporaryDirectory() as tmp:
            files = write_plots(y, p, shap, Path(tmp), oracle_p=q)
            for path in files.values():
                mlflow.log_artifact(str(path), artifact_path="plots")
        audit_file = _bundle_root(settings, trained["run_id"]) / "leakage_audit.json"
        audit_json = (
            json.loads(audit_file.read_text())
            if audit_file.is_file()
            else mlflow.artifacts.load_dict(f"runs:/{trained['run_id']}/leakage/audit.json")
        )
        baseline = evaluations.get("logistic")
        card = model_card(
            model_name=trained["model_name"],
            kind=winner_name,
            run_id=trained["run_id"],
            split=split.describe(),
            metrics=ev.metrics,
            baseline_metrics=baseline[2].metrics if baseline else None,
            segment_gaps=ev.segment_gaps,
            largest_gap=ev.largest_gap,
            leakage=audit_json["findings"],
            leakage_summary=audit_json.get("summary"),
            time_column=info.get("time_column"),
            segment_columns=options.segments,
            tiers=tier_info,
            oracle=ev.oracle,
            horizon_days=info.get("horizon_days"),
            source=info["source"],
            code_version=code_version(),
            importance=shap,
            flat_file=is_flat(info),
        )
        mlflow.log_text(card, "model_card.md")
        mlflow.set_tag("prox.segments_measured", ",".join(ev.segment_gaps) or "none")
        results = {
            "roc_auc": ev.metrics["roc_auc"],
            "ece": ev.metrics["ece"],
            "largest_segment_gap": float(ev.largest_gap.get("gap", 0.0)),
            "segments_measured": sorted(ev.segment_gaps),
            "pr_auc": ev.metrics["pr_auc"],
            **{k: v for k, v in ev.oracle.items() if k in ("oracle_auc", "oracle_gap")},
        }
    return {"run_id": trained["run_id"], "cold_start": False, "metrics": results}


def _drift_profile(
    reference: pa.Table, bundle: Any, max_rows: int = 200_000, seed: int = 7
) -> dict[str, Any]:
    """The reference the nightly job's PSI compares against: the newest labelled snapshot
    (the model's holdout) and the model's scores on it. Pooling every training snapshot was
    tried and reads a young CRM's early months (young leads, small accounts) as drift."""
    from models.drift import profile

    if reference.num_rows > max_rows:  # a fixed-seed sample bounds the cost; shares barely move
        rows = np.sort(np.random.default_rng(seed).choice(reference.num_rows, max_rows, replace=False))
        reference = reference.take(pa.array(rows))
    columns = [f for f in bundle.encoder.features if f in reference.column_names]
    probability = bundle.predict(bundle.encoder.transform(reference))
    table = reference.select(columns).append_column(
        "probability", pa.array(np.asarray(probability, dtype=np.float64))
    )
    return profile(table, [*columns, "probability"])


# ---- 5. register --------------------------------------------------------------------------------------
def register(
    settings: Settings,
    info: Mapping[str, Any],
    trained: Mapping[str, Any],
    evaluated: Mapping[str, Any],
    *,
    airflow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Log the winner as an MLflow model and register it as a new version, ``@challenger``."""
    if trained.get("cold_start"):
        return {"version": None, "cold_start": True, "run_id": trained["run_id"]}
    import mlflow
    from mlflow.models import infer_signature

    from models.bundle import ModelBundle
    from models.pyfunc import ProxModel
    from models.registry import actor, client, set_challenger

    table = read_training_set(info)
    bundle_dir = trained["bundles"][trained["winner"]]
    bundle = ModelBundle.load(bundle_dir)
    example = table.select(list(bundle.encoder.features)).slice(0, 5).to_pandas()
    X = bundle.encoder.transform(table.slice(0, 5))
    p = bundle.predict(X)
    import pandas as pd

    output = pd.DataFrame({"probability": p, "score": bundle.scores(p), "tier": bundle.tiers(p).astype(str)})
    signature = infer_signature(example, output)
    requirements = [
        f"lightgbm=={_version('lightgbm')}",
        f"numpy=={_version('numpy')}",
        f"pyarrow=={_version('pyarrow')}",
        f"pandas=={_version('pandas')}",
        f"mlflow=={_version('mlflow')}",
    ]
    name = trained["model_name"]
    with _start_run(settings, info, trained["run_id"]):
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ProxModel(),
            artifacts={"bundle": bundle_dir},
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            registered_model_name=name,
        )
        version = str(model_info.registered_model_version)
        mlflow.set_tag("prox.registered_version", version)
    mc = client(settings.tracking_uri)
    for key, value in {
        "prox.run_id": trained["run_id"],
        "prox.training_set_digest": info["digest"],
        "prox.winner": trained["winner"],
        "prox.source": info["source"],
    }.items():
        mc.set_model_version_tag(name, version, key, value)
    set_challenger(
        mc,
        settings.data_dir,
        name,
        version,
        by=actor(airflow),
        run_id=trained["run_id"],
        numbers=evaluated.get("metrics", {}),
    )
    return {"version": version, "model_name": name, "run_id": trained["run_id"], "cold_start": False}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---- 6. gate ---------------------------------------------------------------------------------------------
def leakage_summary(settings: Settings, run_id: str | None) -> dict[str, Any] | None:
    """The leakage audit's summary recorded by a training run (None: not recorded, e.g. a
    version trained before the audit kept one)."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    from models.registry import client

    try:
        tags = client(settings.tracking_uri).get_run(run_id).data.tags
    except MlflowException:
        return None
    try:
        return json.loads(tags["prox.leakage_summary"])
    except (KeyError, ValueError):
        return None


def champion_metrics_on(
    settings: Settings, model_name: str, champion_version: str, split: Split
) -> dict[str, float]:
    """The champion's ROC AUC and ECE on the challenger's holdout (same rows, same labels)."""
    from models.evaluate import binary_metrics
    from models.score import _load_bundle

    bundle = _load_bundle(settings.tracking_uri, model_name, champion_version)
    p = bundle.predict(bundle.encoder.transform(split.test))
    return binary_metrics(labels(split.test), p)


def gate(
    settings: Settings,
    info: Mapping[str, Any],
    registered: Mapping[str, Any],
    evaluated: Mapping[str, Any],
    *,
    gate_config: GateConfig | None = None,
    config: TrainConfig | None = None,
    options: RunOptions | None = None,
    airflow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Promote the challenger to @champion, or refuse it; the decision is recorded either way."""
    if registered.get("cold_start"):
        return {"decision": "cold_start", "promoted": False, "version": None}
    import mlflow

    from models.registry import CHAMPION, actor, alias_version, apply_decision, client, decide

    gate_config = gate_config or GateConfig()
    config = config or TrainConfig()
    options = options or RunOptions()
    mc = client(settings.tracking_uri)
    name, version = registered["model_name"], registered["version"]
    current = alias_version(mc, name, CHAMPION)
    champion = None
    if current is not None and current != version:
        split = make_split(info, read_training_set(info), options, config.seed)
        champion = champion_metrics_on(settings, name, current, split)
    champion_run = mc.get_model_version(name, current).run_id if current is not None else None
    decision = decide(
        evaluated["metrics"],
        champion,
        gate_config,
        leakage=leakage_summary(settings, registered["run_id"]),
        champion_leakage=leakage_summary(settings, champion_run) if champion is not None else None,
    )
    record = apply_decision(
        mc,
        settings.data_dir,
        name,
        version,
        decision,
        by=actor(airflow),
        run_id=registered["run_id"],
        champion_version=current,
    )
    with _start_run(settings, info, registered["run_id"]):
        mlflow.set_tags(
            {
                "prox.gate.decision": "promoted" if decision.promoted else "refused",
                "prox.gate.rule": decision.rule,
                "prox.gate.message": decision.message,
                "prox.gate.exit_code": str(decision.exit_code),
            }
        )
        mlflow.log_dict(record, "gate/decision.json")
    return {
        "decision": "promoted" if decision.promoted else "refused",
        "promoted": decision.promoted,
        "rule": decision.rule,
        "message": decision.message,
        "version": version,
        "champion_before": current,
        "first_model": decision.first_model,
        "exit_code": decision.exit_code,
    }


# ---- all in a row (CLI, notebooks) -------------------------------------------------------------------------
def run_all(
    settings: Settings,
    info: Mapping[str, Any],
    *,
    config: TrainConfig | None = None,
    options: RunOptions | None = None,
    gate_config: GateConfig | None = None,
    airflow: Mapping[str, Any] | None = None,
    run_label: str = "cli",
    step: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Validate, train, evaluate, register and gate one training set (built beforehand).

    ``step(name)`` (optional) wraps each step, e.g. in a progress line of the CLI."""
    step = step or (lambda name: contextlib.nullcontext())
    with step("validate"):
        validation = validate_training_set(settings, info, run_id=f"{run_label}-{info['digest'][:12]}")
    with step("train"):
        trained = train(settings, info, validation, config=config, options=options, airflow=airflow)
    with step("evaluate"):
        evaluated = evaluate(settings, info, trained, config=config, options=options)
    with step("register"):
        registered = register(settings, info, trained, evaluated, airflow=airflow)
    with step("gate"):
        gated = gate(
            settings,
            info,
            registered,
            evaluated,
            gate_config=gate_config,
            config=config,
            options=options,
            airflow=airflow,
        )
    return {
        "validation": validation.get("decision"),
        "trained": trained,
        "evaluated": evaluated,
        "registered": registered,
        "gate": gated,
    }


# ---- registered versions (CLI) --------------------------------------------------------------------------
def version_context(
    settings: Settings, model_name: str, version: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(training-set info, registered, evaluated) of a registered version, from its run."""
    from mlflow.exceptions import MlflowException

    from models.registry import RegistryError, client

    mc = client(settings.tracking_uri)
    try:
        mv = mc.get_model_version(model_name, str(version))
    except MlflowException:
        raise RegistryError(f"{model_name}: no version {version!r} in the registry") from None
    run = mc.get_run(mv.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    horizon = tags.get("prox.horizon_days")
    info = {
        "path": tags["prox.training_set_path"],
        "split": tags.get("prox.split", "time"),
        "horizon_days": int(horizon) if horizon and horizon != "None" else None,
        "source": tags.get("prox.source"),
        "digest": tags.get("prox.training_set_digest"),
        "time_column": None if tags.get("prox.time_column") in (None, "None") else tags["prox.time_column"],
    }
    registered = {"model_name": model_name, "version": str(version), "run_id": mv.run_id, "cold_start": False}
    evaluated = {
        "metrics": {
            "roc_auc": metrics.get("test.roc_auc"),
            "ece": metrics.get("test.ece"),
            "largest_segment_gap": metrics.get("test.largest_segment_gap", 0.0),
        }
    }
    return info, registered, evaluated


def evaluate_version(
    settings: Settings,
    model_name: str,
    version: str,
    *,
    training_set: str | None = None,
    options: RunOptions | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """A registered version's figures on the newest holdout of a training set (its own by default)."""
    from models.evaluate import evaluate as run_evaluation
    from models.score import _load_bundle

    options = options or RunOptions()
    info, _, _ = version_context(settings, model_name, version)
    if training_set:
        info = {**info, "path": training_set}
    split = make_split(info, read_training_set(info), options, seed)
    bundle = _load_bundle(settings.tracking_uri, model_name, str(version))
    p = bundle.predict(bundle.encoder.transform(split.test))
    ev = run_evaluation(
        labels(split.test),
        p,
        split.test,
        min_rows=options.segment_min_rows,
        min_positives=options.segment_min_positives,
        segments=options.segments or None,
    )
    return {"model": model_name, "version": str(version), "training_set": info["path"], **ev.to_json()}
