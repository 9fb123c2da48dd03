"""Evidence files: a run's clean/quarantine partitions, GX JSON and Data Docs HTML on disk.

Each outcome is written under ``<lake>/reports/validation/run_id=<run>/`` as
``<name>.json`` (the full evidence) and ``<name>.html`` (GX Data Docs of the scrubbed
result), plus an ``index.html`` listing every dataset of the run. :mod:`expectations.evidence`
attaches them to the MLflow run that consumes the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from expectations.results import ValidationOutcome
from prox.settings import Settings


def write_outputs(
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
    from features.lake import Lake

    return Lake(settings.lake_dir).report_dir("validation", run_id=run_id)


def render_data_docs(gx_result: Any) -> str:
    """GX Data Docs HTML (the validation results page) for a (scrubbed) GX result."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(gx_result))


def evidence_name(dataset: str, source: str, suite_source: str | None) -> str:
    """File/artifact name of a result: ``raw_activities-hubspot`` when a suite serves many sources."""
    return dataset if suite_source or source in ("all", "") else f"{dataset}-{source}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
