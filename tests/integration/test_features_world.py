"""Features and labels on the simulated world: truth agreement, point in time, batch = hot path."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.build import build_features
from features.contract import ACTIVITIES
from features.labels import build_training_set, label_snapshot
from features.online import lead_features
from features.privacy import pseudonymise_leads
from features.spec import FEATURE_NAMES
from sandbox.world import WorldSpec, simulate_world

pytestmark = pytest.mark.integration

END = dt.date(2026, 11, 1)
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture(scope="module")
def world():
    return simulate_world(WorldSpec(n_leads=4000, days=400, seed=5, end=END))


@pytest.fixture(scope="module")
def leads(world) -> pa.Table:
    return pseudonymise_leads(world.raw_leads, b"test-key-not-secret")


def at(days_before_end: int) -> dt.datetime:
    return dt.datetime.combine(END, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=days_before_end)


@pytest.mark.parametrize("days_before_end", [300, 200, 120])
def test_labels_agree_with_the_worlds_conversions(world, leads, days_before_end: int) -> None:
    as_of, horizon = at(days_before_end), 90
    labels = label_snapshot(leads, world.status_history, as_of, horizon)
    truth = world.truth
    t_us = int(as_of.timestamp()) * 1_000_000
    created = truth["created_at"].cast(pa.int64()).to_numpy()
    conv = truth["conversion_at"].cast(pa.int64()).fill_null(np.iinfo(np.int64).max).to_numpy()
    disq = truth["disqualified_at"].cast(pa.int64()).fill_null(np.iinfo(np.int64).max).to_numpy()
    # a planted duplicate is a CRM record nobody works on: it inherits no disqualification
    disq = np.where(truth["is_duplicate"].to_numpy(zero_copy_only=False), np.iinfo(np.int64).max, disq)
    # open at T in the world: created, not converted, not disqualified (duplicates are leads too)
    open_ = (created < t_us) & (conv >= t_us) & ((disq >= t_us) | (conv < np.iinfo(np.int64).max))
    expected = dict(
        zip(
            truth["lead_id"].filter(pa.array(open_)).to_pylist(),
            (conv[open_] < t_us + horizon * 86_400_000_000).tolist(),
            strict=True,
        )
    )
    got = dict(zip(labels["lead_id"].to_pylist(), labels["label"].to_pylist(), strict=True))
    assert got == expected
    assert sum(got.values()) > 20  # the check has teeth: positives exist


def _truncated(world, leads: pa.Table, as_of: dt.datetime) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The CRM as an extraction at ``as_of`` would have seen it (fields that change later nulled)."""
    ts = pa.scalar(as_of, TS)
    known = leads.filter(pc.less(leads["created_at"], ts))
    for name in ("status", "converted", "converted_at", "updated_at", "opted_out", "consent_processing"):
        column = known[name]
        if name == "updated_at":
            blank = pa.array([as_of] * known.num_rows, TS)
        else:
            blank = pa.nulls(known.num_rows, column.type)
        known = known.set_column(known.schema.get_field_index(name), name, blank)
    acts = world.activities.filter(pc.less(world.activities["occurred_at"], ts))
    hist = world.status_history.filter(pc.less(world.status_history["changed_at"], ts))
    return known.cast(leads.schema), acts, hist


def test_features_at_t_are_what_an_extraction_at_t_would_give(world, leads) -> None:
    as_of = at(150)
    full, report = build_features(leads, world.activities, world.status_history, as_of)
    then, _ = build_features(*_truncated(world, leads, as_of), as_of)
    assert report.events_after_as_of > 10_000  # the future was there to leak
    assert full.equals(then)


@pytest.mark.slow
def test_batch_and_hot_path_agree_for_1000_leads(world, leads) -> None:
    as_of = at(100)
    batch, _ = build_features(leads, world.activities, world.status_history, as_of)
    rows = batch.to_pylist()
    by_lead = {r["lead_id"]: r for r in leads.to_pylist()}
    events = defaultdict(list)
    acts = world.activities
    for i, lid in enumerate(acts["lead_id"].to_pylist()):
        events[lid].append(i)
    hist = defaultdict(list)
    for row in world.status_history.to_pylist():
        hist[row["lead_id"]].append(row)
    accounts = defaultdict(list)
    for lid, row in by_lead.items():
        accounts[(row["company_domain"] or "").lower()].append(lid)

    def events_of(ids: list[str]) -> pa.Table:
        idx = [i for lid in ids for i in events.get(lid, [])]
        return acts.take(pa.array(idx, pa.int64())) if idx else ACTIVITIES.empty_table()

    sample = random.Random(7).sample(range(len(rows)), 1000)
    mismatches = []
    for i in sample:
        lid = rows[i]["lead_id"]
        lead = by_lead[lid]
        peers = (
            [p for p in accounts[(lead["company_domain"] or "").lower()] if p != lid]
            if lead["company_domain"]
            else []
        )
        online, _ = lead_features(
            lead,
            events_of([lid]),
            as_of,
            status_history=hist.get(lid, []),
            peers=[by_lead[p] for p in peers],
            peer_events=events_of(peers),
        )
        expected = {name: rows[i][name] for name in FEATURE_NAMES}
        if online != expected:
            mismatches.append(
                (lid, {k: (expected[k], online[k]) for k in expected if expected[k] != online[k]})
            )
    assert not mismatches, mismatches[:3]
    engaged = sum(1 for i in sample if rows[i]["n_events_90d"] > 0)
    assert engaged > 300  # most sampled leads have events, so the comparison covers engagement


