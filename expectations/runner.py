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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from expectations.datasets import DATASETS, SUITES_DIR
from prox.settings import Settings

Decision = Literal["passed", "warned", "failed"]
#: Examples of offending values shown in a message or kept per check in the evidence.
EXAMPLES_IN_MESSAGE: Final = 3
PARTIAL_UNEXPECTED: Final = 20
#: Keys of a GX result too big (one entry per bad row) or too raw (PII) for the evidence.
_BULKY_RESULT_KEYS: Final = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")


class ValidationError(ValueError):
    """The validation itself cannot run: unknown dataset, unreadable input, broken suite."""


# ---- results ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    """One expectation's verdict, in words an operator can act on."""

    expectation: str  # GX type, e.g. expect_column_values_to_match_regex
    column: str | None  # column(s) it looks at, comma-joined for pairs
    severity: str  # critical | warning | info
    success: bool
    row_level: bool  # failing rows are quarantined (critical map expectation without `mostly`)
    guards: str  # what it protects, from the suite file
    unexpected_count: int | None = None
    observed: Any = None
    examples: tuple[str, ...] = ()
    message: str = ""  # empty when it passed
    skipped: str | None = None  # why it was not evaluated (missing or mistyped column)

    def to_json(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "severity": self.severity,
            "success": self.success,
            "row_level": self.row_level,
            "guards": self.guards,
            "unexpected_count": self.unexpected_count,
            "observed": _jsonable(self.observed),
            "examples": list(self.examples),
            "message": self.message,
            "skipped": self.skipped,
        }


@dataclass
class ValidationOutcome:
    """The gate's decision on one dataset, with the evidence and where things were written."""

    dataset: str
    run_id: str
    decision: Decision
    name: str  # evidence name: the dataset, plus "-<source>" when one suite serves several sources
    source: str
    run_date: dt.date
    rows: int
    clean_rows: int
    quarantined_rows: int
    bad_share: float
    threshold: float
    reference_time: dt.datetime
    checks: tuple[CheckResult, ...]
    messages: tuple[str, ...]  # every failure, critical first, then warnings
    stats: dict[str, Any]  # pass as previous_run_stats to the next run
    clean: pa.Table | None = field(default=None, repr=False)
    quarantine: pa.Table | None = field(default=None, repr=False)
    gx_result: dict[str, Any] = field(default_factory=dict, repr=False)  # scrubbed GX result JSON
    docs_html: str = field(default="", repr=False)  # GX Data Docs page of the scrubbed result
    report_path: Path | None = None
    docs_path: Path | None = None
    clean_path: Path | None = None
    quarantine_path: Path | None = None

    @property
    def failed(self) -> bool:
        return self.decision == "failed"

    @property
    def critical_failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.success and c.severity == "critical" and not c.skipped)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.success and c.severity != "critical" and not c.skipped)

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe dict (for XCom, the CLI and MLflow): decision, counts, paths."""
        return {
            "dataset": self.dataset,
            "name": self.name,
            "source": self.source,
            "run_date": self.run_date.isoformat(),
            "run_id": self.run_id,
            "decision": self.decision,
            "rows": self.rows,
            "clean_rows": self.clean_rows,
            "quarantined_rows": self.quarantined_rows,
            "bad_share": round(self.bad_share, 6),
            "threshold": self.threshold,
            "reference_time": self.reference_time.isoformat(),
            "messages": list(self.messages),
            "stats": self.stats,
            "report_path": _str_or_none(self.report_path),
            "docs_path": _str_or_none(self.docs_path),
            "clean_path": _str_or_none(self.clean_path),
            "quarantine_path": _str_or_none(self.quarantine_path),
        }

    def to_json(self) -> dict[str, Any]:
        """The full evidence: summary, every check in ProX words, and the GX result."""
        return {
            **self.summary(),
            "checks": [c.to_json() for c in self.checks],
            "great_expectations": self.gx_result,
        }


# ---- suites -----------------------------------------------------------------------------------
def load_suite(dataset: str) -> dict[str, Any]:
    """The suite file of ``dataset`` (GX ExpectationSuite JSON with ProX settings in meta.prox)."""
    if dataset not in DATASETS:
        raise ValidationError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    path = SUITES_DIR / f"{dataset}.json"
    try:
        suite = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{dataset}: cannot read suite {path}: {exc}") from None
    for i, exp in enumerate(suite.get("expectations", [])):
        if not (exp.get("meta") or {}).get("guards"):
            raise ValidationError(
                f"{dataset}: expectation #{i} ({exp.get('type')}) has no meta.guards comment"
            )
    return suite


def expand_suite(suite: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The suite's expectations with generated per-column checks added (features suite).

    ``meta.prox.column_groups`` names a function returning column groups; each group's
    template in ``meta.prox.templates`` is instantiated for every column of the group.
    """
    prox = suite["meta"].get("prox", {})
    expectations = [json.loads(json.dumps(e)) for e in suite["expectations"]]
    groups_ref = prox.get("column_groups")
    if not groups_ref:
        return expectations
    module_name, _, func_name = groups_ref.partition(":")
    import importlib

    groups = getattr(importlib.import_module(module_name), func_name)()
    for exp in expectations:
        if exp["kwargs"].get("column_set") == "{required_columns}":
            exp["kwargs"]["column_set"] = list(groups.required)
    for group, templates in prox.get("templates", {}).items():
        members = getattr(groups, group)
        for column in members:
            for template in templates:
                exp = json.loads(json.dumps(template))
                exp["kwargs"] = {k: _fill(v, column, groups) for k, v in exp["kwargs"].items()}
                expectations.append(exp)
    return expectations


