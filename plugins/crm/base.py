"""Small interfaces for the two directions of the CRM boundary, and the engines behind them.

* :class:`LeadSource` extracts canonical ``raw_leads`` and ``activities`` incrementally since a
  persisted watermark (or in full on request) into the lake's raw zone.
* :class:`ScorePusher` pushes scores (the ``scores`` contract) back as the ProX fields of
  ARCHITECTURE.md. Every record's outcome (pushed, rejected with the CRM's reason, skipped)
  is recorded in the push ledger: ``state.outcomes(report.run_id, crm)``.

CRM-specific code only says how to read one page (:class:`Stream`) and how to send one batch
(:class:`BatchSender`); the engines here own what must be the same everywhere: page commits,
resume after a crash, watermark moves after durable writes, deduplication of overlapping
windows, the delta against the push ledger, in-flight bookkeeping, retries of only what
failed, bisection of batches a CRM rejects as a whole, and outcome records.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import ACTIVITIES, RAW_LEADS, SCORES, TIERS, conform
from features.lake import Lake, Partition
from plugins.crm.retry import CallStats, RetryPolicy
from plugins.crm.state import CommittedPage, ConnectorState, PushedValues, Watermark

PUSHED, REJECTED, SKIPPED = "pushed", "rejected", "skipped"
_KEY = {"raw_leads": "lead_id", "activities": "event_id"}
_ORDER = {"raw_leads": "updated_at", "activities": "occurred_at"}


class ConnectorError(RuntimeError):
    """A connector cannot go on (bad credentials, exhausted allocation, ...); says why."""


# ---- extraction ------------------------------------------------------------------------------
@dataclass
class Page:
    """One page read from a CRM: canonical rows, each row's CRM id and modification stamp
    (fixed-width ISO text, so text order is time order), and how to resume after it."""

    rows: pa.Table
    ids: list[str]
    stamps: list[str]
    resume: dict[str, Any] = field(default_factory=dict)


class Stream(Protocol):
    """One CRM object read incrementally, e.g. ``salesforce.Lead``."""

    name: str
    table: str  # canonical table the rows belong to: raw_leads or activities

    def pages(self, since: str | None, resume: dict[str, Any] | None) -> Iterator[Page]:
        """Records with stamp >= ``since`` (all when None) in stamp order, page by page.
        ``resume`` is the ``Page.resume`` of the last committed page when resuming."""
        ...


@dataclass
class ExtractResult:
    source: str
    table: str
    run_date: dt.date
    rows: int
    path: str
    full_refresh: bool
    streams: dict[str, dict[str, Any]]
    api_calls: int
    resumed_pages: int = 0
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["run_date"] = self.run_date.isoformat()
        return d


class LeadSource(Protocol):
    """Extract canonical leads and activities from one system into the lake."""

    source: str

    def extract(
        self, lake: Lake, run_date: dt.date, *, full_refresh: bool = False
    ) -> list[ExtractResult]: ...


class StreamingSource:
    """Mixin for a CRM connector whose ``streams(table)`` list its :class:`Stream` objects:
    extraction of every table through :func:`extract_table`, the same for every CRM."""

    source: str

    def __init__(
        self,
        credentials: Any,
        state: ConnectorState,
        *,
        policy: RetryPolicy | None = None,
        commit_rows: int = 5_000,
    ) -> None:
        """What every CRM connector holds: its credentials, the shared state file, the retry
        policy (:class:`plugins.crm.retry.RetryPolicy` by default), call statistics and the
        rows per committed extraction page."""
        self.credentials = credentials
        self.state = state
        self.policy = policy or RetryPolicy()
        self.stats = CallStats()
        self.commit_rows = commit_rows

    def streams(self, table: str) -> list[Stream]:
        raise NotImplementedError

    def extract(
        self,
        lake: Lake,
        run_date: dt.date,
        *,
        full_refresh: bool = False,
        tables: Sequence[str] = ("raw_leads", "activities"),
        on_commit: Callable[[str, int], None] | None = None,
    ) -> list[ExtractResult]:
        return [
            extract_table(
                self.state,
                lake,
                self.source,
                t,
                self.streams(t),
                run_date,
                full_refresh=full_refresh,
                stats=self.stats,
                commit_rows=self.commit_rows,
                on_commit=on_commit,
            )
            for t in tables
        ]


def extract_table(
    state: ConnectorState,
    lake: Lake,
    source: str,
    table: str,
    streams: Sequence[Stream],
    run_date: dt.date,
    *,
    full_refresh: bool = False,
    stats: CallStats | None = None,
    commit_rows: int = 5_000,
    staging_dir: Path | None = None,
    on_commit: Callable[[str, int], None] | None = None,
    run_key: str | None = None,
) -> ExtractResult:
    """Extract ``streams`` into the raw partition of ``table`` for ``run_date``.

    Pages are committed (Parquet + state row) every ``commit_rows`` rows; a crash resumes from
    the last committed page. The partition is written atomically, and only then do the
    watermarks move. A rerun of a finished ``run_date`` returns the partition it wrote.
    ``run_key`` names the run when several run on one date (the micro-batch's intervals).
    """
    part = Partition("raw", table, source, run_date)
    run_key = run_key or f"{run_date.isoformat()}{':full' if full_refresh else ''}"
    calls_before = stats.calls if stats else 0
    if all(state.finished_run(s.name, run_key) for s in streams) and lake.exists(part):
        rows = lake.manifest(part)["rows"]
        return ExtractResult(
            source,
            table,
            run_date,
            rows,
            str(lake.path(part)),
            full_refresh,
            {s.name: state.finished_run(s.name, run_key) or {} for s in streams},
            0,
            reused=True,
        )
    staging = staging_dir or (lake.root / "state" / "extract_pages")
    tables: list[pa.Table] = []
    marks: dict[str, tuple[str | None, Watermark | None, int]] = {}
    resumed = 0
    for stream in streams:
        mark = None if full_refresh else state.watermark(stream.name)
        got, new_mark, n_rows, n_resumed = _extract_stream(
            state, stream, run_key, mark, staging, commit_rows, on_commit
        )
        tables.extend(got)
        resumed += n_resumed
        marks[stream.name] = (mark.stamp if mark else None, new_mark, n_rows)
    schema = RAW_LEADS if table == "raw_leads" else ACTIVITIES
    data = dedupe(
        pa.concat_tables([conform(t, schema) for t in tables]) if tables else schema.empty_table(), table
    )
    path = lake.write(data, part)
    for stream in streams:
        stamp_from, new_mark, n_rows = marks[stream.name]
        state.finish_run(stream.name, run_key, stamp_from=stamp_from, new_mark=new_mark, rows=n_rows)
    _cleanup(staging, streams, run_key)
    calls = (stats.calls - calls_before) if stats else 0
    return ExtractResult(
        source,
        table,
        run_date,
        data.num_rows,
        str(path),
        full_refresh,
        {name: {"from": m[0], "to": m[1].stamp if m[1] else m[0], "rows": m[2]} for name, m in marks.items()},
        calls,
        resumed_pages=resumed,
    )


def _extract_stream(
    state: ConnectorState,
    stream: Stream,
    run_key: str,
    mark: Watermark | None,
    staging: Path,
    commit_rows: int,
    on_commit: Callable[[str, int], None] | None,
) -> tuple[list[pa.Table], Watermark | None, int, int]:
    """Read one stream from its watermark (or its last committed page), committing pages;
    returns (tables, the watermark after it, rows, pages resumed)."""
    committed = state.committed_pages(stream.name, run_key)
    tables = [pq.read_table(page.path) for page in committed]
    since = mark.stamp if mark else None
    skip = set(mark.boundary_ids) if mark else set()
    top_stamp = mark.stamp if mark else None
    top_ids = set(skip)
    if committed:
        top_stamp, top_ids = committed[-1].max_stamp, set(committed[-1].boundary_ids)
        if committed[-1].max_stamp:
            since, skip = committed[-1].max_stamp, set(committed[-1].boundary_ids)
    resume = committed[-1].resume if committed else None
    n_rows = sum(p.rows for p in committed)
    page_no = committed[-1].page if committed else 0
    buffer: list[Page] = []

    def commit(buffer: list[Page], page_no: int, top_stamp: str | None, top_ids: set[str]) -> None:
        data = pa.concat_tables([b.rows for b in buffer])
        path = staging / stream.name / run_key.replace(":", "_") / f"page-{page_no:05d}.parquet"
        _write_parquet(data, path)
        state.commit_page(
            stream.name,
            run_key,
            CommittedPage(page_no, path, data.num_rows, top_stamp, frozenset(top_ids), buffer[-1].resume),
        )
        tables.append(data)
        if on_commit is not None:
            on_commit(stream.name, page_no)

    for page in stream.pages(since, resume):
        keep = [
            i
            for i, (rid, stamp) in enumerate(zip(page.ids, page.stamps, strict=True))
            if not (stamp == since and rid in skip)
        ]
        rows = page.rows if len(keep) == len(page.ids) else page.rows.take(pa.array(keep, pa.int64()))
        for i in keep:
            stamp, rid = page.stamps[i], page.ids[i]
            if top_stamp is None or stamp > top_stamp:
                top_stamp, top_ids = stamp, {rid}
            elif stamp == top_stamp:
                top_ids.add(rid)
        buffer.append(Page(rows, [], [], page.resume))
        n_rows += rows.num_rows
        if sum(b.rows.num_rows for b in buffer) >= commit_rows:
            page_no += 1
            commit(buffer, page_no, top_stamp, top_ids)
            buffer = []
    if buffer:
        page_no += 1
        commit(buffer, page_no, top_stamp, top_ids)
    return tables, (Watermark(top_stamp, frozenset(top_ids)) if top_stamp else None), n_rows, len(committed)


def dedupe(table: pa.Table, name: str) -> pa.Table:
    """Keep one row per key (the latest version), ordered by key: overlapping windows and
    resumed pages may deliver a record twice."""
    if table.num_rows == 0:
        return table
    key, order = _KEY[name], _ORDER[name]
    idx = pa.array(range(table.num_rows), pa.int64())
    t = table.append_column("__i", idx)
    t = t.sort_by([(key, "ascending"), (order, "descending"), ("__i", "descending")])
    keys = t[key]
    first = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    mask = pa.concat_arrays(
        [pa.array([True]), first.combine_chunks() if hasattr(first, "combine_chunks") else first]
    )
    return t.filter(mask).drop_columns(["__i"])


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _cleanup(staging: Path, streams: Sequence[Stream], run_key: str) -> None:
    import shutil

    for stream in streams:
        shutil.rmtree(staging / stream.name / run_key.replace(":", "_"), ignore_errors=True)


# ---- pushing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreRecord:
    """One score as written to a CRM record (the contract's fields)."""

    lead_id: str
    crm_id: str
    score: int
    tier: str
    probability: float
    reasons: str
    model_version: str
    scored_at: dt.datetime

    def values(self) -> PushedValues:
        return PushedValues(
            self.score,
            self.tier,
            self.probability,
            self.model_version,
            self.scored_at.isoformat(),
            self.reasons,
        )


@dataclass
class RecordResult:
    """What the CRM said about one record of a batch."""

    lead_id: str
    ok: bool
    transient: bool = False
    reason: str | None = None


class BatchRejected(Exception):
    """The CRM refused a whole batch for its content (not transiently); carries its reason."""


class RateLimitExhausted(ConnectorError):
    """The CRM's allocation is used up (Salesforce REQUEST_LIMIT_EXCEEDED): stop, retry later."""


class BatchSender(Protocol):
    """The CRM-specific half of a push."""

    crm: str
    stats: CallStats

    def prepare(self) -> None:
        """Check or create the ProX fields (once per push)."""
        ...

    def plan(self, records: Sequence[ScoreRecord]) -> list[list[ScoreRecord]]:
        """Split the records to push into batches (by the CRM's limits)."""
        ...

    def send(self, batch: Sequence[ScoreRecord]) -> list[RecordResult]:
        """Send one batch (retrying whole-batch transient failures) and return per-record
        results in any order; raise BatchRejected if the CRM refuses the batch as a whole."""
        ...


@dataclass
class PushReport:
    crm: str
    run_id: str
    candidates: int = 0
    to_push: int = 0
    pushed: int = 0
    rejected: int = 0
    skipped: int = 0
    batches: int = 0
    resent: int = 0
    record_retries: int = 0
    api_calls: int = 0
    stopped: str | None = None
    rejections: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ScorePusher(Protocol):
    crm: str

    def push(self, scores: pa.Table, *, full: bool = False, run_id: str | None = None) -> PushReport: ...


def format_reasons(positive: Sequence[str] | None, negative: Sequence[str] | None) -> str:
    """Human-readable top factors, one per line: '+ ...' raise the score, '- ...' lower it."""
    lines = [f"+ {r}" for r in (positive or [])] + [f"- {r}" for r in (negative or [])]
    return "\n".join(lines)


def parse_reasons(text: str | None) -> tuple[list[str], list[str]]:
    """The (positive, negative) reasons of a :func:`format_reasons` text."""
    lines = (text or "").splitlines()
    return [ln[2:] for ln in lines if ln.startswith("+ ")], [ln[2:] for ln in lines if ln.startswith("- ")]


def score_records(scores: pa.Table, crm: str) -> tuple[list[ScoreRecord], dict[str, str]]:
    """The latest score per lead of one CRM, validated; invalid rows come back as rejections
    naming the record and the field."""
    table = conform(scores, SCORES)
    table = table.filter(pc.starts_with(table["lead_id"], f"{crm}:"))
    records: dict[str, ScoreRecord] = {}
    problems: dict[str, str] = {}
    for r in table.to_pylist():
        lid = r["lead_id"]
        problem = None
        if not 1 <= r["score"] <= 99:
            problem = f"score {r['score']} outside 1-99"
        elif r["tier"] not in TIERS:
            problem = f"tier {r['tier']!r} not one of {', '.join(TIERS)}"
        elif not (0.0 <= r["probability"] <= 1.0) or math.isnan(r["probability"]):
            problem = f"probability {r['probability']} outside [0, 1]"
        if problem:
            problems[lid] = f"{lid}: {problem}"
            continue
        current = records.get(lid)
        if current is not None and current.scored_at >= r["scored_at"]:
            continue
        problems.pop(lid, None)
        records[lid] = ScoreRecord(
            lead_id=lid,
            crm_id=lid.split(":", 1)[1],
            score=int(r["score"]),
            tier=r["tier"],
            probability=float(r["probability"]),
            reasons=format_reasons(r["reasons_positive"], r["reasons_negative"]),
            model_version=str(r["model_version"]),
            scored_at=r["scored_at"],
        )
    return sorted(records.values(), key=lambda s: s.lead_id), problems


def push_scores(
    sender: BatchSender,
    state: ConnectorState,
    scores: pa.Table,
    *,
    full: bool = False,
    run_id: str | None = None,
    max_record_attempts: int = 5,
) -> PushReport:
    """Push the changed scores (all with ``full``) through ``sender``, exactly once in effect.

    Each batch is marked in flight before it is sent and closed, with every record's outcome
    and the pushed values, in one transaction after the answer. A crash in between leaves the
    batch in flight: the rerun's delta re-sends exactly those records (same values, so the
    CRM ends the same), counted as ``resent``.
    """
    crm = sender.crm
    run_id = run_id or uuid.uuid4().hex
    report = PushReport(crm=crm, run_id=run_id)
    calls_before = sender.stats.calls
    records, invalid = score_records(scores, crm)
    report.candidates = len(records) + len(invalid)
    previous = state.pushed_values(crm)
    leftover = state.inflight(crm)
    leftover_ids = {lid for ids in leftover.values() for lid in ids}
    todo, unchanged = [], []
    for rec in records:
        prev = previous.get(rec.lead_id)
        if full or prev is None or (prev.score, prev.tier) != (rec.score, rec.tier):
            todo.append(rec)
        else:
            unchanged.append(rec)
    report.to_push = len(todo)
    report.skipped = len(unchanged)
    report.resent = sum(1 for r in todo if r.lead_id in leftover_ids)
    state.record_outcomes(
        crm, run_id, [(r.lead_id, SKIPPED, "unchanged since last push", 0) for r in unchanged]
    )
    if invalid:
        state.record_outcomes(crm, run_id, [(lid, REJECTED, why, 0) for lid, why in invalid.items()])
        report.rejected += len(invalid)
        report.rejections.update(invalid)
    if todo:
        sender.prepare()
        try:
            for batch in sender.plan(todo):
                _push_batch(sender, state, run_id, batch, report, max_record_attempts)
        except RateLimitExhausted as exc:
            report.stopped = str(exc)
    if leftover and not report.stopped:
        state.clear_inflight(crm, leftover)
    report.api_calls = sender.stats.calls - calls_before
    report.stats = sender.stats.as_dict()
    return report


def _push_batch(
    sender: BatchSender,
    state: ConnectorState,
    run_id: str,
    batch: Sequence[ScoreRecord],
    report: PushReport,
    max_attempts: int,
) -> None:
    batch_id = f"{run_id}:{batch[0].lead_id}:{len(batch)}"
    by_id = {r.lead_id: r for r in batch}
    state.begin_batch(sender.crm, batch_id, run_id, list(by_id))
    report.batches += 1
    outcomes: dict[str, tuple[str, str | None, int]] = {}
    pending = list(batch)
    attempt = 0
    while pending:
        attempt += 1
        results = _send_bisecting(sender, pending)
        retry = []
        for res in results:
            if res.ok:
                outcomes[res.lead_id] = (PUSHED, None, attempt)
            elif res.transient and attempt < max_attempts:
                retry.append(by_id[res.lead_id])
            else:
                outcomes[res.lead_id] = (REJECTED, res.reason, attempt)
        answered = {r.lead_id for r in results}
        for rec in pending:  # a CRM that says nothing about a record has not taken it
            if rec.lead_id in answered:
                continue
            if attempt < max_attempts:
                retry.append(rec)
            else:
                outcomes[rec.lead_id] = (REJECTED, "no answer from the CRM for this record", attempt)
        if retry:
            report.record_retries += len(retry)
        pending = retry
    pushed = [(lid, by_id[lid].values()) for lid, (o, _r, _a) in outcomes.items() if o == PUSHED]
    state.finish_batch(
        sender.crm, batch_id, run_id, [(lid, o, r, a) for lid, (o, r, a) in outcomes.items()], pushed
    )
    for lid, (o, r, _a) in outcomes.items():
        if o == PUSHED:
            report.pushed += 1
        else:
            report.rejected += 1
            report.rejections[lid] = r or "rejected"


def _send_bisecting(sender: BatchSender, records: Sequence[ScoreRecord]) -> list[RecordResult]:
    """Send; when the CRM rejects the batch as a whole, split it to isolate the bad records."""
    try:
        return sender.send(records)
    except BatchRejected as exc:
        if len(records) == 1:
            return [RecordResult(records[0].lead_id, ok=False, reason=str(exc))]
        mid = len(records) // 2
        return _send_bisecting(sender, records[:mid]) + _send_bisecting(sender, records[mid:])


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
