"""The GX engine: an ephemeral Great Expectations context that runs a suite on one frame.

Great Expectations evaluates every expectation (schema, row and aggregate checks); with
result format COMPLETE its row-level results come back as ``unexpected_index_list``, which
is how the gate knows which rows to quarantine. Checks on a missing or mistyped column are
not sent to GX (they would only raise there); they come back as skipped checks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pyarrow as pa

from expectations.results import CheckResult
from expectations.suites import ValidationError, columns_of
from prox.settings import quiet_library_defaults

#: Offending values GX keeps per check (``partial_unexpected_list``) for messages and evidence.
PARTIAL_UNEXPECTED: Final = 20


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


def split_runnable(
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
        cols = columns_of(exp)
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


def run_gx(dataset: str, expectations: list[dict[str, Any]], frame: Any, params: Mapping[str, Any]) -> Any:
    """Evaluate the expectations with GX on the frame (ephemeral context, no progress bars)."""
    quiet_library_defaults()  # GX analytics off before great_expectations is imported
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