def _fill(value: Any, column: str, groups: Any) -> Any:
    if value == "{column}":
        return column
    if value == "{categories}":
        return list(groups.categories[column])
    return value


# ---- the gate ---------------------------------------------------------------------------------
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
    path_source, path_date = _partition_from_path(table_or_path)
    source = source or prox.get("source") or path_source or "all"
    run_date = run_date or path_date or reference.date()
    threshold = settings.quarantine_threshold

    expectations = expand_suite(suite)
    frame = to_frame(table)
    params = _parameters(prox, reference, previous_run_stats)
    runnable, skipped = _split_runnable(dataset, expectations, frame, prox, table.num_rows)
    gx_result = _run_gx(dataset, runnable, frame, params)

    pii = set(prox.get("pii_columns", []))
    checks, bad_rows = _interpret(dataset, gx_result, table, pii, params, prox, previous_run_stats)
    checks = _order(checks + skipped)

    key = prox.get("key")
    quarantine = _quarantine_table(dataset, table, bad_rows, key, pii, run_id, reference)
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
    outcome.gx_result = _scrub(gx_result, pii)
    outcome.docs_html = render_data_docs(gx_result)  # rendered after scrubbing: no PII in HTML
    if write:
        _write_outputs(outcome, settings, prox.get("contract"))
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
    path_source, _ = _partition_from_path(table_or_path)
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


# ---- input ------------------------------------------------------------------------------------
def read_input(table_or_path: Any, *, dataset: str, contract: str | None = None) -> pa.Table:
    """An Arrow table from a table, a DataFrame, a Parquet file/partition dir or a CSV file.

    Types are taken as they come (validation must see wrong types, not have them fixed);
    CSV text is cast to the contract's types where every value fits and left as text where
    not, so the type check can name the column.
    """
    if isinstance(table_or_path, pa.Table):
        return table_or_path
    if isinstance(table_or_path, str | Path):
        return _read_path(Path(table_or_path), dataset, contract)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(table_or_path, pd.DataFrame):
        return pa.Table.from_pandas(table_or_path, preserve_index=False)
    raise ValidationError(
        f"{dataset}: expected an Arrow table, a DataFrame or a path, got {type(table_or_path).__name__}"
    )


def _read_path(path: Path, dataset: str, contract: str | None) -> pa.Table:
    import pyarrow.parquet as pq

    if not path.exists():
        raise ValidationError(f"{dataset}: no such file or directory: {path}")
    try:
        if path.is_dir():
            manifest = path / "_manifest.json"
            if manifest.is_file():
                files = json.loads(manifest.read_text())["files"]
                return pa.concat_tables(pq.read_table(path / f, partitioning=None) for f in files)
            return pq.read_table(path, partitioning=None)
        if path.suffix.lower() in (".csv", ".txt"):
            return _read_csv(path, contract)
        return pq.read_table(path, partitioning=None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError(f"{dataset}: cannot read {path}: {exc}") from None


def _read_csv(path: Path, contract: str | None) -> pa.Table:
    import pyarrow.csv as pacsv

    from features.contract import schema_for

    header = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).column_names
    text = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
        ),
    )
    if not contract:
        return text
    schema = schema_for(contract)
    columns = []
    for name in text.column_names:
        column = text.column(name)
        if name in schema.names:
            target = schema.field(name).type
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = column.cast(target)  # else it stays text: the type expectation reports it
        columns.append(column)
    return pa.table(columns, names=text.column_names)


