"""Point-in-time feature builder on small hand-made and synthetic tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.build import FeatureInputError, build_features, is_open
from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS
from features.hashing import HashIndex, duplicate_rows, hash64, hash_strings
from features.spec import FEATURE_NAMES, FEATURES
from tests.fixtures.synthetic_features import synthetic_inputs

pytestmark = pytest.mark.unit

T = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def lead(lead_id: str, created: dt.datetime, **fields: Any) -> dict[str, Any]:
    row = {
        "lead_id": lead_id,
        "source": lead_id.split(":")[0],
        "crm_id": lead_id.split(":")[1],
        "created_at": created,
        "updated_at": created,
        "email_domain": "acme.com",
        "company": "Acme",
        "company_domain": "acme.com",
        "industry": "Software",
        "employees": 120,
        "annual_revenue": 2e7,
        "country": "US",
        "title": "VP Sales",
        "lead_source": "Web",
        "status": "open",
        "converted": False,
        "converted_at": None,
        "consent_processing": True,
        "opted_out": False,
        "email_hash": "h",
    }
    row.update(fields)
    return row


def event(
    event_id: str, lead_id: str, at: dt.datetime, channel: str, action: str, detail: str | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "lead_id": lead_id,
        "source": "hubspot",
        "occurred_at": at,
        "channel": channel,
        "action": action,
        "detail": detail,
        "value": None,
    }


def status(lead_id: str, at: dt.datetime, value: str) -> dict[str, Any]:
    return {"lead_id": lead_id, "source": lead_id.split(":")[0], "changed_at": at, "status": value}


def tables(leads: list[dict], events: list[dict], history: list[dict]) -> tuple[pa.Table, pa.Table, pa.Table]:
    return (
        pa.Table.from_pylist(leads, schema=LEADS),
        pa.Table.from_pylist(events, schema=ACTIVITIES),
        pa.Table.from_pylist(history, schema=LEAD_STATUS_HISTORY),
    )


def row_of(features: pa.Table, lead_id: str) -> dict[str, Any]:
    rows = features.filter(pc.equal(features["lead_id"], lead_id)).to_pylist()
    assert len(rows) == 1, f"{lead_id}: {len(rows)} rows"
    return rows[0]


def test_output_follows_the_spec() -> None:
    leads, acts, hist = tables([lead("hubspot:1", T - 10 * DAY)], [], [])
    features, _ = build_features(leads, acts, hist, T)
    assert features.column_names == ["lead_id", "as_of", *FEATURE_NAMES]
    expected = {"category": pa.string(), "int32": pa.int32(), "float64": pa.float64()}
    for spec in FEATURES:
        assert features.schema.field(spec.name).type == expected[spec.dtype], spec.name
    assert features["as_of"][0].as_py() == T


def test_planted_future_event_cannot_leak() -> None:
    lid = "hubspot:1"
    leads, acts, hist = tables(
        [lead(lid, T - 30 * DAY)],
        [
            event("e1", lid, T - DAY, "web", "visit", "/pricing"),
            event("e2", lid, T, "web", "visit", "/pricing"),  # exactly at T: not known yet
            event("e3", lid, T + dt.timedelta(seconds=1), "meeting", "booked", "Product Demo"),
        ],
        [],
    )
    row = row_of(build_features(leads, acts, hist, T)[0], lid)
    assert row["n_pricing_visits_7d"] == 1
    assert row["n_web_visit_7d"] == 1
    assert row["n_meeting_booked_90d"] == 0
    assert row["days_since_last_web"] == pytest.approx(1.0)
    assert row["days_since_last_meeting"] is None  # no meeting known: missing, not 0
    assert row["n_high_intent_7d"] == 1


def test_window_edges() -> None:
    lid = "hubspot:1"
    at = [7 * DAY, 7 * DAY - dt.timedelta(seconds=1), 30 * DAY, 90 * DAY, 90 * DAY - dt.timedelta(seconds=1)]
    leads, acts, hist = tables(
        [lead(lid, T - 200 * DAY)],
        [event(f"e{i}", lid, T - a, "email", "open", "News") for i, a in enumerate(at)],
        [],
    )
    row = row_of(build_features(leads, acts, hist, T)[0], lid)
    assert (row["n_email_open_7d"], row["n_email_open_30d"], row["n_email_open_90d"]) == (1, 2, 4)
    assert (row["active_days_7d"], row["active_days_30d"], row["active_days_90d"]) == (1, 2, 4)
    assert row["days_to_first_engagement"] == pytest.approx(200 - 90)


def test_status_is_the_one_held_at_as_of() -> None:
    lid = "salesforce:00Q1"
    leads, acts, hist = tables(
        [lead(lid, T - 40 * DAY, status="converted", converted=True, converted_at=T + 5 * DAY)],
        [],
        [
            status(lid, T - 40 * DAY, "open"),
            status(lid, T - 10 * DAY, "working"),
            status(lid, T + 4 * DAY, "qualified"),
            status(lid, T + 5 * DAY, "converted"),
        ],
    )
    features, report = build_features(leads, acts, hist, T)
    row = row_of(features, lid)
    assert row["status"] == "working"
    assert row["days_in_status"] == pytest.approx(10.0)
    assert is_open(features).to_pylist() == [True]
    assert report.leads_without_status == 0


def _perturb_after(
    leads: pa.Table, acts: pa.Table, hist: pa.Table, as_of: dt.datetime, seed: int
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Everything that may change after ``as_of`` without changing what was known at it."""
    rng = np.random.default_rng(seed)
    n = leads.num_rows
    later = [as_of + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 90 * 86_400, 50)]
    ids = leads["lead_id"].to_pylist()
    # outcome and state fields rewritten as they would stand later
    changed = leads
    for name, values in {
        "status": pa.array(rng.choice(["converted", "unqualified", "qualified"], n).tolist()),
        "converted": pa.array(rng.random(n) < 0.5),
        "converted_at": pa.array(
            [as_of + dt.timedelta(days=int(d)) for d in rng.integers(0, 50, n)], pa.timestamp("us", tz="UTC")
        ),
        "updated_at": pa.array([as_of + DAY] * n, pa.timestamp("us", tz="UTC")),
        "opted_out": pa.array(rng.random(n) < 0.5),
        "consent_processing": pa.array(rng.random(n) < 0.5),
    }.items():
        changed = changed.set_column(changed.schema.get_field_index(name), name, values)
    # new leads created at or after as_of in existing accounts, with events before as_of
    domains = leads["company_domain"].to_pylist()
    newcomers = [
        lead(f"hubspot:9{i}", later[i], company_domain=domains[i], email_domain=domains[i]) for i in range(5)
    ]
    changed = pa.concat_tables([changed.cast(LEADS), pa.Table.from_pylist(newcomers, schema=LEADS)])
    old_ids = acts["event_id"].to_pylist()
    extra = [event(f"late{i}", ids[i % n], later[i], "web", "visit", "/demo") for i in range(30)]
    extra += [
        event(old_ids[i], ids[i], later[i], "meeting", "booked") for i in range(10)
    ]  # reused ids, later
    extra += [
        event(f"early{i}", f"hubspot:9{i}", as_of - DAY, "form", "submit", "demo-request") for i in range(5)
    ]
    extra += [event(f"ghost{i}", "hubspot:nobody", later[i], "web", "visit", "/") for i in range(5)]
    acts2 = pa.concat_tables([acts, pa.Table.from_pylist(extra, schema=ACTIVITIES)])
    acts2 = acts2.take(pa.array(rng.permutation(acts2.num_rows)))  # file order must not matter either
    hist2 = pa.concat_tables(
        [
            hist,
            pa.Table.from_pylist(
                [status(ids[i], later[i], "converted") for i in range(20)], schema=LEAD_STATUS_HISTORY
            ),
        ]
    )
    return changed, acts2, hist2


