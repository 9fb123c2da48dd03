"""
### ProX nightly scoring

Scores every open, consenting lead and pushes what changed back to the CRMs.

extract (each CRM, incremental) -> validate raw (GX, quarantine) -> consolidate ->
features at the run date (one task per lead-hash bucket) -> validate features (GX) ->
score with @champion ->
validate scores (GX + drift vs training) -> push changes to each CRM -> score history -> report.

Every task is idempotent: a rerun of a date rewrites the same partitions and the push ledger
makes it push nothing new. A gate that stops the run (validation, drift over the limit)
fails its task without retries and the report says why. Logic lives in `pipelines.nightly`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TriggerRule, dag, task

from pipelines.tasks import fail_run, halting, mapped_items, task_context
from plugins.crm import CRMS


def _context():
    """Settings, the run's identity (date, as-of time, id) and the params inside a task."""
    from pipelines.common import RunContext

    settings, moment, params = task_context()
    return settings, RunContext.of(moment, params["run_id"]), params


@dag(
    dag_id="prox_nightly",
    schedule="0 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["prox", "scoring"],
    doc_md=__doc__,
    default_args={"owner": "prox", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    params={
        "full_refresh": Param(False, type="boolean", description="extract everything, not just changes"),
        "full_push": Param(False, type="boolean", description="push every score, not just changes"),
    },
)
def prox_nightly():
    @task(multiple_outputs=False)
    def extract(crm: str):
        from pipelines import nightly

        settings, run, params = _context()
        return halting(nightly.extract, settings, crm, run, full_refresh=bool(params["full_refresh"]))

    @task(multiple_outputs=False)
    def validate_raw(extracted):
        from pipelines import nightly

        settings, run, _ = _context()
        return halting(nightly.validate_raw, settings, extracted, run)

    @task(multiple_outputs=False)
    def consolidate(validated):
        from pipelines import nightly

        settings, run, _ = _context()
        return halting(nightly.consolidate, settings, run)

    @task
    def plan_buckets(consolidated) -> list[int]:
        from pipelines.nightly import bucket_list

        settings, _, _ = _context()
        return bucket_list(settings.score_buckets)

    @task(multiple_outputs=False)
    def build_features(bucket: int):
        from pipelines import nightly

        settings, run, _ = _context()
        return halting(nightly.build_features, settings, run, bucket, settings.score_buckets)

    @task(multiple_outputs=False)
    def validate_features(built):
        from pipelines import nightly

        settings, run, _ = _context()
        return halting(nightly.validate_features, settings, run, built)

    @task(multiple_outputs=False)
    def score(built):
        from pipelines import nightly

        settings, run, _ = _context()
        return halting(nightly.score, settings, run, built["bucket"], settings.score_buckets)

    @task(multiple_outputs=False)
    def validate_scores(scored):
        from pipelines import nightly

        settings, run, _ = _context()
        return halting(nightly.validate_scores, settings, run, settings.score_buckets)

    @task(multiple_outputs=False)
    def push(crm: str, gate):
        from pipelines import nightly

        settings, run, params = _context()
        return halting(nightly.push, settings, crm, run, full=bool(params["full_push"]))

    @task(multiple_outputs=False)
    def append_history(pushed):
        from pipelines import nightly

        settings, run, _ = _context()
        return nightly.append_history(settings, run)

    @task(multiple_outputs=False, trigger_rule=TriggerRule.ALL_DONE)
    def report(extracted, validated, checked, scored, gate, pushed, history):
        from pipelines import nightly

        settings, run, _ = _context()
        parts = {
            "extract": mapped_items(extracted),
            "validate": mapped_items(validated),
            "features": mapped_items(checked),
            "score": mapped_items(scored),
            "scores_gate": gate or {},
            "push": mapped_items(pushed),
        }
        report = nightly.write_report(settings, run, parts)
        if report.get("halted"):  # the report is written; the run itself must show as failed
            fail_run(f"run halted: {report['halted']}")
        return report

    extracted = extract.expand(crm=CRMS)
    validated = validate_raw.expand(extracted=extracted)
    consolidated = consolidate(validated)
    built = build_features.expand(bucket=plan_buckets(consolidated))
    checked = validate_features.expand(built=built)
    scored = score.expand(built=checked)
    gate = validate_scores(scored)
    pushed = push.partial(gate=gate).expand(crm=CRMS)
    history = append_history(pushed)
    report(extracted, validated, checked, scored, gate, pushed, history)


prox_nightly()
