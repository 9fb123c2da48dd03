"""The CRM views round-trip: canonical rows -> what each CRM holds -> canonical rows again."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from plugins.crm import fields as crm_views
from sandbox.world import WorldSpec, simulate_world

pytestmark = [pytest.mark.unit]


@pytest.fixture(scope="module")
def world():
    return simulate_world(WorldSpec(n_leads=300, days=120, seed=21))


def _json_roundtrip(records: list[dict]) -> list[dict]:
    import json

    return json.loads(json.dumps(records))  # what travels over the wire


def test_leads_round_trip_through_both_crms(world) -> None:
    sf = crm_views.leads_from_salesforce(_json_roundtrip(crm_views.sf_lead_records(world.raw_leads)))
    hs = crm_views.leads_from_hubspot(_json_roundtrip(crm_views.hs_contact_records(world.raw_leads)))
    got = pa.concat_tables([sf, hs]).sort_by("lead_id")
    assert got.equals(crm_views.crm_visible(world.raw_leads, "raw_leads").sort_by("lead_id"))


def test_activities_round_trip_through_tasks_events_engagements_and_the_export(world) -> None:
    tasks, events = crm_views.sf_activity_records(world.activities)
    objects, hs_events = crm_views.hs_activity_records(world.activities)
    parts = [
        crm_views.activities_from_salesforce(_json_roundtrip(tasks), "Task"),
        crm_views.activities_from_salesforce(_json_roundtrip(events), "Event"),
        crm_views.activities_from_hubspot_events(_json_roundtrip(hs_events)),
    ]
    for obj, records in objects.items():
        recs = [{"id": r["id"], "properties": r["properties"], "contacts": [r["contact"]]} for r in records]
        parts.append(crm_views.activities_from_hubspot_objects(_json_roundtrip(recs), obj))
    web = crm_views.web_tracking_rows(world.activities)
    file_rows = pa.table(
        {
            "event_id": web["event_id"],
            "lead_id": pc.binary_join_element_wise(web["crm"], web["crm_lead_id"], ":"),
            "source": pa.array(["file"] * web.num_rows),
            "occurred_at": web["timestamp"],
            "channel": web["channel"],
            "action": web["action"],
            "detail": web["detail"],
            "value": web["value"],
        }
    )
    got = pa.concat_tables([*parts, crm_views.crm_visible(file_rows, "activities")]).sort_by("event_id")
    assert got.equals(crm_views.crm_visible(world.activities, "activities").sort_by("event_id"))


def test_statuses_and_activity_subjects_are_readable_in_the_crm(world) -> None:
    leads = crm_views.sf_lead_records(world.raw_leads)
    assert {r["Status"] for r in leads} <= set(crm_views.SF_STATUS.values())
    tasks, _ = crm_views.sf_activity_records(world.activities)
    assert all(t["Subject"].startswith("[") for t in tasks)
    with pytest.raises(ValueError, match="activity 00TBAD: Subject"):
        crm_views.activities_from_salesforce([{**tasks[0], "Id": "00TBAD", "Subject": "no action"}], "Task")


@pytest.mark.parametrize(
    "text", ["2026-03-01T10:15:00.123+0000", "2026-03-01T10:15:00.123Z", "2026-03-01T11:15:00.123+01:00"]
)
def test_both_crms_datetime_forms_parse_to_the_same_instant(text: str) -> None:
    assert crm_views.parse_datetime(text) == dt.datetime(2026, 3, 1, 10, 15, 0, 123000, tzinfo=dt.UTC)


def test_crm_visible_truncates_to_milliseconds_and_salesforce_conversions_to_days(world) -> None:
    seen = crm_views.crm_visible(world.raw_leads, "raw_leads")
    micros = pc.cast(seen["created_at"], pa.int64()).to_numpy() % 1000
    assert (micros == 0).all()
    sf = seen.filter(pc.and_(pc.equal(seen["source"], "salesforce"), pc.is_valid(seen["converted_at"])))
    assert sf.num_rows > 0
    assert all(t.hour == 0 and t.minute == 0 for t in sf["converted_at"].to_pylist())