@pytest.mark.parametrize("seed", [1, 2])
def test_anything_after_as_of_changes_nothing(seed: int) -> None:
    leads, acts, hist = synthetic_inputs(400, 30_000, seed=seed, dirt_rate=0.03)
    as_of = dt.datetime(2026, 7, 15, tzinfo=dt.UTC)
    before, _ = build_features(leads, acts, hist, as_of)
    after, _ = build_features(*_perturb_after(leads, acts, hist, as_of, seed), as_of)
    assert before.num_rows > 100
    assert after.equals(before)


def test_same_as_building_from_what_was_known() -> None:
    leads, acts, hist = synthetic_inputs(300, 20_000, seed=3, dirt_rate=0.03)
    as_of = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    ts = pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    known_leads = leads.filter(pc.less(leads["created_at"], ts))
    known_acts = acts.filter(pc.less(acts["occurred_at"], ts))
    known_hist = hist.filter(pc.less(hist["changed_at"], ts))
    full, _ = build_features(leads, acts, hist, as_of)
    truncated, _ = build_features(known_leads, known_acts, known_hist, as_of)
    assert full.equals(truncated)


def test_dirty_events_are_counted_not_fatal() -> None:
    a, b = "hubspot:1", "hubspot:2"
    leads, acts, hist = tables(
        [lead(a, T - 30 * DAY), lead(b, T - 30 * DAY, industry=None, title=None, country="Atlantis")],
        [
            event("e1", a, T - DAY, "web", "visit", "/pricing"),
            event("e1", a, T - DAY, "web", "visit", "/pricing"),  # duplicate
            event("e1", a, T - 2 * DAY, "web", "visit", "/pricing"),  # same id, earlier copy wins
            event("e2", a, T - DAY, "EMAIL", "Opened", "News"),  # casing and spelling repaired
            event("e3", a, T - DAY, "carrier-pigeon", "visit", None),  # unknown channel
            event("e4", "hubspot:404", T - DAY, "web", "visit", "/"),  # unknown lead
            event("e5", b, T - DAY, "web", "teleport", "/"),
        ],  # unknown action, channel still counts
        [],
    )
    features, report = build_features(leads, acts, hist, T)
    assert report.events_read == 7
    assert report.events_duplicate == 2
    assert report.events_unknown_channel == 1
    assert report.events_unknown_lead == 1
    assert report.events_unknown_action == 1
    assert report.events_used == 3
    assert report.unknown["channel"] == {"carrier-pigeon": 1}
    assert report.unknown["country"] == {"Atlantis": 1}
    assert report.missing["industry"] == 1 and report.missing["title"] == 1
    row_a, row_b = row_of(features, a), row_of(features, b)
    assert row_a["n_pricing_visits_7d"] == 1
    assert row_a["days_since_last_web"] == pytest.approx(2.0)  # the earliest copy of e1 was kept
    assert row_a["n_email_open_7d"] == 1
    assert row_b["n_web_7d"] == 1 and row_b["n_web_visit_7d"] == 0
    assert (row_b["industry"], row_b["seniority"], row_b["region"]) == ("unknown", "unknown", "other")
    assert "events_duplicate" in report.to_json() and "duplicate 2" in report.summary()


