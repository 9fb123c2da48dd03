"""The 15-minute micro-batch: re-score the leads with new engagement, push what changed.

For CRMs that cannot call the hot path's webhooks. The functions the ``prox_microbatch`` DAG
wires, each reading fixed partitions keyed by the run's interval, so a retry or a rerun of an
interval reads and writes the same files and pushes nothing new:

    extract(crm) -> rescore -> push(crm)

* **extract**: the connectors' own incremental extraction (:func:`plugins.crm.base.extract_table`:
  page commits, resume, watermarks) of the engagement streams only, under the micro-batch's own
  watermarks (``microbatch.<stream>``), seeded from the nightly's on first use. The nightly's
  watermarks never move here, so the nightly still extracts, validates and keeps every event;
  the two jobs never take data from each other. Each interval's increment is its own raw
  partition (source ``<crm>.mb-<interval>``), which no nightly reader lists.
* **rescore**: the leads with events in this interval's increments, with the other leads of
  their accounts (account features), go through the batch feature builder
  (:func:`features.build.build_features`) as of the interval's end, on the latest nightly
  snapshot of lead fields and status history, the nightly's clean events and the micro-batch
  increments since that snapshot; then :func:`pipelines.scoring.score_rows` (@champion, consent,
  exact reasons for changed scores).
* **push**: through the connectors' push ledger, shared with the nightly: only a lead whose
  score or tier differs from what its CRM last received is sent, whichever job sent it.

Lead-field changes and brand-new leads wait for the nightly (this job reads engagement only);
an event extracted before it occurred (clock skew) counts in the run whose interval holds it. The GX gate
is not run on 15-minute increments (too small for its volume checks); the feature builder
drops unusable rows and counts them, and the nightly gate judges the same events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIVITIES, SCORES, conform
from features.lake import Lake, Partition
from pipelines.common import ALL, RunContext, as_utc, open_connector, write_report_json
from prox.settings import Settings

#: Prefix of the micro-batch's own watermark streams in the connector state.
STREAM_PREFIX = "microbatch."
#: The DAG's schedule: runs every 15 minutes.
EVERY = dt.timedelta(minutes=15)
#: Lake table (zone "scores") holding each interval's re-scored rows (SCORES contract).
SCORES_TABLE = "microbatch_scores"


@dataclass(frozen=True)
class Interval:
    """One micro-batch run: its end (the as-of time of its scores) and its id."""

    as_of: dt.datetime
    run_id: str

    @classmethod
    def of(cls, moment: dt.datetime | str, run_id: str) -> Interval:
        return cls(as_utc(moment).replace(microsecond=0), run_id)

    @property
    def run_date(self) -> dt.date:
        return self.as_of.date()

    @property
    def label(self) -> str:
        """The interval's name in lake partitions, e.g. ``mb-091500``."""
        return f"mb-{self.as_of.strftime('%H%M%S')}"

    @property
    def run_key(self) -> str:
        return f"{self.as_of.isoformat()}:microbatch"

    def context(self) -> RunContext:
        """The nightly's run identity for the shared scoring code (as-of is the interval end)."""
        return RunContext(self.run_date, self.as_of, self.run_id)


class _OwnWatermark:
    """A connector stream read under the micro-batch's own watermark name."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.name = STREAM_PREFIX + stream.name
        self.table = stream.table

    def pages(self, since: str | None, resume: dict[str, Any] | None) -> Iterator[Any]:
        return self.stream.pages(since, resume)


def _engagement_sources(settings: Settings, crm: str) -> list[Any]:
    """The connectors that deliver ``crm``'s engagement (Salesforce orgs: also web tracking)."""
    connectors = open_connector(settings, crm, "extract", with_web_tracking=True)
    sources = [connectors[crm]]
    if crm == "salesforce" and "file" in connectors:
        sources.append(connectors["file"])
    return sources


