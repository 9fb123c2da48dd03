"""Suites: read a dataset's GX suite file, expand its generated checks, fill its parameters.

A suite file is a GX ExpectationSuite JSON with ProX settings in ``meta.prox`` (source,
contract, key, PII columns, freshness, volume ratios) and a ``meta.guards`` comment on every
expectation. The gate's other modules only see the expanded list and the parameters
(``$PARAMETER`` values) computed here for one run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

from expectations.datasets import DATASETS, SUITES_DIR


class ValidationError(ValueError):
    """The validation itself cannot run: unknown dataset, unreadable input, broken suite."""


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


def columns_of(exp: Mapping[str, Any]) -> list[str]:
    kw = exp["kwargs"]
    if "column" in kw:
        return [kw["column"]]
    if "column_A" in kw:
        return [kw["column_A"], kw["column_B"]]
    if "column_list" in kw:
        return list(kw["column_list"])
    return []


def expectation_parameters(
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
