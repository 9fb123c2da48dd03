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

from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

CRMS = ["salesforce", "hubspot"]


def _context():
    """Settings and the run's identity (date, as-of time, id) inside a task."""
    from pipelines.nightly import RunContext
    from prox.settings import Settings

    ctx = get_current_context()
    moment = ctx.get("logical_date") or ctx["dag_run"].run_after
    return Settings.from_env(), RunContext.of(moment, ctx["run_id"]), ctx["params"]


def _halting(fn, *args, **kwargs):
    """Run a step; a deliberate stop (gate, drift) fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.nightly import PipelineHalted

    try:
        return fn(*args, **kwargs)
    except PipelineHalted as exc:
        raise AirflowFailException(str(exc)) from None


def _items(mapped) -> list:
    """The values of a mapped task's XComs; a failed or skipped map leaves None."""
    if mapped is None:
        return []
    return [mapped[i] for i in range(len(mapped)) if mapped[i] is not None]


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
        return _halting(nightly.extract, settings, crm, run, full_refresh=bool(params["full_refresh"]))

    @task(multiple_outputs=False)
    def validate_raw(extracted):
        from pipelines import nightly

        settings, run, _ = _context()
        return _halting(nightly.validate_raw, settings, extracted, run)

    @task(multiple_outputs=False)
    def consolidate(validated):
        from pipelines import nightly

        settings, run, _ = _context()
        return _halting(nightly.consolidate, settings, run)

    @task
    def plan_buckets(consolidated) -> list[int]:
        from pipelines.nightly import bucket_list

        settings, _, _ = _context()
        return bucket_list(settings.score_buckets)

    @task(multiple_outputs=False)
    def build_features(bucket: int):
        from pipelines import nightly

        settings, run, _ = _context()
        return _halting(nightly.build_features, settings, run, bucket, settings.score_buckets)

    @task(multiple_outputs=False)
    def validate_features(built):
        from pipelines import nightly

        settings, run, _ = _context()
        return _halting(nightly.validate_features, settings, run, built)

    @task(multiple_outputs=False)
    def score(built):
        from pipelines import nightly

        settings, run, _ = _context()
        return _halting(nightly.score, settings, run, built["bucket"], settings.score_buckets)

    @task(multiple_outputs=False)
    def validate_scores(scored):
        from pipelines import nightly

        settings, run, _ = _context()
        return _halting(nightly.validate_scores, settings, run, settings.score_buckets)

    @task(multiple_outputs=False)
    def push(crm: str, gate):
        from pipelines import nightly

        settings, run, params = _context()
        return _halting(nightly.push, settings, crm, run, full=bool(params["full_push"]))

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
            "extract": _items(extracted),
            "validate": _items(validated),
            "features": _items(checked),
            "score": _items(scored),
            "scores_gate": gate or {},
            "push": _items(pushed),
        }
        report = nightly.write_report(settings, run, parts)
        if report.get("halted"):  # the report is written; the run itself must show as failed
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"run halted: {report['halted']}")
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