def to_frame(table: pa.Table) -> Any:
    """A pandas frame GX can check: nullable ints/bools so nulls do not turn them into floats."""
    import pandas as pd

    mapping = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.to_pandas(types_mapper=mapping.get, self_destruct=False)


def _partition_from_path(table_or_path: Any) -> tuple[str | None, dt.date | None]:
    if not isinstance(table_or_path, str | Path):
        return None, None
    text = str(table_or_path)
    source = re.search(r"source=([^/]+)", text)
    date = re.search(r"run_date=(\d{4}-\d{2}-\d{2})", text)
    return (source.group(1) if source else None, dt.date.fromisoformat(date.group(1)) if date else None)


# ---- running GX -------------------------------------------------------------------------------
def _parameters(
    prox: Mapping[str, Any], reference: dt.datetime, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    tolerance = dt.timedelta(minutes=float(prox.get("future_tolerance_minutes", 60)))
    freshness = prox.get("freshness") or {}
    volume = prox.get("volume") or {}
    params: dict[str, Any] = {
        "latest_allowed": reference + tolerance,
        "freshness_floor": reference
        - dt.timedelta(hours=float(freshness.get("max_age_hours", 24 * 365 * 100))),
        "min_rows": 0,
        "max_rows": None,
    }
    prev_rows = int((previous or {}).get("rows") or 0)
    if prev_rows > 0:
        # inclusive GX bounds: a drop to <= drop_ratio x previous or a spike to >= spike_ratio x fails
        params["min_rows"] = math.floor(prev_rows * float(volume.get("drop_ratio", 0.1))) + 1
        params["max_rows"] = math.ceil(prev_rows * float(volume.get("spike_ratio", 10.0))) - 1
    return params


def _columns_of(exp: Mapping[str, Any]) -> list[str]:
    kw = exp["kwargs"]
    if "column" in kw:
        return [kw["column"]]
    if "column_A" in kw:
        return [kw["column_A"], kw["column_B"]]
    if "column_list" in kw:
        return list(kw["column_list"])
    return []


def _type_matches(dtype: Any, expected: str) -> bool:
    """The comparison GX makes for pandas: ``dtype.type`` against the types ``expected`` names."""
    import pandas as pd
    from great_expectations.expectations.type_comparison import native_type_type_map

    candidates: list[type] = []
    try:
        candidates.append(np.dtype(expected).type)
    except TypeError:
        for namespace in (pd, pd.core.dtypes.dtypes):
            found = getattr(namespace, expected, None)
            if isinstance(found, type):
                candidates.append(found)
    candidates.extend(native_type_type_map(expected) or ())
    return dtype.type in candidates


def _split_runnable(
    dataset: str, expectations: list[dict[str, Any]], frame: Any, prox: Mapping[str, Any], rows: int
) -> tuple[list[dict[str, Any]], list[CheckResult]]:
    """Expectations GX can evaluate, and the rest as skipped checks saying why.

    A check on a missing or mistyped column would only raise inside GX; the schema checks
    already fail the run and name the column, so the others are listed as skipped.
    """
    present = set(frame.columns)
    declared = {
        e["kwargs"]["column"]: e["kwargs"]["type_"]
        for e in expectations
        if e["type"] == "expect_column_values_to_be_of_type"
    }
    mistyped = {c for c, t in declared.items() if c in present and not _type_matches(frame[c].dtype, t)}
    min_rows = int(prox.get("min_rows_for_distribution", 0))
    runnable, skipped = [], []
    for exp in expectations:
        cols = _columns_of(exp)
        reason = None
        if exp["type"] != "expect_column_values_to_be_of_type":
            missing = [c for c in cols if c not in present]
            wrong = [c for c in cols if c in mistyped]
            if missing:
                reason = f"column missing: {', '.join(missing)}"
            elif wrong:
                reason = f"column has the wrong type: {', '.join(wrong)}"
        elif cols[0] not in present:
            reason = f"column missing: {cols[0]}"
        if reason is None and (exp.get("meta") or {}).get("check") == "distribution" and rows < min_rows:
            reason = f"distribution checks need at least {min_rows} rows, got {rows}"
        if reason is None:
            runnable.append(exp)
        else:
            skipped.append(
                CheckResult(
                    expectation=exp["type"],
                    column=", ".join(cols) or None,
                    severity=exp.get("severity", "critical"),
                    success=True,
                    row_level=False,
                    guards=exp["meta"]["guards"],
                    skipped=reason,
                )
            )
    return runnable, skipped


def _run_gx(dataset: str, expectations: list[dict[str, Any]], frame: Any, params: Mapping[str, Any]) -> Any:
    """Evaluate the expectations with GX on the frame (ephemeral context, no progress bars)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    objects = []
    for i, exp in enumerate(expectations):
        try:
            objects.append(ExpectationConfiguration(**exp).to_domain_obj())
        except Exception as exc:  # GX raises several types for a bad configuration
            raise ValidationError(
                f"{dataset}: suite expectation #{i} ({exp.get('type')}) is invalid: {exc}"
            ) from None
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),  # we render docs
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch = (
        context.data_sources.add_pandas(f"prox_{dataset}")
        .add_dataframe_asset(dataset)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(ExpectationSuite(name=dataset, expectations=objects))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=dataset, data=batch, suite=suite)
    )
    with warnings.catch_warnings():
        # GX compares tz-aware columns through Series.values (UTC on both sides, so correct);
        # pandas 3.1 warns that this will change. Nothing for ProX to act on.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray that drops timezone")
        return definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=dict(params),
            result_format={
                "result_format": "COMPLETE",
                "partial_unexpected_count": PARTIAL_UNEXPECTED,
                "return_unexpected_index_query": False,
            },
        )


# ---- reading GX results -----------------------------------------------------------------------
def _interpret(
    dataset: str,
    result: Any,
    table: pa.Table,
    pii: set[str],
    params: Mapping[str, Any],
    prox: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
) -> tuple[list[CheckResult], dict[str, np.ndarray]]:
    """ProX checks from a GX result, and the failing row positions of each row-level check."""
    checks: list[CheckResult] = []
    bad_rows: dict[str, np.ndarray] = {}
    for r in result.results:
        cfg = r.expectation_config
        kw = dict(cfg.kwargs)
        kw.pop("batch_id", None)
        cols = _columns_of({"kwargs": kw})
        column = ", ".join(cols) or None
        severity = getattr(cfg.severity, "value", str(cfg.severity))
        meta = cfg.meta or {}
        res = r.result or {}
        error = _exception_message(r.exception_info)
        row_level = (
            "unexpected_index_list" in res and severity == "critical" and kw.get("mostly") in (None, 1, 1.0)
        )
        unexpected = res.get("unexpected_count")
        examples = _examples(res, cols, pii)
        success = bool(r.success) and error is None
        message = ""
        if error is not None:
            row_level = False
            message = f"{dataset}.{column or '*'}: {cfg.type} could not run: {error}"
        elif not success:
            message = _message(
                dataset, cfg.type, kw, column, res, examples, meta, params, previous, prox, table.num_rows
            )
        check = CheckResult(
            expectation=cfg.type,
            column=column,
            severity=severity,
            success=success,
            row_level=row_level,
            guards=meta.get("guards", ""),
            unexpected_count=unexpected,
            observed=res.get("observed_value"),
            examples=examples,
            message=message,
        )
        checks.append(check)
        if row_level and not success and res.get("unexpected_index_list"):
            label = _label(cfg.type, column)
            idx = np.asarray(res["unexpected_index_list"], dtype=np.int64)
            bad_rows[label] = np.union1d(bad_rows.get(label, np.empty(0, np.int64)), idx)
    return checks, bad_rows


def _label(expectation: str, column: str | None) -> str:
    return f"{expectation}({column})" if column else expectation


def _exception_message(info: Any) -> str | None:
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    if isinstance(info, Mapping):
        for value in info.values():
            if isinstance(value, Mapping) and value.get("exception_message"):
                return str(value["exception_message"]).splitlines()[0]
    return None


def _examples(res: Mapping[str, Any], cols: Sequence[str], pii: set[str]) -> tuple[str, ...]:
    values = res.get("partial_unexpected_list") or []
    seen: list[str] = []
    for value in values:
        text = _value_text(value, cols, pii)
        if text not in seen:
            seen.append(text)
        if len(seen) >= EXAMPLES_IN_MESSAGE:
            break
    return tuple(seen)


def _value_text(value: Any, cols: Sequence[str], pii: set[str]) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_value_text(v, [k], pii)}" for k, v in value.items())
    if isinstance(value, tuple | list) and len(cols) == len(value) > 1:
        return ", ".join(f"{c}={_value_text(v, [c], pii)}" for c, v in zip(cols, value, strict=True))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value)
    if cols and cols[0] in pii:
        return repr(mask_pii(text))
    return repr(text) if isinstance(value, str) else text


def mask_pii(text: str | None) -> str | None:
    """Keep the shape of a PII value (for fixing it), never the value: ``Jo.D@x.com`` -> ``Xx.X@x.com``.

    Letters become x/X, digits 9; punctuation, spaces and the email domain (already a
    non-PII column, ``email_domain``) stay, so "two @", "a space" or "no domain" remain visible.
    """
    if text is None:
        return None
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
    shaped = re.sub(r"[a-z]", "x", re.sub(r"[A-Z]", "X", re.sub(r"[0-9]", "9", local)))
    return f"{shaped}{at}{domain}"


def _message(
    dataset: str,
    kind: str,
    kw: Mapping[str, Any],
    column: str | None,
    res: Mapping[str, Any],
    examples: tuple[str, ...],
    meta: Mapping[str, Any],
    params: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    prox: Mapping[str, Any],
    rows: int,
) -> str:
    """A one-line message naming the dataset, the column and example values."""
    guards = meta.get("guards", "")
    check = meta.get("check")
    where = f"{dataset}.{column}" if column else dataset
    if kind == "expect_table_columns_to_match_set":
        mismatch = (res.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatch.get("missing"):
            parts.append("missing: " + ", ".join(sorted(mismatch["missing"])))
        if mismatch.get("unexpected"):
            parts.append("unexpected: " + ", ".join(sorted(mismatch["unexpected"])))
        return (
            f"{dataset}: columns do not match the contract; {'; '.join(parts) or res.get('observed_value')}"
        )
    if kind == "expect_column_values_to_be_of_type":
        return f"{where}: wrong type: expected {kw.get('type_')}, found {res.get('observed_value')}"
    if check == "volume":
        prev = int((previous or {}).get("rows") or 0)
        observed = int(res.get("observed_value") or 0)
        ratio = observed / prev if prev else float("inf")
        kind_text = "spike" if ratio > 1 else "drop"
        return (
            f"{dataset}: volume {kind_text}: {observed} rows vs {prev} in the previous run ({ratio:.2f}x); "
            f"allowed {params['min_rows']}-{params['max_rows']}"
        )
    if kind == "expect_table_row_count_to_be_between":
        observed = res.get("observed_value")
        if observed == 0:
            return f"{dataset}: empty extract (0 rows)"
        return f"{dataset}: row count {observed} outside [{kw.get('min_value')}, {kw.get('max_value')}]"
    if check == "freshness":
        hours = (prox.get("freshness") or {}).get("max_age_hours")
        newest = res.get("observed_value")
        newest_text = newest.isoformat() if hasattr(newest, "isoformat") else str(newest)
        return f"{where}: stale data: newest value {newest_text} is more than {hours} h before the reference time"
    if "unexpected_count" in res:
        count = int(res.get("unexpected_count") or 0)
        share = count / rows if rows else 0.0
        detail = {
            "expect_column_values_to_be_between": _range_text(kw),
            "expect_column_values_to_be_in_set": f"not in {list(kw.get('value_set') or [])}",
            "expect_column_values_to_not_be_in_set": f"in {list(kw.get('value_set') or [])}",
            "expect_column_values_to_match_regex": f"not matching {kw.get('regex')}",
            "expect_column_values_to_not_be_null": "null or NaN",
            "expect_column_values_to_be_unique": "duplicated",
            "expect_compound_columns_to_be_unique": "duplicated",
            "expect_column_pair_values_a_to_be_greater_than_b": (
                f"{kw.get('column_A')} before {kw.get('column_B')}"
                if kw.get("or_equal")
                else f"{kw.get('column_A')} not after {kw.get('column_B')}"
            ),
        }.get(kind, kind)
        mostly = kw.get("mostly")
        tolerated = f" (at most {1 - float(mostly):.0%} tolerated)" if mostly not in (None, 1, 1.0) else ""
        sample = f"; examples: {', '.join(examples)}" if examples else ""
        return f"{where}: {count} row(s) ({share:.1%}) {detail}{tolerated} [{guards}]{sample}"
    return f"{where}: {kind} failed (observed {_jsonable(res.get('observed_value'))}) [{guards}]"


def _range_text(kw: Mapping[str, Any]) -> str:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    lo_t = lo.isoformat() if hasattr(lo, "isoformat") else lo
    hi_t = hi.isoformat() if hasattr(hi, "isoformat") else hi
    if lo is None:
        return f"above {hi_t}"
    if hi is None:
        return f"below {lo_t}"
    return f"outside [{lo_t}, {hi_t}]"


_SEVERITY_ORDER: Final = {"critical": 0, "warning": 1, "info": 2}


def _order(checks: list[CheckResult]) -> list[CheckResult]:
    """Failures first (critical, then warnings), then passes, then skipped."""
    return sorted(
        checks,
        key=lambda c: (c.skipped is not None, c.success, _SEVERITY_ORDER.get(c.severity, 3)),
    )


# ---- quarantine, evidence, outputs ------------------------------------------------------------
def _quarantine_table(
    dataset: str,
    table: pa.Table,
    bad_rows: Mapping[str, np.ndarray],
    key: str | None,
    pii: set[str],
    run_id: str,
    reference: dt.datetime,
) -> pa.Table:
    """One QUARANTINE row per (row, failed check) with the offending value (PII masked)."""
    from features.contract import QUARANTINE

    parts = []
    for label, idx in bad_rows.items():
        if not idx.size:
            continue
        columns = label[label.index("(") + 1 : -1].split(", ") if "(" in label else []
        expectation = label.split("(")[0]
        taken = pa.array(idx)
        record_ids = (
            _as_text(table.column(key).take(taken))
            if key and key in table.column_names
            else pa.nulls(idx.size, pa.string())
        )
        values = None
        for col in columns:
            text = _as_text(table.column(col).take(taken))
            if col in pii:
                text = pa.array([mask_pii(v) for v in text.to_pylist()], pa.string())
            if len(columns) > 1:
                text = pc.binary_join_element_wise(pa.scalar(f"{col}="), pc.fill_null(text, "null"), "")
            values = text if values is None else pc.binary_join_element_wise(values, text, "; ")
        if values is None:
            values = pa.nulls(idx.size, pa.string())
        n = idx.size
        parts.append(
            pa.table(
                {
                    "dataset": pa.array([dataset] * n, pa.string()),
                    "record_id": record_ids,
                    "column": pa.array([", ".join(columns) or None] * n, pa.string()),
                    "expectation": pa.array([expectation] * n, pa.string()),
                    "value": values,
                    "reason": pa.array([_REASONS.get(expectation, expectation)] * n, pa.string()),
                    "run_id": pa.array([run_id] * n, pa.string()),
                    "quarantined_at": pa.array([reference] * n, QUARANTINE.field("quarantined_at").type),
                },
                schema=QUARANTINE,
            )
        )
    if not parts:
        return QUARANTINE.empty_table()
    return pa.concat_tables(parts)


_REASONS: Final = {
    "expect_column_values_to_not_be_null": "null in a required column",
    "expect_column_values_to_be_unique": "duplicate id",
    "expect_compound_columns_to_be_unique": "duplicate key",
    "expect_column_values_to_match_regex": "malformed value",
    "expect_column_values_to_be_in_set": "unknown value",
    "expect_column_values_to_be_between": "value out of range",
    "expect_column_pair_values_a_to_be_greater_than_b": "dates in the wrong order",
}


def _as_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if pa.types.is_timestamp(column.type):
        seconds = pc.cast(column, pa.timestamp("s", tz="UTC"), safe=False)  # evidence needs no microseconds
        column = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
    elif not pa.types.is_string(column.type):
        column = (
            pc.cast(column, pa.string())
            if not pa.types.is_nested(column.type)
            else pa.array([None if v is None else json.dumps(v) for v in column.to_pylist()], pa.string())
        )
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _scrub(result: Any, pii: set[str]) -> dict[str, Any]:
    """The GX result as JSON without bulky per-row lists and with PII values masked."""
    for r in result.results:
        res = r.result or {}
        for k in _BULKY_RESULT_KEYS:
            res.pop(k, None)
        cols = _columns_of({"kwargs": dict(r.expectation_config.kwargs)})
        if cols and cols[0] in pii:
            if "partial_unexpected_list" in res:
                res["partial_unexpected_list"] = [
                    mask_pii(None if v is None else str(v)) for v in res["partial_unexpected_list"]
                ]
            if "partial_unexpected_counts" in res:
                res["partial_unexpected_counts"] = [
                    {**c, "value": mask_pii(None if c.get("value") is None else str(c["value"]))}
                    for c in res["partial_unexpected_counts"]
                ]
    return _jsonable(result.to_json_dict())


def _write_outputs(
    outcome: ValidationOutcome,
    settings: Settings,
    contract: str | None,
) -> None:
    from features.lake import Lake, Partition

    lake = Lake(settings.lake_dir)
    table = contract or outcome.dataset
    if outcome.quarantine is not None:  # even when empty: a rerun must replace an older quarantine
        outcome.quarantine_path = lake.write(
            outcome.quarantine,
            Partition("quarantine", table, outcome.source, outcome.run_date),
            table_name="quarantine",
        )
    if outcome.clean is not None:
        outcome.clean_path = lake.write(
            outcome.clean,
            Partition("clean", table, outcome.source, outcome.run_date),
            table_name=contract or "",
        )
    directory = report_dir(settings, outcome.run_id)
    directory.mkdir(parents=True, exist_ok=True)
    outcome.report_path = directory / f"{outcome.name}.json"
    outcome.docs_path = directory / f"{outcome.name}.html"
    _atomic_write(outcome.docs_path, outcome.docs_html)
    _atomic_write(outcome.report_path, json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    _atomic_write(directory / "index.html", _index_html(directory))


def _index_html(directory: Path) -> str:
    """A run's evidence index: one line per dataset with its decision, linking the GX page."""
    import html

    rows = []
    for report in sorted(directory.glob("*.json")):
        r = json.loads(report.read_text())
        rows.append(
            f"<tr><td><a href='{html.escape(report.stem)}.html'>{html.escape(report.stem)}</a></td>"
            f"<td class='{r['decision']}'>{r['decision']}</td><td>{r['rows']}</td><td>{r['quarantined_rows']}</td>"
            f"<td>{'<br>'.join(html.escape(m) for m in r['messages'])}</td></tr>"
        )
    title = html.escape(directory.name)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ProX validation {title}</title>"
        "<style>body{font-family:sans-serif}td{padding:4px 8px;vertical-align:top}"
        ".failed{color:#b00}.warned{color:#a60}.passed{color:#070}</style></head><body>"
        f"<h1>Validation evidence, {title}</h1><table><tr><th>dataset</th><th>decision</th><th>rows</th>"
        f"<th>quarantined</th><th>messages</th></tr>{''.join(rows)}</table></body></html>"
    )


def report_dir(settings: Settings, run_id: str) -> Path:
    """Where a run's validation evidence lives: ``<lake>/reports/validation/run_id=<run>/``."""
    safe = re.sub(r"[^A-Za-z0-9._=-]", "_", run_id)
    return settings.lake_dir / "reports" / "validation" / f"run_id={safe}"


def render_data_docs(gx_result: Any) -> str:
    """GX Data Docs HTML (the validation results page) for a (scrubbed) GX result."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(gx_result))


def evidence_name(dataset: str, source: str, suite_source: str | None) -> str:
    """File/artifact name of a result: ``raw_activities-hubspot`` when a suite serves many sources."""
    return dataset if suite_source or source in ("all", "") else f"{dataset}-{source}"


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
    for path in (settings.lake_dir / "reports" / "validation").glob(f"run_id=*/{name}.json"):
        stats = json.loads(path.read_text()).get("stats") or {}
        ref = stats.get("reference_time") or ""
        if ref < limit and (best is None or ref > best[0]):
            best = (ref, stats)
    return best[1] if best else None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- small helpers ----------------------------------------------------------------------------
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


def _str_or_none(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars, timestamps, NaN) for evidence files."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
