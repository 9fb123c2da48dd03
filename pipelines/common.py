"""What every job shares: the run's identity, halting on purpose, opening a CRM's connector,
and writing a job's small JSON reports under the lake's report paths."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.lake import Lake
from prox.settings import Settings

ALL = "all"  # the source label of consolidated (cross-CRM) partitions


class PipelineHalted(RuntimeError):
    """A gate stopped the run on purpose (validation, drift); the message says why."""


def as_utc(moment: dt.datetime | str) -> dt.datetime:
    """An Airflow logical date (datetime or ISO text) in UTC; a naive one is taken as UTC."""
    at = dt.datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


@dataclass(frozen=True)
class RunContext:
    """What identifies a nightly run: its date, its as-of moment and its id."""

    run_date: dt.date
    as_of: dt.datetime
    run_id: str

    @classmethod
    def of(cls, logical_date: dt.datetime | str, run_id: str) -> RunContext:
        day = as_utc(logical_date).date()
        # scores are "as of" the end of the run date's midnight: everything before it is known
        return cls(day, dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), run_id)


def open_connector(
    settings: Settings, crm: str, step: str, *, with_web_tracking: bool = False
) -> dict[str, Any]:
    """The connectors of the deployment with ``crm`` among them, or halt ``step`` naming what is missing.

    ``with_web_tracking`` adds the web-tracking file source (key ``"file"``) when configured.
    """
    from plugins.crm import open_connectors

    web = settings.web_tracking_dir if with_web_tracking else None
    connectors = open_connectors(settings.data_dir, web_tracking_dir=web)
    if crm not in connectors:
        raise PipelineHalted(f"{step} {crm}: no credentials (Airflow Connection or PROX_{crm.upper()}_* env)")
    return connectors


def write_report_json(directory: Path, name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``<directory>/<name>.json`` atomically (a reader sees the old or the new file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def nightly_report_dir(settings: Settings, run_date: dt.date) -> Path:
    """Where a nightly run's reports live (drift, scores gate, run report)."""
    return Lake(settings.lake_dir).report_dir("nightly", run_date=run_date)
