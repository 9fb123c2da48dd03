"""Extraction from the CRM sandbox over HTTPS with the real client libraries.

What matters: the lake's raw partitions hold exactly what the simulated world put in the CRMs
(counts and every value, at the CRMs' precision), incremental windows return exactly the
changed records, a crash mid-extract resumes from the last committed page, and faults do not
change the result.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.contract import RAW_LEADS, conform
from features.lake import Lake
from plugins.crm import fields as crm_views

pytestmark = [pytest.mark.integration]

RUN1 = dt.date(2026, 11, 2)
RUN2 = dt.date(2026, 11, 3)


def _raw(lake: Lake, table: str, run_date: dt.date, sources: tuple[str, ...]) -> pa.Table:
    parts = [lake.read(p) for p in lake.partitions("raw", table, sources=sources, run_dates=[run_date])]
    return pa.concat_tables(parts)


def _same(expected: pa.Table, got: pa.Table, key: str) -> None:
    """Exact equality, with a readable message naming the first differing column and record."""
    order = [(key, "ascending")] + ([("lead_id", "ascending")] if key != "lead_id" else [])
    expected, got = expected.sort_by(order), got.sort_by(order)
    assert got.num_rows == expected.num_rows, f"{got.num_rows} rows extracted, {expected.num_rows} expected"
    for name in expected.column_names:
        if not expected[name].equals(got[name]):
            e, g = expected[name].to_pylist(), got[name].to_pylist()
            i = next(i for i in range(len(e)) if e[i] != g[i] and not (e[i] != e[i] and g[i] != g[i]))
            pytest.fail(f"column {name}, record {expected[key][i]}: expected {e[i]!r}, got {g[i]!r}")


def test_full_extraction_matches_the_world(sandbox, crm, small_world, tmp_path) -> None:
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sf, hs, web = crm.connectors(sandbox, tmp_path)
    lake = Lake(tmp_path / "lake")
    results = sf.extract(lake, RUN1) + hs.extract(lake, RUN1) + web.extract(lake, RUN1)
    assert all(r.api_calls > 0 and not r.reused for r in results)

    _same(
        crm_views.crm_visible(small_world.raw_leads, "raw_leads"),
        _raw(lake, "raw_leads", RUN1, ("salesforce", "hubspot")),
        "lead_id",
    )
    _same(
        crm_views.crm_visible(small_world.activities, "activities"),
        _raw(lake, "activities", RUN1, ("salesforce", "hubspot", "file")),
        "event_id",
    )

    # a rerun of the same run date returns the same partition and calls no API
    again = sf.extract(lake, RUN1) + hs.extract(lake, RUN1)
    assert all(r.reused and r.api_calls == 0 for r in again)
    assert [r.rows for r in again] == [r.rows for r in results[:4]]


def test_incremental_extraction_returns_exactly_the_changes(sandbox, crm, small_world, tmp_path) -> None:
    world = small_world
    cut = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    leads, acts = world.raw_leads, world.activities
    late = pc.greater_equal(leads["updated_at"], pa.scalar(cut, leads.schema.field("updated_at").type))
    existed = pc.less(leads["created_at"], pa.scalar(cut, leads.schema.field("created_at").type))
    # before the cut: leads created by then, those changed later still in an older state
    old = leads.filter(pc.and_(existed, late))
    old = old.set_column(old.schema.get_field_index("updated_at"), "updated_at", old["created_at"])
    old = old.set_column(old.schema.get_field_index("status"), "status", pa.array(["open"] * old.num_rows))
    for col in ("converted", "converted_at"):
        i = old.schema.get_field_index(col)
        old = old.set_column(
            i,
            col,
            pa.nulls(old.num_rows, old.schema.field(col).type).fill_null(False)
            if col == "converted"
            else pa.nulls(old.num_rows, old.schema.field(col).type),
        )
    first_leads = pa.concat_tables([leads.filter(pc.invert(late)), conform(old, RAW_LEADS)])
    act_late = pc.greater_equal(acts["occurred_at"], pa.scalar(cut, acts.schema.field("occurred_at").type))
    crm.load(sandbox, first_leads, acts.filter(pc.invert(act_late)))

    sf, hs, web = crm.connectors(sandbox, tmp_path)
    lake = Lake(tmp_path / "lake")
    for conn in (sf, hs, web):
        conn.extract(lake, RUN1)
    _same(
        crm_views.crm_visible(first_leads, "raw_leads"),
        _raw(lake, "raw_leads", RUN1, ("salesforce", "hubspot")),
        "lead_id",
    )

    # the rest of the world arrives: changed leads, new leads, new activity
    crm.load(sandbox, leads.filter(late), acts.filter(act_late))
    sandbox.set_faults(
        hubspot_rate_limit=100, hubspot_search_per_second=5
    )  # the real limits, search included
    results = sf.extract(lake, RUN2) + hs.extract(lake, RUN2) + web.extract(lake, RUN2)
    assert not any(r.full_refresh for r in results)
    assert sandbox.stats()["faults"].get("rate_limited", 0) >= 1 and hs.stats.waited_seconds >= 1
    _same(
        crm_views.crm_visible(leads.filter(late), "raw_leads"),
        _raw(lake, "raw_leads", RUN2, ("salesforce", "hubspot")),
        "lead_id",
    )
    _same(
        crm_views.crm_visible(acts.filter(act_late), "activities"),
        _raw(lake, "activities", RUN2, ("salesforce", "hubspot", "file")),
        "event_id",
    )

    # the two windows together are the world (latest version of each lead wins)
    both = pa.concat_tables([_raw(lake, "raw_leads", d, ("salesforce", "hubspot")) for d in (RUN1, RUN2)])
    both = both.sort_by([("lead_id", "ascending"), ("updated_at", "descending")])
    keep = [True] + [
        a != b for a, b in zip(both["lead_id"].to_pylist()[1:], both["lead_id"].to_pylist()[:-1], strict=True)
    ]
    _same(crm_views.crm_visible(leads, "raw_leads"), both.filter(pa.array(keep)), "lead_id")

    # nothing new: the next window is empty, and same-millisecond boundaries do not repeat rows
    empty = sf.extract(lake, dt.date(2026, 11, 4)) + hs.extract(lake, dt.date(2026, 11, 4))
    assert [r.rows for r in empty] == [0, 0, 0, 0]
    # a full refresh on request reads everything again
    (full,) = sf.extract(lake, dt.date(2026, 11, 5), full_refresh=True, tables=("raw_leads",))
    assert full.full_refresh and full.rows == pc.sum(pc.equal(leads["source"], "salesforce")).as_py()


def test_extraction_resumes_from_the_last_committed_page(sandbox, crm, small_world, tmp_path) -> None:
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sf, hs, _ = crm.connectors(sandbox, tmp_path)
    sf.commit_rows = hs.commit_rows = 1_000
    sf.bulk_query_page = 1_000
    lake = Lake(tmp_path / "lake")

    class Crash(Exception):
        pass

    def crash_after_two(stream: str, page: int) -> None:
        if page == 2:
            raise Crash(stream)

    clean_sf, clean_hs, _ = crm.connectors(sandbox, tmp_path / "clean")
    clean_sf.bulk_query_page = 1_000
    for conn, clean in ((sf, clean_sf), (hs, clean_hs)):
        with pytest.raises(Crash):
            conn.extract(lake, RUN1, tables=("activities",), on_commit=crash_after_two)
        assert not lake.partitions("raw", "activities", sources=[conn.source])  # nothing half-written
        assert (
            conn.state.watermark(f"{conn.source}.{'Task' if conn.source == 'salesforce' else 'emails'}")
            is None
        )
        (result,) = conn.extract(lake, RUN1, tables=("activities",))
        assert result.resumed_pages == 2
        clean.extract(Lake(tmp_path / "clean" / "lake"), RUN1, tables=("activities",))
        # the crashed run plus the resumed one read each page once (plus one login / job status)
        assert conn.stats.calls <= clean.stats.calls + 2, (conn.stats.calls, clean.stats.calls)
    expected = crm_views.crm_visible(small_world.activities, "activities")
    expected = expected.filter(pc.not_equal(expected["source"], "file"))
    _same(expected, _raw(lake, "activities", RUN1, ("salesforce", "hubspot")), "event_id")


def test_extraction_is_exact_under_faults_and_expiring_tokens(sandbox, crm, small_world, tmp_path) -> None:
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sandbox.set_faults(
        error_rate=0.1,
        drop_rate=0.05,
        slow_rate=0.05,
        slow_seconds=0.05,
        token_ttl_requests=40,
        seed=3,
        hubspot_rate_limit=None,
    )
    sf, hs, _ = crm.connectors(sandbox, tmp_path)
    sf.bulk_query_page = 250  # more pages, more calls for the faults to hit
    lake = Lake(tmp_path / "lake")
    sf.extract(lake, RUN1)
    hs.extract(lake, RUN1)
    stats = sandbox.stats()["faults"]
    assert stats.get("5xx", 0) > 0 and stats.get("dropped", 0) > 0
    assert sf.stats.retries > 0 and sf.stats.refreshes > 0
    assert hs.stats.retries > 0
    _same(
        crm_views.crm_visible(small_world.raw_leads, "raw_leads"),
        _raw(lake, "raw_leads", RUN1, ("salesforce", "hubspot")),
        "lead_id",
    )
    crm_acts = small_world.activities.filter(pc.not_equal(small_world.activities["source"], "file"))
    _same(
        crm_views.crm_visible(crm_acts, "activities"),
        _raw(lake, "activities", RUN1, ("salesforce", "hubspot")),
        "event_id",
    )
