"""The nightly scoring job, step by step: the functions the ``prox_nightly`` DAG wires.

Each step reads fixed lake partitions keyed by the run date, writes its own partitions
atomically and returns a small JSON-safe dict (an XCom), so any step can be retried alone and
a rerun of a date rewrites the same files. The CRM push is exactly-once in effect through the
connectors' push ledger, so a rerun pushes nothing new.

    extract(crm) -> validate_raw(crm) -> consolidate -> features(bucket) -> score(bucket)
        -> validate_scores (GX + drift) -> push(crm) -> report

Work that grows with leads (features, scoring) is partitioned by a stable hash of lead_id
(:mod:`features.partition`), one mapped task per bucket.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from features.contract import LEAD_STATUS_HISTORY, conform
from features.lake import Lake, Partition, latest_per_key
from pipelines.common import (
    ALL,
    PipelineHalted,
    RunContext,
    nightly_report_dir,
    open_connector,
    write_report_json,
)
from pipelines.scoring import activities_for, score_rows
from prox.settings import Settings

#: Clean partitions of incremental extracts carry this suffix on their source label, so
#: validation compares an increment's volume with earlier increments, not with full loads.
INCREMENT_SUFFIX = ".increment"


def _lake(settings: Settings) -> Lake:
    return Lake(settings.lake_dir)


# ---- extract and validate ------------------------------------------------------------------
def extract(settings: Settings, crm: str, ctx: RunContext, *, full_refresh: bool = False) -> dict[str, Any]:
    """Pull one CRM's leads and activities (and, for Salesforce orgs, web-tracking files)."""
    connectors = open_connector(settings, crm, "extract", with_web_tracking=True)
    results = list(connectors[crm].extract(_lake(settings), ctx.run_date, full_refresh=full_refresh))
    if crm == "salesforce" and "file" in connectors:
        results += connectors["file"].extract(_lake(settings), ctx.run_date, full_refresh=full_refresh)
    out = {
        "crm": crm,
        "api_calls": 0,
        "tables": [],
        "extracted_at": _extraction_time(settings, crm, ctx).isoformat(),
    }
    for r in results:
        out["api_calls"] += r.api_calls
        out["tables"].append({"source": r.source, "table": r.table, "rows": r.rows, "path": r.path})
    return out