def test_account_context_counts_colleagues_engagement_not_outcomes() -> None:
    a, b, c, free = "hubspot:1", "hubspot:2", "hubspot:3", "hubspot:4"
    base_leads = [
        lead(a, T - 30 * DAY),
        lead(b, T - 30 * DAY),
        lead(c, T - 30 * DAY, company_domain="other.io"),
        lead(free, T - 30 * DAY, company_domain="gmail.com"),
    ]
    events = [
        event("e1", b, T - DAY, "web", "visit", "/demo"),
        event("e2", b, T - 40 * DAY, "email", "open"),
        event("e3", a, T - DAY, "email", "click"),
        event("e4", c, T - DAY, "web", "visit", "/"),
    ]
    leads, acts, hist = tables(base_leads, events, [])
    features, _ = build_features(leads, acts, hist, T)
    row_a = row_of(features, a)
    assert (row_a["account_other_leads"], row_a["account_other_engaged_leads_30d"]) == (1, 1)
    assert (row_a["account_other_events_30d"], row_a["account_other_high_intent_30d"]) == (1, 1)
    assert row_of(features, c)["account_other_leads"] == 0
    assert row_of(features, free)["account_other_leads"] == 0  # free-mail domains are no account
    # b's outcome (converted, status history) must not move a's features
    converted = [dict(r) for r in base_leads]
    converted[1].update(status="converted", converted=True, converted_at=T - DAY)
    leads2, _, hist2 = tables(converted, [], [status(b, T - DAY, "converted")])
    features2, _ = build_features(leads2, acts, hist2, T)
    assert row_of(features2, a) == row_a


def test_event_order_does_not_change_any_bit() -> None:
    leads, acts, hist = synthetic_inputs(200, 15_000, seed=4)
    as_of = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
    shuffled = acts.take(pa.array(np.random.default_rng(0).permutation(acts.num_rows)))
    assert build_features(leads, shuffled, hist, as_of)[0].equals(build_features(leads, acts, hist, as_of)[0])


