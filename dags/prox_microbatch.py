"""
### ProX micro-batch re-scoring (every 15 minutes)

For CRMs that cannot call the hot path's webhooks: re-scores the leads with engagement since
the last run and pushes the ones whose score or tier changed.

extract engagement (each CRM, incremental, its own watermarks) -> re-score the engaged leads
as of the run's time (batch feature code, @champion, exact reasons) -> push changes -> report.

Pushes go through the same push ledger as the nightly job, so neither job re-sends what the
other already sent, and a rerun of an interval pushes nothing new. Logic lives in `pipelines.microbatch`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import TriggerRule, dag, task

from pipelines.tasks import fail_run, halting, mapped_items, task_context
from plugins.crm import CRMS


def _context():
    """Settings and the interval's identity inside a task."""
    from pipelines.microbatch import Interval

    settings, moment, params = task_context()
    return settings, Interval.of(moment, params["run_id"])


@dag(
    dag_id="prox_microbatch",
    schedule="*/15 * * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=14),
    tags=["prox", "scoring", "hot-path"],
    doc_md=__doc__,
    default_args={"owner": "prox", "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
)
def prox_microbatch():
    @task(multiple_outputs=False)
    def extract(crm: str):
        from pipelines import microbatch

        settings, run = _context()
        return halting(microbatch.extract, settings, crm, run)

    @task(multiple_outputs=False)
    def rescore(extracted):
        from pipelines import microbatch

        settings, run = _context()
        return halting(microbatch.rescore, settings, run)

    @task(multiple_outputs=False)
    def push(crm: str, scored):
        from pipelines import microbatch

        settings, run = _context()
        return halting(microbatch.push, settings, crm, run)

    @task(multiple_outputs=False, trigger_rule=TriggerRule.ALL_DONE)
    def report(extracted, scored, pushed):
        from pipelines import microbatch

        settings, run = _context()
        parts = {
            "extract": [e for e in mapped_items(extracted) if e],
            "rescore": scored or {},
            "push": [p for p in mapped_items(pushed) if p],
        }
        report = microbatch.write_report(settings, run, parts)
        if not scored or len(parts["push"]) < len(CRMS):  # the report is written; the run must fail
            fail_run("micro-batch incomplete: an upstream task failed (see its log)")
        return report

    extracted = extract.expand(crm=CRMS)
    scored = rescore(extracted)
    pushed = push.partial(scored=scored).expand(crm=CRMS)
    report(extracted, scored, pushed)


prox_microbatch()
