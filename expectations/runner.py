"""The validation gate: run a dataset's Great Expectations suite and decide what may pass.

One call per dataset (the DAGs run one task each)::

    outcome = validate("raw_leads_salesforce", path, run_id=run_id, settings=settings,
                       previous_run_stats=prev, reference_time=data_interval_end)

What it decides, and why:

* **Critical table-level failures** (schema drift, wrong types, an empty extract, a volume
  anomaly, a degenerate score distribution) fail the run: nothing unvalidated may reach a
  model or a CRM.
* **Row-level critical failures** (a malformed email, negative revenue, a duplicate id, a
  conversion before creation) send only those rows to the lake's ``quarantine`` zone with
  the expectation and the offending value; the other rows continue to the ``clean`` zone.
  If the share of quarantined rows exceeds ``Settings.quarantine_threshold`` the run fails:
  so much bad data means the source is broken, not a few records.
* **Warnings** (and expectations with ``mostly`` < 1, which judge a share, not rows) are
  recorded and the run goes on.

Every result is kept as evidence: the GX validation result as JSON and rendered as GX Data
Docs HTML under ``<lake>/reports/validation/run_id=<run>/``, with raw PII values masked
and the full unexpected lists dropped (counts and examples stay). :mod:`expectations.evidence`
attaches them to the MLflow run that consumes the data.

Great Expectations is the one engine: it evaluates every expectation (schema, row and
aggregate checks) and its row-level results come back as ``unexpected_index_list`` (result
format COMPLETE), which is how the runner knows which rows to quarantine; there is no second
hand-written validator that could disagree with the evidence. That is affordable because
pandas 3 keeps text in Arrow-backed ``str`` columns, so GX's pandas metrics run on Arrow
kernels: ``benchmarks/bench_validation.py`` measured 10 M activities in 10-26 s (2.5-2.9x
the same checks as bare pyarrow.compute, whose bad-row count it matches exactly) and 1 M
leads in 3-6 s (6-11x; fixed costs dominate), with peak memory about twice the Arrow table. Memory, not time, is
the bound, so callers validate one lake partition (source x run date, or a lead-hash
partition) per task. GX's cost per expectation is fixed (about 20 ms: its metric graph), which
only shows on the wide features suite (about 200 generated checks, about 4 s on any size).

The gate, in the order it runs (this module only composes them):

* :mod:`expectations.suites`: load and expand the suite, compute its parameters.
* :mod:`expectations.inputs`: read the table (Arrow, DataFrame, Parquet, CSV).
* :mod:`expectations.gx_engine`: run the suite in an ephemeral GX context.
* :mod:`expectations.results`: read the GX result into checks and messages, mask PII.
* :mod:`expectations.quarantine`: the quarantine table of the rows that failed.
* :mod:`expectations.evidence_files`: write clean/quarantine partitions, JSON and Data Docs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from expectations.evidence_files import evidence_name, render_data_docs, report_dir, write_outputs
from expectations.gx_engine import run_gx, split_runnable, to_frame
from expectations.inputs import partition_from_path, read_input
from expectations.quarantine import quarantine_table
from expectations.results import Decision, ValidationOutcome, interpret, order_checks, scrub_gx_result
from expectations.suites import ValidationError, expand_suite, expectation_parameters, load_suite
from prox.settings import Settings

# What callers import from here (pipelines, the CLI); the parts live in the modules above.
__all__ = [
    "GateFailed",
    "ValidationError",
    "ValidationOutcome",
    "previous_stats",
    "report_dir",
    "run_gate",
    "validate",
]


def validate(
    dataset: str,
    table_or_path: pa.Table | Any | str | Path,
    *,
    run_id: str,
    settings: Settings,
    previous_run_stats: Mapping[str, Any] | None = None,
    reference_time: dt.datetime | None = None,
    source: str | None = None,
    run_date: dt.date | None = None,
    write: bool = True,
) -> ValidationOutcome:
    """Validate one dataset with its GX suite and apply the gate.

    ``reference_time`` is "now" for the checks (no future dates, freshness); DAG tasks pass
    their data interval end so a rerun gives the same answer; it defaults to the wall clock
    for interactive use. ``previous_run_stats`` is the previous run's ``outcome.stats`` (the
    volume check is skipped without it). ``source`` and ``run_date`` address the lake
    partitions written (inferred from a lake path, else the suite's source and the
    reference date). With ``write=False`` nothing is written (evidence stays in the outcome).
    """
    suite = load_suite(dataset)
    prox = suite["meta"].get("prox", {})
    table = read_input(table_or_path, dataset=dataset, contract=prox.get("contract"))
    reference = _utc(reference_time or dt.datetime.now(dt.UTC))
    path_source, path_date = partition_from_path(table_or_path)
    source = source or prox.get("source") or path_source or "all"
    run_date = run_date or path_date or reference.date()
    threshold = settings.quarantine_threshold

    expectations = expand_suite(suite)
    frame = to_frame(table)
    params = expectation_parameters(prox, reference, previous_run_stats)
    runnable, skipped = split_runnable(dataset, expectations, frame, prox, table.num_rows)
    gx_result = run_gx(dataset, runnable, frame, params)

    pii = set(prox.get("pii_columns", []))
    checks, bad_rows = interpret(dataset, gx_result, table, pii, params, prox, previous_run_stats)
    checks = order_checks(checks + skipped)

    key = prox.get("key")
    quarantine = quarantine_table(dataset, table, bad_rows, key, pii, run_id, reference)
    bad_mask = np.zeros(table.num_rows, dtype=bool)
    for idx in bad_rows.values():
        bad_mask[idx] = True
    quarantined = int(bad_mask.sum())
    bad_share = quarantined / table.num_rows if table.num_rows else 0.0

    messages = [c.message for c in checks if not c.success and not c.skipped and c.severity == "critical"]
    critical_table_level = any(
        not c.success and not c.skipped and c.severity == "critical" and not c.row_level for c in checks
    )
    if bad_share > threshold:
        messages.insert(
            0,
            f"{dataset}: {quarantined} of {table.num_rows} rows ({bad_share:.1%}) failed row-level checks, "
            f"above the quarantine threshold of {threshold:.1%}",
        )
    messages += [c.message for c in checks if not c.success and not c.skipped and c.severity != "critical"]
    if critical_table_level or bad_share > threshold:
        decision: Decision = "failed"
    elif quarantined or any(not c.success and not c.skipped for c in checks):
        decision = "warned"
    else:
        decision = "passed"

    clean = table.filter(pa.array(~bad_mask)) if decision != "failed" else None
    freshness_col = (prox.get("freshness") or {}).get("column")
    stats = {
        "rows": table.num_rows,
        "newest": _newest(table, freshness_col),
        "reference_time": reference.isoformat(),
        "decision": decision,
    }
    outcome = ValidationOutcome(
        dataset=dataset,
        run_id=run_id,
        decision=decision,
        name=evidence_name(dataset, source, prox.get("source")),
        source=source,
        run_date=run_date,
        rows=table.num_rows,
        clean_rows=clean.num_rows if clean is not None else 0,
        quarantined_rows=quarantined,
        bad_share=bad_share,
        threshold=threshold,
        reference_time=reference,
        checks=tuple(checks),
        messages=tuple(messages),
        stats=stats,
        clean=clean,
        quarantine=quarantine,
    )
    outcome.gx_result = scrub_gx_result(gx_result, pii)
    outcome.docs_html = render_data_docs(gx_result)  # rendered after scrubbing: no PII in HTML
    if write:
        write_outputs(outcome, settings, prox.get("contract"))
    return outcome


class GateFailed(RuntimeError):
    """A critical validation failure: the run must stop. ``outcome`` holds the evidence."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        super().__init__("; ".join(outcome.messages[:5]) or f"{outcome.name}: validation failed")
        self.outcome = outcome