def extract(settings: Settings, crm: str, run: Interval) -> dict[str, Any]:
    """Pull ``crm``'s engagement since the micro-batch's last extraction into this interval's partition.

    Nothing happens before the first nightly snapshot: the micro-batch starts from the
    nightly's watermarks (a stream the nightly never saw a row of starts from its beginning).
    """
    lake = Lake(settings.lake_dir)
    out: dict[str, Any] = {"crm": crm, "tables": [], "api_calls": 0}
    if _snapshot_date(lake, run) is None:
        out["skipped"] = "no nightly lead snapshot yet"
        return out
    for source in _engagement_sources(settings, crm):
        own = source.streams("activities") if hasattr(source, "streams") else [source]
        result = extract_increment(source.state, lake, source.source, own, run, stats=source.stats)
        out["api_calls"] += result.api_calls
        out["tables"].append({"source": result.source, "rows": result.rows, "path": result.path})
    return out


def extract_increment(
    state: Any, lake: Lake, source: str, streams: list[Any], run: Interval, *, stats: Any = None
) -> Any:
    """One source's engagement since the micro-batch's watermarks, as this interval's raw partition.

    The streams are read under their own ``microbatch.`` watermarks, seeded from the nightly's
    on first use; the nightly's never move here. A rerun of a finished interval returns the
    partition it wrote (the connectors' run bookkeeping, keyed by the interval).
    """
    from plugins.crm.base import extract_table

    own = [_OwnWatermark(s) for s in streams]
    for s in own:
        nightly_mark = state.watermark(s.stream.name)
        if state.watermark(s.name) is None and nightly_mark is not None:
            state.finish_run(s.name, "seed", stamp_from=None, new_mark=nightly_mark, rows=0)
    return extract_table(
        state,
        lake,
        f"{source}.{run.label}",
        "activities",
        own,
        run.run_date,
        stats=stats,
        run_key=run.run_key,
    )


def _snapshot_date(lake: Lake, run: Interval) -> dt.date | None:
    """The date of the latest nightly lead snapshot at or before the interval (None: none yet)."""
    dates = [
        p.run_date for p in lake.partitions("clean", "leads", sources=[ALL]) if p.run_date <= run.run_date
    ]
    return dates[-1] if dates else None


def _increments(lake: Lake, since: dt.date, until: dt.date, label: str | None = None) -> pa.Table:
    """Micro-batch engagement increments with run dates in [since, until] (one interval's with ``label``)."""
    tables = []
    for part in lake.partitions("raw", "activities"):
        if ".mb-" not in part.source or not since <= part.run_date <= until:
            continue
        if label is not None and not part.source.endswith(f".{label}"):
            continue
        tables.append(conform(lake.read(part), ACTIVITIES))
    return pa.concat_tables(tables) if tables else ACTIVITIES.empty_table()