def test_dirt_is_reported_and_planted_event_dirt_is_counted_exactly(world, leads) -> None:
    as_of = at(60)
    acts = world.activities
    early = acts.filter(pc.less(acts["occurred_at"], pa.scalar(as_of, TS)))
    n_dup, n_ghost = 250, 40
    rng = np.random.default_rng(3)
    dups = early.take(pa.array(rng.choice(early.num_rows, n_dup, replace=False)))
    ghosts = early.slice(0, n_ghost).set_column(
        1, "lead_id", pa.array([f"hubspot:ghost{i}" for i in range(n_ghost)])
    )
    ghosts = ghosts.set_column(0, "event_id", pa.array([f"ghost-{i}" for i in range(n_ghost)]))
    dirty = pa.concat_tables([acts, dups, ghosts.cast(ACTIVITIES)])
    clean_features, clean_report = build_features(leads, acts, world.status_history, as_of)
    features, report = build_features(leads, dirty, world.status_history, as_of)
    assert report.events_duplicate == clean_report.events_duplicate + n_dup
    assert report.events_unknown_lead == clean_report.events_unknown_lead + n_ghost
    assert features.equals(clean_features)  # dirt is absorbed, not propagated
    known = pc.less(world.truth["created_at"], pa.scalar(as_of, TS))
    dirt = world.truth["dirt"].filter(known).to_pylist()
    planted_missing_industry = sum(1 for d in dirt if d and "missing:industry" in d)
    assert report.missing["industry"] >= planted_missing_industry > 0
    assert report.invalid["employees"] > 0 and report.missing["email_domain"] > 0


def test_training_set_from_the_world(world, leads) -> None:
    snaps = [at(300), at(240), at(180)]
    table, reports = build_training_set(
        leads, world.activities, world.status_history, snaps, horizon_days=90, observed_until=at(0)
    )
    counts = pc.value_counts(table["as_of"]).to_pylist()
    assert len(counts) == 3 and all(c["counts"] > 500 for c in counts)
    assert not pc.any(pc.is_in(table["status"], value_set=pa.array(["converted", "unqualified"]))).as_py()
    positives = pc.sum(pc.cast(table["label"], pa.int64())).as_py()
    assert 0.02 < positives / table.num_rows < 0.5
    # engagement separates converters from the rest (a sanity check that features carry signal)
    hi = pc.mean(table.filter(table["label"])["engagement_decayed"]).as_py()
    lo = pc.mean(table.filter(pc.invert(table["label"]))["engagement_decayed"]).as_py()
    assert hi > 1.5 * lo
    assert all(r.leads_known > 0 for r in reports)


def test_hot_path_needs_only_a_year_plus_the_newest_per_channel_and_the_first(world, leads) -> None:
    as_of = at(1)  # the world spans 400 days: leads created in its first month are over a year old
    t_us = int(as_of.timestamp()) * 1_000_000
    batch, _ = build_features(leads, world.activities, world.status_history, as_of)
    rows = {r["lead_id"]: r for r in batch.to_pylist()}
    by_lead = {r["lead_id"]: r for r in leads.to_pylist()}
    acts = world.activities.filter(pc.less(world.activities["occurred_at"], pa.scalar(as_of, TS)))
    old = {lid for lid, r in rows.items() if r["lead_age_days"] > 370}
    checked = 0
    for lid in sorted(old)[:150]:
        mine = acts.filter(pc.equal(acts["lead_id"], lid))
        t = mine["occurred_at"].cast(pa.int64()).to_numpy()
        recent = t >= t_us - 365 * 86_400_000_000
        if recent.all():
            continue  # nothing old to leave out
        keep = recent.copy()
        keep[np.argmin(t)] = True
        channels = mine["channel"].to_numpy(zero_copy_only=False)
        for ch in set(channels):
            at_ch = np.flatnonzero(channels == ch)
            keep[at_ch[np.argmax(t[at_ch])]] = True
        history = world.status_history.filter(pc.equal(world.status_history["lead_id"], lid))
        online, _ = lead_features(by_lead[lid], mine.filter(pa.array(keep)), as_of, status_history=history)
        expected = {k: rows[lid][k] for k in FEATURE_NAMES if not k.startswith("account_")}
        assert {k: online[k] for k in expected} == expected, lid
        checked += 1
    assert checked > 20