def _extraction_time(settings: Settings, crm: str, ctx: RunContext) -> dt.datetime:
    """When this run date's data was first pulled from ``crm`` (kept, so retries agree).

    Validation judges "dates in the future" against it: a CRM record legitimately changes
    between the run's as-of midnight and the extraction (our own push touches it too).
    """
    path = (
        settings.lake_dir
        / "state"
        / "nightly"
        / f"run_date={ctx.run_date.isoformat()}"
        / f"extracted_at-{crm}.txt"
    )
    if path.is_file():
        return dt.datetime.fromisoformat(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    moment = max(dt.datetime.now(dt.UTC), ctx.as_of)
    path.write_text(moment.isoformat())
    return moment


def validate_raw(settings: Settings, extracted: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Run the GX gates of one CRM's raw partitions; clean rows and quarantine go to the lake."""
    from expectations.runner import run_gate

    lake = _lake(settings)
    summaries = []
    for t in extracted["tables"]:
        if t["table"] == "raw_leads":
            dataset = f"raw_leads_{t['source']}"
        elif t["table"] == "activities":
            dataset = "raw_activities"
        else:
            continue
        # Increments are judged against increments (volume), full loads against full loads;
        # an empty increment only means nothing changed since the last extract.
        incremental = any(
            p.run_date < ctx.run_date for p in lake.partitions("raw", t["table"], sources=[t["source"]])
        )
        if incremental and t["rows"] == 0:
            summaries.append(
                {
                    "dataset": dataset,
                    "source": t["source"],
                    "decision": "passed",
                    "rows": 0,
                    "message": "no changes since the last extract",
                }
            )
            continue
        summary = run_gate(
            dataset,
            t["path"],
            run_id=ctx.run_id,
            reference_time=dt.datetime.fromisoformat(extracted["extracted_at"]),
            settings=settings,
            source=f"{t['source']}{INCREMENT_SUFFIX if incremental else ''}",
        )
        summaries.append(_small(summary))
    return {"crm": extracted["crm"], "gates": summaries}


def _small(summary: Mapping[str, Any]) -> dict[str, Any]:
    keep = (
        "dataset",
        "source",
        "decision",
        "rows",
        "passed_rows",
        "quarantined_rows",
        "clean_path",
        "quarantine_path",
        "report_path",
        "docs_path",
        "warnings",
        "message",
    )
    return {k: summary[k] for k in keep if k in summary}


# ---- consolidate ------------------------------------------------------------------------------
def consolidate(settings: Settings, ctx: RunContext) -> dict[str, Any]:
    """Current canonical leads (pseudonymised), their status history, all activities.

    Leads: the latest clean row of each lead over every extract so far. Status history: each
    extract records a lead's status as of its ``updated_at``, so the history grows night by
    night (slowly changing, type 2). Nothing here reads the clock.
    """
    from features.privacy import load_hash_key, pseudonymise_leads

    lake = _lake(settings)
    raw = lake.read_all("clean", "raw_leads")
    if raw is None or raw.num_rows == 0:
        raise PipelineHalted(
            "consolidate: no clean raw_leads in the lake; did extraction and validation run?"
        )
    raw = raw.filter(
        pc.less(raw.column("created_at"), pa.scalar(ctx.as_of, raw.schema.field("created_at").type))
    )
    latest = latest_per_key(raw, "lead_id", "updated_at")
    leads = pseudonymise_leads(latest, load_hash_key(settings.secrets_dir))
    history = _status_history_from(raw)
    previous = [
        p for p in lake.partitions("clean", "lead_status_history", sources=[ALL]) if p.run_date < ctx.run_date
    ]
    if previous:
        history = pa.concat_tables([lake.read(previous[-1]), history])
    history = _dedupe_history(history)
    lake.write(leads, Partition("clean", "leads", ALL, ctx.run_date))
    lake.write(history, Partition("clean", "lead_status_history", ALL, ctx.run_date))
    counts = pc.value_counts(leads.column("source")).to_pylist()
    return {
        "leads": leads.num_rows,
        "by_crm": {c["values"]: c["counts"] for c in counts},
        "status_history_rows": history.num_rows,
    }


def _status_history_from(raw: pa.Table) -> pa.Table:
    table = pa.table(
        {
            "lead_id": raw.column("lead_id"),
            "source": raw.column("source"),
            "changed_at": raw.column("updated_at"),
            "status": raw.column("status"),
        }
    )
    return conform(table.filter(pc.is_valid(table.column("status"))), LEAD_STATUS_HISTORY)


def _dedupe_history(history: pa.Table) -> pa.Table:
    """Each (lead, time, status) once, in lead and time order."""
    history = conform(history, LEAD_STATUS_HISTORY)
    distinct = history.group_by(LEAD_STATUS_HISTORY.names, use_threads=False).aggregate([])
    order = pc.sort_indices(
        distinct, sort_keys=[("lead_id", "ascending"), ("changed_at", "ascending"), ("status", "ascending")]
    )
    return conform(distinct.take(order), LEAD_STATUS_HISTORY)


# ---- features and scores per bucket ---------------------------------------------------------
def _bucket_label(bucket: int, n_buckets: int) -> str:
    return f"bucket-{bucket:03d}-of-{n_buckets:03d}"


def build_features(settings: Settings, ctx: RunContext, bucket: int, n_buckets: int) -> dict[str, Any]:
    """Features at the run's as-of time for the leads of one hash bucket."""
    from features.build import build_features as build
    from features.build import partition_key
    from features.partition import bucket_of

    lake = _lake(settings)
    leads = lake.read(Partition("clean", "leads", ALL, ctx.run_date))
    history = lake.read(Partition("clean", "lead_status_history", ALL, ctx.run_date))
    # bucket by account (company domain, else lead_id): account features compare a lead with the
    # other leads of its account, so an account must never be split across buckets
    leads = leads.filter(pa.array(bucket_of(partition_key(leads), n_buckets) == bucket))
    members = leads.column("lead_id").combine_chunks()
    history = history.filter(pc.is_in(history.column("lead_id"), value_set=members))
    activities = activities_for(lake, members, ctx)
    features, report = build(leads, activities, history, ctx.as_of)
    label = _bucket_label(bucket, n_buckets)
    path = lake.write(features, Partition("features", "features", label, ctx.run_date), table_name="")
    return {
        "bucket": bucket,
        "rows": features.num_rows,
        "path": str(path),
        "quality": report.as_dict() if hasattr(report, "as_dict") else {},
    }


def validate_features(settings: Settings, ctx: RunContext, built: Mapping[str, Any]) -> dict[str, Any]:
    """GX gate on one bucket's feature rows (schema, nulls, ranges, categories, point in time):
    a broken feature build stops here, before anything is scored or pushed."""
    from expectations.runner import GateFailed, run_gate

    label = _bucket_label(int(built["bucket"]), settings.score_buckets)
    try:
        gate = run_gate(
            "features",
            built["path"],
            run_id=ctx.run_id,
            reference_time=ctx.as_of,
            settings=settings,
            source=label,
        )
    except GateFailed as exc:
        raise PipelineHalted(f"features of {label} failed validation: {exc}") from None
    return {**built, "gate": _small(gate)}


def score(
    settings: Settings, ctx: RunContext, bucket: int, n_buckets: int, *, consent_policy: str | None = None
) -> dict[str, Any]:
    """Score the open, consenting leads of one bucket with @champion; reasons in plain words.

    Leads without processing consent or opted out are neither scored nor pushed
    (``consent_policy`` "opt_in": both required, the GDPR reading; "opt_out": only opt-outs
    are excluded, the CCPA reading).

    Exact reasons (TreeSHAP) are the expensive part, so they are computed only for leads whose
    score or tier differs from the last values pushed to their CRM, which are exactly the
    leads that get pushed; every other lead keeps the reasons it was pushed with, copied from
    the previous run's scores. Nothing shown is approximated.
    """
    lake = _lake(settings)
    label = _bucket_label(bucket, n_buckets)
    features = lake.read(Partition("features", "features", label, ctx.run_date))
    leads = lake.read(
        Partition("clean", "leads", ALL, ctx.run_date),
        columns=["lead_id", "source", "consent_processing", "opted_out"],
    )
    table, counts = score_rows(settings, lake, ctx, features, leads, consent_policy=consent_policy)
    path = lake.write(table, Partition("scores", "scores", label, ctx.run_date))
    return {"bucket": bucket, **counts, "path": str(path)}


# ---- validate scores and drift ----------------------------------------------------------------
def validate_scores(settings: Settings, ctx: RunContext, n_buckets: int) -> dict[str, Any]:
    """GX gate on tonight's scores and PSI of score and features against the training data.

    Above the drift stop limit nothing is pushed: the run halts with the columns that moved.
    """
    from expectations.runner import GateFailed, run_gate
    from models.drift import population_stability

    lake = _lake(settings)
    scores = _scores_of(lake, ctx.run_date, n_buckets)
    merged = lake.write(scores, Partition("scores", "scores", ALL, ctx.run_date))
    try:
        gate = _small(
            run_gate(
                "scores", merged, run_id=ctx.run_id, reference_time=ctx.as_of, settings=settings, source=ALL
            )
        )
    except GateFailed as exc:
        raise PipelineHalted(f"scores failed validation: {exc}") from None
    reference = _training_profile(settings, scores)
    drift: dict[str, Any] = {"compared": False}
    if reference:
        features = _features_of(lake, ctx.run_date, n_buckets, scores.column("lead_id"))
        verdict = population_stability(
            reference,
            _with_probability(features, scores),
            warn_at=settings.drift_warn_psi,
            stop_at=settings.drift_stop_psi,
        )
        drift = {
            "compared": True,
            "psi": {k: round(v, 4) for k, v in verdict.psi.items()},
            "warnings": sorted(verdict.warnings),
            "breaches": sorted(verdict.breaches),
            "verdict": verdict.explain(),
            "stop": verdict.stop,
        }
        _write_json(lake, ctx, "drift", drift)
        if verdict.stop:
            raise PipelineHalted(f"push stopped: {verdict.explain()}")
    _write_json(lake, ctx, "scores_gate", {"gate": gate, "drift": drift, "path": str(merged)})
    return {"rows": scores.num_rows, "gate": gate, "drift": drift, "path": str(merged)}


def _scores_of(lake: Lake, run_date: dt.date, n_buckets: int) -> pa.Table:
    parts = [Partition("scores", "scores", _bucket_label(b, n_buckets), run_date) for b in range(n_buckets)]
    return pa.concat_tables([lake.read(p) for p in parts])


def _features_of(lake: Lake, run_date: dt.date, n_buckets: int, lead_ids: pa.ChunkedArray) -> pa.Table:
    parts = [
        Partition("features", "features", _bucket_label(b, n_buckets), run_date) for b in range(n_buckets)
    ]
    table = pa.concat_tables([lake.read(p) for p in parts])
    return table.filter(pc.is_in(table.column("lead_id"), value_set=lead_ids.combine_chunks()))


def _with_probability(features: pa.Table, scores: pa.Table) -> pa.Table:
    joined = features.join(scores.select(["lead_id", "probability"]), "lead_id")
    return joined


def _training_profile(settings: Settings, scores: pa.Table) -> dict[str, Any] | None:
    """The drift reference logged with the scoring model (None for the cold-start rules)."""
    if scores.num_rows == 0:
        return None
    version = scores.column("model_version")[0].as_py()
    try:
        from models.score import load_scorer

        scorer = load_scorer(settings.tracking_uri, settings.model_name)
    except Exception:
        return None
    bundle = scorer.bundle
    if bundle is None or str(scorer.model_version) != str(version):
        return None
    return bundle.meta.get("drift_profile") or None


def _write_json(lake: Lake, ctx: RunContext, name: str, payload: Mapping[str, Any]) -> Path:
    return write_report_json(lake.report_dir("nightly", run_date=ctx.run_date), name, payload)


# ---- push, history, report --------------------------------------------------------------------
def push(settings: Settings, crm: str, ctx: RunContext, *, full: bool = False) -> dict[str, Any]:
    """Push tonight's validated scores of one CRM's leads: only what changed since the last push."""
    lake = _lake(settings)
    gate_file = nightly_report_dir(settings, ctx.run_date) / "scores_gate.json"
    if not gate_file.is_file():
        raise PipelineHalted(f"push {crm}: tonight's scores have not passed validation")
    scores = lake.read(Partition("scores", "scores", ALL, ctx.run_date))
    mine = scores.filter(pc.starts_with(scores.column("lead_id"), f"{crm}:"))
    connectors = open_connector(settings, crm, "push")
    report = connectors[crm].push(mine, full=full, run_id=f"{ctx.run_id}:{crm}")
    out = report.as_dict()
    out.pop("rejections", None)
    out["rejected_examples"] = dict(list(report.rejections.items())[:5])
    return out


def append_history(settings: Settings, ctx: RunContext) -> dict[str, Any]:
    """Append tonight's scores to the append-only score history (one partition per run date)."""
    lake = _lake(settings)
    scores = lake.read(Partition("scores", "scores", ALL, ctx.run_date))
    path = lake.write(scores, Partition("scores", "score_history", ALL, ctx.run_date))
    return {"rows": scores.num_rows, "path": str(path)}


def write_report(settings: Settings, ctx: RunContext, parts: Mapping[str, Any]) -> dict[str, Any]:
    """The run report: counts per CRM, tiers and their change, drift, API calls, evidence.

    Stored with the run in the lake and logged to MLflow as a scoring run tagged with the
    model version.
    """
    lake = _lake(settings)
    extracted = parts.get("extract", [])
    validated = parts.get("validate", [])
    scored = parts.get("score", [])
    pushed = parts.get("push", [])
    tiers: dict[str, int] = {}
    for s in scored:
        for tier, count in s["tiers"].items():
            tiers[tier] = tiers.get(tier, 0) + count
    previous = _previous_report(lake, ctx.run_date)
    per_crm: dict[str, dict[str, Any]] = {}
    for e in extracted:
        per_crm.setdefault(e["crm"], {})["extracted"] = {
            t["table"] + ":" + t["source"]: t["rows"] for t in e["tables"]
        }
        per_crm[e["crm"]]["api_calls_extract"] = e["api_calls"]
    for v in validated:
        per_crm.setdefault(v["crm"], {})["validated"] = sum(g.get("passed_rows", 0) for g in v["gates"])
        per_crm[v["crm"]]["quarantined"] = sum(g.get("quarantined_rows", 0) for g in v["gates"])
    for p in pushed:
        c = per_crm.setdefault(p["crm"], {})
        c.update(
            pushed=p.get("pushed", 0),
            resent_after_interruption=p.get("resent", 0),
            rejected=p.get("rejected", 0),
            skipped_unchanged=p.get("skipped", 0),
            api_calls_push=p.get("api_calls", 0),
            push_stopped=p.get("stopped"),
        )
    versions = sorted({s["model_version"] for s in scored})
    report = {
        "run_id": ctx.run_id,
        "run_date": ctx.run_date.isoformat(),
        "as_of": ctx.as_of.isoformat(),
        "model_name": settings.model_name,
        "model_version": versions[0] if len(versions) == 1 else versions,
        "cold_start": any(s.get("cold_start") for s in scored),
        "scored": sum(s["scored"] for s in scored),
        "withheld_for_consent": sum(s["withheld_consent"] for s in scored),
        "closed_not_scored": sum(s["closed"] for s in scored),
        "tiers": dict(sorted(tiers.items())),
        "tier_change": {
            t: tiers.get(t, 0) - previous.get("tiers", {}).get(t, 0) for t in ("A", "B", "C", "D")
        }
        if previous
        else None,
        "per_crm": per_crm,
        "features_validated": {
            f"bucket-{f['bucket']}": (f.get("gate") or {}).get("decision") for f in parts.get("features", [])
        },
        "drift": parts.get("scores_gate", {}).get("drift"),
        "validation_reports": str(lake.report_dir("validation", run_id=ctx.run_id)),
        "api_calls": sum(
            c.get("api_calls_extract", 0) + c.get("api_calls_push", 0) for c in per_crm.values()
        ),
    }
    report["halted"] = _halt_reason(lake, ctx, parts, per_crm)
    path = _write_json(lake, ctx, "report", report)
    report["report_path"] = str(path)
    report["mlflow_run_id"] = _log_scoring_run(settings, report, path)
    _write_json(lake, ctx, "report", report)
    return report


def _halt_reason(
    lake: Lake, ctx: RunContext, parts: Mapping[str, Any], per_crm: Mapping[str, Any]
) -> str | None:
    """Why this run did not push everything it should have (None when it did)."""
    drift_file = lake.report_dir("nightly", run_date=ctx.run_date) / "drift.json"
    if not parts.get("scores_gate"):
        if drift_file.is_file():
            drift = json.loads(drift_file.read_text())
            if drift.get("stop"):
                return f"push stopped: {drift['verdict']}"
        return "an upstream step failed before the scores passed validation (see the failed task's log)"
    from plugins.crm import CRMS

    missing = [crm for crm in CRMS if crm not in {p["crm"] for p in parts.get("push", [])}]
    if missing:
        return f"push did not finish for {', '.join(missing)}; the next run retries it"
    stopped = {crm: c["push_stopped"] for crm, c in per_crm.items() if c.get("push_stopped")}
    if stopped:
        return "; ".join(f"{crm}: {why}" for crm, why in stopped.items())
    return None


def _previous_report(lake: Lake, run_date: dt.date) -> dict[str, Any]:
    here = lake.report_dir("nightly", run_date=run_date)
    earlier = sorted(p for p in here.parent.glob("run_date=*/report.json") if p.parent.name < here.name)
    return json.loads(earlier[-1].read_text()) if earlier else {}


def _log_scoring_run(settings: Settings, report: Mapping[str, Any], path: Path) -> str | None:
    import mlflow

    from models.registry import use_experiment

    use_experiment(settings.tracking_uri, "prox-nightly-scoring")
    # one MLflow run per nightly run id: a retried report task updates it, never duplicates it
    existing = mlflow.search_runs(
        filter_string=f"tags.prox_run_id = '{report['run_id']}'", output_format="list"
    )
    kwargs = (
        {"run_id": existing[0].info.run_id} if existing else {"run_name": f"nightly-{report['run_date']}"}
    )
    with mlflow.start_run(**kwargs) as run:
        mlflow.set_tags(
            {
                "prox_run_id": report["run_id"],
                "prox.kind": "scoring",
                "model_name": report["model_name"],
                "model_version": str(report["model_version"]),
                "run_date": report["run_date"],
            }
        )
        mlflow.log_metrics(
            {
                "scored": report["scored"],
                "withheld_for_consent": report["withheld_for_consent"],
                "api_calls": report["api_calls"],
                **{f"tier_{t}": c for t, c in report["tiers"].items()},
            }
        )
        mlflow.log_artifact(str(path), artifact_path="report")
        return run.info.run_id


def bucket_list(n_buckets: int) -> list[int]:
    return list(range(n_buckets))


def summarise(report: Mapping[str, Any], top: Sequence[Mapping[str, Any]] = ()) -> str:
    """A few lines for people: what was scored and pushed, where to look."""
    lines = [
        f"Nightly run {report['run_date']} (model {report['model_name']} v{report['model_version']}"
        f"{', cold start rules' if report.get('cold_start') else ''}): {report['scored']:,} leads scored, "
        f"{report['withheld_for_consent']:,} withheld for consent",
        "Tiers: " + ", ".join(f"{t} {c:,}" for t, c in report["tiers"].items()),
    ]
    for crm, c in report["per_crm"].items():
        lines.append(
            f"{crm}: pushed {c.get('pushed', 0):,}, unchanged {c.get('skipped_unchanged', 0):,}, "
            f"rejected {c.get('rejected', 0):,}, quarantined {c.get('quarantined', 0):,}, "
            f"API calls {c.get('api_calls_extract', 0) + c.get('api_calls_push', 0):,}"
        )
    for row in top:
        lines.append(
            f"  {row['lead_id']}  score {row['score']} tier {row['tier']}: {'; '.join(row['reasons'])}"
        )
    return "\n".join(lines)
