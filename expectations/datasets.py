"""The datasets ProX validates, one suite file each (light module: the CLI imports it at start)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

SUITES_DIR: Final = Path(__file__).resolve().parent / "suites"
#: Raw leads per source, raw activities, the feature table and the scores of a scoring run.
DATASETS: Final = (
    "raw_leads_salesforce",
    "raw_leads_hubspot",
    "raw_leads_file",
    "raw_activities",
    "features",
    "scores",
)
