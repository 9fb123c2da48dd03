"""HubSpot first loads through the CRM exports API, against the sandbox over HTTPS.

What matters: a first load by export gives the same raw tables as the paged list API (and as
the world, at CRM precision) for a few calls instead of one per 100 records; the next night
continues with search from the export's watermark and picks up exactly the changes; a used-up
export quota or a canceled export falls back to the pages with the same result; a retry after
a crash mid-export neither starts a second export nor loses or doubles rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.lake import Lake
from plugins.crm import fields as crm_views
from tests.integration.test_crm_extract import _same

pytestmark = [pytest.mark.integration]

RUN1 = dt.date(2026, 11, 2)
RUN2 = dt.date(2026, 11, 3)
OBJECTS = ("contacts", "emails", "calls", "meetings")


def _raw(lake: Lake, table: str, run_date: dt.date) -> pa.Table:
    parts = [lake.read(p) for p in lake.partitions("raw", table, sources=["hubspot"], run_dates=[run_date])]
    return pa.concat_tables(parts)


def _hubspot(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["source"], "hubspot"))


def _world(world, table: str) -> pa.Table:
    raw = world.raw_leads if table == "raw_leads" else world.activities
    return _hubspot(crm_views.crm_visible(raw, table))


def _exports(sandbox) -> list[dict]:
    """The exports the sandbox's portal has started (its own record, for the assertions)."""
    from sandbox import server

    store = server.open_store(sandbox.directory)
    try:
        found = store.get_job("hs-exports")
        return found[0]["tasks"] if found else []
    finally:
        store.close()


def _counts(sandbox) -> dict[str, int]:
    from sandbox import server

    store = server.open_store(sandbox.directory)
    try:
        return {o: store.count("hubspot", o) for o in OBJECTS}
    finally:
        store.close()


def _hs(crm, sandbox, path, **options):
    _, hs, _ = crm.connectors(sandbox, path)
    hs.export_poll_seconds = 0.001  # the sandbox finishes exports by polls, not by time
    for name, value in options.items():
        setattr(hs, name, value)
    return hs


def test_first_load_by_export_equals_the_pages_for_far_fewer_calls(
    sandbox, crm, small_world, tmp_path
) -> None:
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sandbox.set_faults(hubspot_rate_limit=None, hubspot_search_per_second=None, hubspot_export_polls=2)
    counts = _counts(sandbox)
    usage_before = sandbox.stats()["usage"]["hubspot"]

    hs = _hs(crm, sandbox, tmp_path / "export")
    lake = Lake(tmp_path / "export" / "lake")
    by_export = hs.extract(lake, RUN1)
    api_calls = sandbox.stats()["usage"]["hubspot"] - usage_before
    assert len(_exports(sandbox)) == 4  # one export per object

    paged = _hs(crm, sandbox, tmp_path / "paged", use_exports=False)
    paged_lake = Lake(tmp_path / "paged" / "lake")
    by_pages = paged.extract(paged_lake, RUN1)
    assert len(_exports(sandbox)) == 4

    for table, key in (("raw_leads", "lead_id"), ("activities", "event_id")):
        _same(_raw(paged_lake, table, RUN1), _raw(lake, table, RUN1), key)
        _same(_world(small_world, table), _raw(lake, table, RUN1), key)
    # the same watermarks: the next night starts where the paged load would have
    for obj in OBJECTS:
        assert hs.state.watermark(f"hubspot.{obj}") == paged.state.watermark(f"hubspot.{obj}")

    # per object: 1 start + 3 status polls (2 in progress, then complete) + 1 download, instead
    # of one list call per 100 records; the web events stay on the events API in both
    list_calls = sum(math.ceil(n / 100) for n in counts.values())
    export_calls = 4 * (1 + 3 + 1)
    assert by_export[0].api_calls == 5 and by_pages[0].api_calls == math.ceil(counts["contacts"] / 100)
    assert hs.stats.calls == paged.stats.calls - list_calls + export_calls
    assert hs.stats.calls < paged.stats.calls - 40
    # start and status count against the portal's rate limit; the signed file URL does not
    assert api_calls == hs.stats.calls - 4


