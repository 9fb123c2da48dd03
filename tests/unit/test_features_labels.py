"""Labels for snapshots, and the stacked training set."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from features.build import FeatureInputError
from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS
from features.labels import build_training_set, label_snapshot, snapshot_times
from features.spec import FEATURE_NAMES

pytestmark = pytest.mark.unit

T = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def lead(lead_id: str, created: dt.datetime, converted_at: dt.datetime | None = None) -> dict:
    return {
        "lead_id": lead_id,
        "source": "hubspot",
        "crm_id": lead_id.split(":")[1],
        "created_at": created,
        "updated_at": created,
        "email_domain": "x.com",
        "company_domain": "x.com",
        "converted": converted_at is not None,
        "converted_at": converted_at,
        "status": "converted" if converted_at else "open",
    }


def history(rows: list[tuple[str, dt.datetime, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"lead_id": lid, "source": "hubspot", "changed_at": at, "status": s} for lid, at, s in rows],
        schema=LEAD_STATUS_HISTORY,
    )


@pytest.fixture
def crm() -> tuple[pa.Table, pa.Table]:
    leads = pa.Table.from_pylist(
        [
            lead("hubspot:soon", T - 20 * DAY, converted_at=T + 10 * DAY),  # converts inside the horizon
            lead("hubspot:late", T - 20 * DAY, converted_at=T + 91 * DAY),  # after it
            lead("hubspot:done", T - 50 * DAY, converted_at=T - DAY),  # already converted: left out
            lead("hubspot:lost", T - 50 * DAY),  # unqualified at T: left out
            lead("hubspot:open", T - 5 * DAY),  # never converts
            lead("hubspot:new", T + DAY, converted_at=T + 5 * DAY),  # not created yet: left out
            lead("hubspot:hist", T - 9 * DAY),  # conversion only in the status history
            lead("hubspot:back", T - 60 * DAY),  # unqualified before T, reopened before T
        ],
        schema=LEADS,
    )
    hist = history(
        [
            ("hubspot:lost", T - 10 * DAY, "unqualified"),
            ("hubspot:hist", T + 30 * DAY, "converted"),
            ("hubspot:back", T - 30 * DAY, "unqualified"),
            ("hubspot:back", T - 3 * DAY, "nurturing"),
            ("hubspot:open", T + 40 * DAY, "unqualified"),  # closed only after T: still labelled
        ]
    )
    return leads, hist


def test_labels_follow_the_horizon_and_leave_out_closed_leads(crm) -> None:
    leads, hist = crm
    labels = label_snapshot(leads, hist, T, horizon_days=90)
    got = dict(zip(labels["lead_id"].to_pylist(), labels["label"].to_pylist(), strict=True))
    assert got == {
        "hubspot:soon": True,
        "hubspot:late": False,
        "hubspot:open": False,
        "hubspot:hist": True,
        "hubspot:back": False,
    }
    wider = label_snapshot(leads, hist, T, horizon_days=95)
    assert wider["label"].to_pylist().count(True) == 3  # "late" converts on day 91


def test_default_horizon_comes_from_settings(crm, monkeypatch) -> None:
    leads, hist = crm
    monkeypatch.setenv("PROX_LABEL_HORIZON_DAYS", "15")
    got = dict(
        zip(*label_snapshot(leads, hist, T).select(["lead_id", "label"]).to_pydict().values(), strict=True)
    )
    assert got["hubspot:soon"] is True and got["hubspot:hist"] is False


def test_training_set_stacks_open_leads_with_their_features(crm) -> None:
    leads, hist = crm
    events = pa.Table.from_pylist(
        [
            {
                "event_id": "e1",
                "lead_id": "hubspot:soon",
                "source": "hubspot",
                "occurred_at": T - DAY,
                "channel": "web",
                "action": "visit",
                "detail": "/pricing",
            },
            {
                "event_id": "e2",
                "lead_id": "hubspot:soon",
                "source": "hubspot",
                "occurred_at": T + 2 * DAY,
                "channel": "web",
                "action": "visit",
                "detail": "/pricing",
            },
        ],
        schema=ACTIVITIES,
    )
    snaps = [T - 10 * DAY, T]
    table, reports = build_training_set(
        leads, events, hist, snaps, horizon_days=90, observed_until=T + 200 * DAY
    )
    assert len(reports) == 2
    assert table.column_names == ["lead_id", "as_of", *FEATURE_NAMES, "label"]
    first = table.filter(pa.compute.equal(table["as_of"], pa.scalar(snaps[0], pa.timestamp("us", tz="UTC"))))
    second = table.filter(pa.compute.equal(table["as_of"], pa.scalar(snaps[1], pa.timestamp("us", tz="UTC"))))
    # 10 days earlier "done" and "lost" were still open, "open" and "hist" not created, "back" closed
    assert sorted(first["lead_id"].to_pylist()) == [
        "hubspot:done",
        "hubspot:late",
        "hubspot:lost",
        "hubspot:soon",
    ]
    assert second.num_rows == 5
    soon = second.filter(pa.compute.equal(second["lead_id"], "hubspot:soon")).to_pylist()[0]
    assert soon["n_pricing_visits_7d"] == 1 and soon["label"] is True  # the visit after T is not seen


def test_snapshots_whose_horizon_outruns_the_data_are_refused(crm) -> None:
    leads, hist = crm
    with pytest.raises(FeatureInputError, match=r"snapshot 2026-03-01.*observed until"):
        build_training_set(
            leads, ACTIVITIES.empty_table(), hist, [T], horizon_days=90, observed_until=T + 30 * DAY
        )
    with pytest.raises(FeatureInputError, match="no snapshot"):
        build_training_set(leads, ACTIVITIES.empty_table(), hist, [], horizon_days=90)
    assert snapshot_times(T, T + 20 * DAY, 7) == [T, T + 7 * DAY, T + 14 * DAY]
