"""Results: the gate's verdicts (CheckResult, ValidationOutcome) read from a GX result.

Each GX expectation result becomes a :class:`CheckResult` with a one-line message an
operator can act on (dataset, column, count, masked examples, what the check guards), and
row-level failures give the row positions to quarantine. Raw PII never leaves this module
unmasked: messages, examples and the scrubbed GX result keep a value's shape, not the value.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa

from expectations.suites import columns_of

Decision = Literal["passed", "warned", "failed"]
#: Examples of offending values shown in a message or kept per check in the evidence.
EXAMPLES_IN_MESSAGE: Final = 3


#: Keys of a GX result too big (one entry per bad row) or too raw (PII) for the evidence.
_BULKY_RESULT_KEYS: Final = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")


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


def interpret(
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
        cols = columns_of({"kwargs": kw})
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


def order_checks(checks: list[CheckResult]) -> list[CheckResult]:
    """Failures first (critical, then warnings), then passes, then skipped."""
    return sorted(
        checks,
        key=lambda c: (c.skipped is not None, c.success, _SEVERITY_ORDER.get(c.severity, 3)),
    )


def scrub_gx_result(result: Any, pii: set[str]) -> dict[str, Any]:
    """The GX result as JSON without bulky per-row lists and with PII values masked."""
    for r in result.results:
        res = r.result or {}
        for k in _BULKY_RESULT_KEYS:
            res.pop(k, None)
        cols = columns_of({"kwargs": dict(r.expectation_config.kwargs)})
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
