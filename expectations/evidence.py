"""Evidence for auditors: attach validation results to the MLflow run that consumes the data.

An auditor opening a training or scoring run in MLflow finds, under ``validation/``, each
dataset's GX result (JSON), its GX Data Docs page (HTML) and a summary of the gate's decisions,
plus ``validation.<dataset>`` tags and metrics. What is attached was already scrubbed by the
runner (PII masked, no per-row lists), so nothing here can leak raw contact data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from expectations.results import ValidationOutcome


def log_validation_to_mlflow(outcomes: Iterable[ValidationOutcome]) -> dict[str, Any]:
    """Log each outcome's evidence to the active MLflow run; returns the summary logged.

    Raises RuntimeError when no run is active: evidence must land on the run that used the data.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError(
            "log_validation_to_mlflow: no active MLflow run; call it inside mlflow.start_run()"
        )
    outcomes = list(outcomes)
    summary = {o.name: o.summary() for o in outcomes}
    for o in outcomes:
        folder = f"validation/{o.name}"
        if o.report_path is not None and o.report_path.is_file():
            mlflow.log_artifact(str(o.report_path), artifact_path=folder)
        else:
            mlflow.log_dict(o.to_json(), f"{folder}/{o.name}.json")
        if o.docs_path is not None and o.docs_path.is_file():
            mlflow.log_artifact(str(o.docs_path), artifact_path=folder)
        elif o.docs_html:
            mlflow.log_text(o.docs_html, f"{folder}/{o.name}.html")
        mlflow.set_tag(f"validation.{o.name}", o.decision)
        mlflow.log_metrics(
            {
                f"validation.{o.name}.rows": float(o.rows),
                f"validation.{o.name}.quarantined_rows": float(o.quarantined_rows),
                f"validation.{o.name}.bad_share": float(o.bad_share),
                f"validation.{o.name}.failed_checks": float(len(o.critical_failures) + len(o.warnings)),
            }
        )
    decisions = [o.decision for o in outcomes]
    overall = "failed" if "failed" in decisions else "warned" if "warned" in decisions else "passed"
    mlflow.set_tag("validation.decision", overall)
    mlflow.log_text(json.dumps(summary, indent=2, sort_keys=True), "validation/summary.json")
    return summary