def test_parquet_input_gives_the_same_table(tmp_path) -> None:
    import pyarrow.parquet as pq

    leads, acts, hist = synthetic_inputs(200, 15_000, seed=6, dirt_rate=0.02)
    pq.write_table(acts, tmp_path / "a.parquet", row_group_size=4_000)
    as_of = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
    from_file, report = build_features(leads, tmp_path / "a.parquet", hist, as_of)
    in_memory, _ = build_features(leads, acts, hist, as_of)
    assert from_file.equals(in_memory)
    assert report.events_read == acts.num_rows


def test_bad_input_is_refused_clearly() -> None:
    leads, acts, hist = tables([lead("hubspot:1", T - DAY)], [], [])
    with pytest.raises(FeatureInputError, match="timezone-aware"):
        build_features(leads, acts, hist, dt.datetime(2026, 6, 1))
    with pytest.raises(FeatureInputError, match="'channel'"):
        build_features(leads, acts.drop_columns(["channel"]), hist, T)


def test_duplicate_lead_rows_keep_the_first() -> None:
    lid = "hubspot:1"
    leads, acts, hist = tables(
        [lead(lid, T - 5 * DAY), lead(lid, T - 4 * DAY, industry="Retail")],
        [event("e1", lid, T - DAY, "web", "visit")],
        [],
    )
    features, report = build_features(leads, acts, hist, T)
    assert features.num_rows == 1 and row_of(features, lid)["industry"] == "software"
    assert report.invalid["lead_id_duplicate"] == 1


def test_hash_index_and_exact_dedup_survive_collisions() -> None:
    keys = pa.array([f"id-{i}" for i in range(5000)] + ["id-7", None, "id-4999"])
    index = HashIndex(*hash_strings(keys))
    assert index.duplicates.tolist() == [5000, 5002]
    probe = pa.array(["id-0", "id-4999", "nope", "id-123"])
    assert index.lookup(*hash_strings(probe)).tolist() == [0, 4999, -1, 123]
    # a degenerate hash (every key collides) must still drop exact duplicates only
    ids = pa.array(["a", "b", "a", "c", "b", "a"])
    order = np.array([5, 1, 3, 0, 0, 9])
    dropped = duplicate_rows(np.zeros(6, np.uint64), order, lambda rows: ids.take(pa.array(rows)))
    assert dropped.tolist() == [0, 1, 5]
    assert hash64(pa.array(["x" * 20])).tolist() == hash64(pa.array(["y", "x" * 20]).slice(1)).tolist()


def test_building_in_account_buckets_equals_one_full_build() -> None:
    from features.build import partition_key
    from features.hashing import hash64

    leads, acts, hist = synthetic_inputs(300, 20_000, seed=9)
    as_of = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
    full, _ = build_features(leads, acts, hist, as_of)
    bucket = hash64(partition_key(leads)) % np.uint64(4)
    parts = []
    for b in range(4):
        mine = leads.filter(pa.array(bucket == b))
        ids = mine["lead_id"]
        parts.append(
            build_features(
                mine,
                acts.filter(pc.is_in(acts["lead_id"], value_set=ids)),
                hist.filter(pc.is_in(hist["lead_id"], value_set=ids)),
                as_of,
            )[0]
        )
    assert pa.concat_tables(parts).sort_by("lead_id").equals(full.sort_by("lead_id"))


def test_status_history_in_any_order_with_crm_labels() -> None:
    lid = "salesforce:00Q2"
    rows = [
        status(lid, T - 2 * DAY, "nurturing"),
        status(lid, T - 9 * DAY, "Open - Not Contacted"),
        status(lid, T - 2 * DAY, "Working - Contacted"),  # same instant as nurturing: the later stage wins
        status(lid, T - 5 * DAY, "Bogus stage"),
    ]
    leads, acts, _ = tables([lead(lid, T - 10 * DAY)], [], [])
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        hist = pa.Table.from_pylist([rows[i] for i in order], schema=LEAD_STATUS_HISTORY)
        features, report = build_features(leads, acts, hist, T)
        row = row_of(features, lid)
        assert (row["status"], row["days_in_status"]) == ("nurturing", pytest.approx(2.0))
        assert report.unknown["status"] == {"Bogus stage": 1}
        assert report.normalised["status"] == 2