def rescore(settings: Settings, run: Interval, *, every: dt.timedelta = EVERY) -> dict[str, Any]:
    """Features as of the interval's end and scores for the leads with engagement in it.

    Engaged: the leads of this interval's increment (late-arriving events included) and of
    earlier increments' events that occurred during the interval (extracted before they
    counted: stamped after the previous run's as-of time).
    """
    from features.build import build_features, partition_key
    from pipelines.scoring import activities_for, score_rows

    lake = Lake(settings.lake_dir)
    snapshot = _snapshot_date(lake, run)
    out: dict[str, Any] = {"as_of": run.as_of.isoformat(), "engaged": 0, "scored": 0, "path": None}
    if snapshot is None:
        out["skipped"] = "no nightly lead snapshot yet"
        return out
    fresh = _increments(lake, run.run_date, run.run_date, run.label)
    recent = _increments(lake, snapshot - dt.timedelta(days=1), run.run_date)
    t = recent.column("occurred_at")
    during = recent.filter(
        pc.and_(
            pc.greater_equal(t, pa.scalar(run.as_of - every, t.type)),
            pc.less(t, pa.scalar(run.as_of, t.type)),
        )
    )
    engaged = pc.unique(
        pa.concat_arrays(
            [fresh.column("lead_id").combine_chunks(), during.column("lead_id").combine_chunks()]
        ).drop_null()
    )
    leads = lake.read(Partition("clean", "leads", ALL, snapshot))
    keys = partition_key(leads)
    is_engaged = pc.is_in(leads.column("lead_id"), value_set=engaged)
    # the engaged leads and the other leads of their accounts (account features compare them)
    accounts = pc.unique(pc.filter(keys, is_engaged))
    group = leads.filter(pc.is_in(keys, value_set=accounts))
    members = group.column("lead_id").combine_chunks()
    out["engaged"] = int(pc.sum(is_engaged.cast(pa.int64())).as_py() or 0)
    if out["engaged"] == 0:
        table, counts = SCORES.empty_table(), {"scored": 0}
    else:
        history = lake.read(Partition("clean", "lead_status_history", ALL, snapshot))
        history = history.filter(pc.is_in(history.column("lead_id"), value_set=members))
        ctx = run.context()
        nightly_events = activities_for(lake, members, RunContext(snapshot, ctx.as_of, run.run_id))
        recent = recent.filter(pc.is_in(recent.column("lead_id"), value_set=members))
        events = pa.concat_tables([nightly_events, recent])
        features, _ = build_features(group, events, history, run.as_of)
        features = features.filter(pc.is_in(features.column("lead_id"), value_set=engaged))
        table, counts = score_rows(
            settings,
            lake,
            ctx,
            features,
            leads.select(["lead_id", "source", "consent_processing", "opted_out"]),
        )
    path = lake.write(table, Partition("scores", SCORES_TABLE, run.label, run.run_date), table_name="scores")
    out.update(counts)
    out["snapshot"] = snapshot.isoformat()
    out["path"] = str(path)
    return out


def push(settings: Settings, crm: str, run: Interval) -> dict[str, Any]:
    """Push the interval's scores of ``crm``'s leads whose score or tier differs from the ledger."""
    lake = Lake(settings.lake_dir)
    part = Partition("scores", SCORES_TABLE, run.label, run.run_date)
    if not lake.exists(part):
        return {"crm": crm, "pushed": 0, "skipped": 0, "rejected": 0, "note": "nothing re-scored"}
    scores = lake.read(part)
    mine = scores.filter(pc.starts_with(scores.column("lead_id"), f"{crm}:"))
    if mine.num_rows == 0:
        return {"crm": crm, "pushed": 0, "skipped": 0, "rejected": 0}
    connectors = open_connector(settings, crm, "push")
    report = connectors[crm].push(mine, run_id=f"{run.run_id}:{crm}")
    out = report.as_dict()
    out.pop("rejections", None)
    out.pop("stats", None)
    out["rejected_examples"] = dict(list(report.rejections.items())[:5])
    return out


def write_report(settings: Settings, run: Interval, parts: dict[str, Any]) -> dict[str, Any]:
    """A small JSON per interval beside the nightly reports: what was read, scored and pushed."""
    lake = Lake(settings.lake_dir)
    pushed = parts.get("push", [])
    report = {
        "run_id": run.run_id,
        "as_of": run.as_of.isoformat(),
        "extracted": {t["source"]: t["rows"] for e in parts.get("extract", []) for t in e["tables"]},
        "engaged": parts.get("rescore", {}).get("engaged", 0),
        "scored": parts.get("rescore", {}).get("scored", 0),
        "pushed": {p["crm"]: p.get("pushed", 0) for p in pushed},
        "skipped_unchanged": {p["crm"]: p.get("skipped", 0) for p in pushed},
        "rejected": {p["crm"]: p.get("rejected", 0) for p in pushed},
    }
    path = write_report_json(lake.report_dir("microbatch", run_date=run.run_date), run.label, report)
    report["path"] = str(path)
    return report