def test_the_next_night_continues_incrementally_with_exactly_the_changes(
    sandbox, crm, small_world, tmp_path
) -> None:
    world = small_world
    acts = world.activities
    cut = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    late = pc.greater_equal(acts["occurred_at"], pa.scalar(cut, acts.schema.field("occurred_at").type))
    crm.load(sandbox, world.raw_leads, acts.filter(pc.invert(late)))
    hs = _hs(crm, sandbox, tmp_path)
    lake = Lake(tmp_path / "lake")
    hs.extract(lake, RUN1)
    _same(_world(world, "raw_leads"), _raw(lake, "raw_leads", RUN1), "lead_id")
    early = world.activities.filter(pc.invert(late))
    _same(_hubspot(crm_views.crm_visible(early, "activities")), _raw(lake, "activities", RUN1), "event_id")
    assert len(_exports(sandbox)) == 4

    # the CRM moves on: new engagement arrives and 40 contacts are written (scores pushed)
    crm.load(sandbox, world.raw_leads.slice(0, 0), acts.filter(late))
    changed = sorted(_raw(lake, "raw_leads", RUN1)["lead_id"].to_pylist())[:40]
    assert hs.push(crm.make_scores(changed, seed=3)).pushed == 40

    results = hs.extract(lake, RUN2)
    assert not any(r.full_refresh for r in results)
    assert len(_exports(sandbox)) == 4  # no export for an increment
    assert sorted(_raw(lake, "raw_leads", RUN2)["lead_id"].to_pylist()) == changed
    _same(
        _hubspot(crm_views.crm_visible(acts.filter(late), "activities")),
        _raw(lake, "activities", RUN2),
        "event_id",
    )
    empty = hs.extract(lake, dt.date(2026, 11, 4))
    assert [r.rows for r in empty] == [0, 0]


@pytest.mark.parametrize(
    "faults, why",
    [
        ({"hubspot_exports_per_day": 2}, "exports in a rolling 24 hours"),
        ({"hubspot_export_outcome": "CANCELED"}, "CANCELED"),
    ],
    ids=["quota-used-up", "canceled"],
)
def test_without_an_export_the_pages_give_the_same_tables(
    sandbox, crm, small_world, tmp_path, caplog, faults, why
) -> None:
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sandbox.set_faults(hubspot_rate_limit=None, hubspot_search_per_second=None, **faults)
    hs = _hs(crm, sandbox, tmp_path)
    lake = Lake(tmp_path / "lake")
    with caplog.at_level(logging.WARNING, logger="plugins.crm.hubspot"):
        hs.extract(lake, RUN1)
    fallbacks = [
        r.getMessage() for r in caplog.records if "reading with the list API instead" in r.getMessage()
    ]
    assert fallbacks and all(why in m for m in fallbacks), fallbacks
    assert len(fallbacks) == (2 if "hubspot_exports_per_day" in faults else 4)
    assert hs.stats.retries == 0  # a used-up daily quota is not retried
    for table, key in (("raw_leads", "lead_id"), ("activities", "event_id")):
        _same(_world(small_world, table), _raw(lake, table, RUN1), key)


def test_a_retry_after_a_crash_mid_export_neither_loses_nor_doubles_rows(
    sandbox, crm, small_world, tmp_path
) -> None:
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sandbox.set_faults(hubspot_rate_limit=None, hubspot_search_per_second=None, hubspot_export_polls=3)
    lake = Lake(tmp_path / "lake")

    class Crash(Exception):
        pass

    def crash_while_polling(stream: str, poll: int) -> None:
        if stream == "hubspot.contacts" and poll == 2:
            raise Crash(stream)

    # the worker dies while the contacts export is in progress; the retried task polls it
    hs = _hs(crm, sandbox, tmp_path, on_export_poll=crash_while_polling)
    with pytest.raises(Crash):
        hs.extract(lake, RUN1, tables=("raw_leads",))
    assert len(_exports(sandbox)) == 1
    retried = _hs(crm, sandbox, tmp_path)
    (leads,) = retried.extract(lake, RUN1, tables=("raw_leads",))
    assert len(_exports(sandbox)) == 1 and leads.api_calls == 3  # 2 more polls, the download
    _same(_world(small_world, "raw_leads"), _raw(lake, "raw_leads", RUN1), "lead_id")

    # the worker dies after two committed pages of the emails export; the retry reads the rest
    def crash_after_two(stream: str, page: int) -> None:
        if page == 2:
            raise Crash(stream)

    hs = _hs(crm, sandbox, tmp_path, commit_rows=1_000)
    with pytest.raises(Crash):
        hs.extract(lake, RUN1, tables=("activities",), on_commit=crash_after_two)
    assert len(_exports(sandbox)) == 2 and hs.state.watermark("hubspot.emails") is None
    retried = _hs(crm, sandbox, tmp_path, commit_rows=1_000)
    (acts,) = retried.extract(lake, RUN1, tables=("activities",))
    assert acts.resumed_pages == 2
    assert len(_exports(sandbox)) == 4  # the emails export was read again, not started again
    _same(_world(small_world, "activities"), _raw(lake, "activities", RUN1), "event_id")