def run_gate(
    dataset: str,
    table_or_path: pa.Table | str | Path,
    *,
    run_id: str,
    reference_time: dt.datetime,
    settings: Settings | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """What a DAG task calls: look up the previous run's stats, validate, return the summary.

    The summary is small and JSON-safe (an XCom); the clean rows and the quarantine are in
    the lake at the paths it names. Raises :class:`GateFailed` on a critical failure (the
    task should not be retried: wrap it in AirflowFailException).
    """
    settings = settings or Settings.from_env()
    suite_source = load_suite(dataset)["meta"].get("prox", {}).get("source")
    path_source, _ = partition_from_path(table_or_path)
    source = source or suite_source or path_source or "all"
    previous = previous_stats(settings, dataset, before=reference_time, source=source)
    outcome = validate(
        dataset,
        table_or_path,
        run_id=run_id,
        settings=settings,
        previous_run_stats=previous,
        reference_time=reference_time,
        source=source,
    )
    if outcome.failed:
        raise GateFailed(outcome)
    return outcome.summary()


def previous_stats(
    settings: Settings, dataset: str, *, before: dt.datetime, source: str = "all"
) -> dict[str, Any] | None:
    """Stats of the latest report of ``dataset`` (and ``source``) older than ``before``.

    What a DAG passes as ``previous_run_stats``; reruns and backfills see the run before them.
    """
    suite_source = load_suite(dataset)["meta"].get("prox", {}).get("source")
    name = evidence_name(dataset, source, suite_source)
    best: tuple[str, dict[str, Any]] | None = None
    limit = _utc(before).isoformat()
    for path in report_dir(settings, "any").parent.glob(f"run_id=*/{name}.json"):
        stats = json.loads(path.read_text()).get("stats") or {}
        ref = stats.get("reference_time") or ""
        if ref < limit and (best is None or ref > best[0]):
            best = (ref, stats)
    return best[1] if best else None


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValidationError(f"reference_time must be timezone-aware (UTC), got {moment!r}")
    return moment.astimezone(dt.UTC)


def _newest(table: pa.Table, column: str | None) -> str | None:
    if (
        not column
        or column not in table.column_names
        or not pa.types.is_timestamp(table.schema.field(column).type)
    ):
        return None
    value = pc.max(table.column(column)).as_py()
    return value.isoformat() if value is not None else None
