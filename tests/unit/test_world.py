"""The simulated world: deterministic, realistic where later parts rely on it, and honest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, RAW_LEADS
from sandbox.world import (
    WORLD_FILES,
    WorldSpec,
    load_world,
    oracle_probability,
    save_world,
    simulate_world,
    write_world,
)

pytestmark = pytest.mark.unit

SPEC = WorldSpec(n_leads=6_000, days=730, seed=5)


@pytest.fixture(scope="module")
def world():
    return simulate_world(SPEC)


@pytest.fixture(scope="module")
def leads(world) -> pd.DataFrame:
    return world.raw_leads.to_pandas()


def test_same_seed_gives_byte_identical_files(tmp_path: Path):
    spec = WorldSpec(n_leads=1_500, days=200, seed=9)
    write_world(spec, tmp_path / "a")
    write_world(spec, tmp_path / "b")
    save_world(simulate_world(spec), tmp_path / "c")
    for name in [*WORLD_FILES.values(), "spec.json"]:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes(), name
        assert a == (tmp_path / "c" / name).read_bytes(), name  # streaming and in-memory agree
    other = WorldSpec(n_leads=1_500, days=200, seed=10)
    write_world(other, tmp_path / "d")
    assert (tmp_path / "d" / "activities.parquet").read_bytes() != (
        tmp_path / "a" / "activities.parquet"
    ).read_bytes()
    assert load_world(tmp_path / "a").raw_leads.equals(simulate_world(spec).raw_leads)


def test_tables_follow_the_contract(world):
    assert world.raw_leads.schema.equals(RAW_LEADS, check_metadata=False)
    assert world.activities.schema.equals(ACTIVITIES, check_metadata=False)
    assert world.status_history.schema.equals(LEAD_STATUS_HISTORY, check_metadata=False)
    assert len(world.raw_leads["lead_id"].unique()) == world.raw_leads.num_rows
    assert len(world.activities["event_id"].unique()) == world.activities.num_rows
    # the hidden truth never leaks into CRM-visible tables
    assert not {"fit", "intent", "hazard"} & set(world.raw_leads.column_names + world.activities.column_names)


def test_lead_ids_follow_each_crm(leads):
    sf = leads[leads.source == "salesforce"]
    hs = leads[leads.source == "hubspot"]
    assert sf.crm_id.str.fullmatch(r"00Q\w{15}").all()
    assert hs.crm_id.str.fullmatch(r"\d+").all()
    assert (leads.lead_id == leads.source + ":" + leads.crm_id).all()
    assert 0.45 < len(sf) / len(leads) < 0.55


def test_crm_split_is_honoured():
    w = simulate_world(
        WorldSpec(n_leads=2_000, days=100, seed=1, crm_split={"salesforce": 1.0, "hubspot": 0.0})
    )
    assert set(w.raw_leads["source"].to_pylist()) == {"salesforce"}
    assert set(w.activities["source"].to_pylist()) <= {"salesforce", "file"}


def test_inflow_has_trend_weekly_and_yearly_seasonality(world, leads):
    originals = leads[~world.truth["is_duplicate"].to_numpy()]
    created = originals.created_at
    dow = created.dt.dayofweek
    assert (dow < 5).sum() / 5 > 2.5 * (dow >= 5).sum() / 2  # weekdays far busier than weekends
    end = pd.Timestamp(SPEC.end, tz="UTC")
    last_year = (created >= end - pd.Timedelta(days=365)).sum()
    assert last_year > 1.15 * (len(created) - last_year)  # growth
    by_month = created.dt.month.value_counts()
    assert by_month[3] > 1.2 * by_month[9]  # spring peak, autumn trough


def test_segment_mix_drifts(leads):
    q = leads.created_at.rank(pct=True)
    early = leads[q < 0.25].lead_source.value_counts(normalize=True)
    late = leads[q > 0.75].lead_source.value_counts(normalize=True)
    assert late["Paid Social"] > 1.4 * early["Paid Social"]
    assert late["Event"] < 0.8 * early["Event"]


def test_firmographics_are_realistic(world, leads):
    clean = leads[world.truth["dirt"].is_null().to_numpy()]
    both = clean.dropna(subset=["employees", "annual_revenue"])
    assert both.employees.corr(both.annual_revenue, method="spearman") > 0.8
    per_domain = leads.company_domain.value_counts()
    assert per_domain.max() >= 5 and (per_domain >= 2).mean() > 0.2  # accounts with several leads
    free = leads.email.str.contains(r"@(gmail|yahoo|hotmail|outlook|icloud|aol|gmx|proton)\.", na=False)
    assert 0.08 < free.mean() < 0.45
    assert (
        leads.title.str.contains(r"VP|Vice President|Director|Head of|Chief|C[EFIMORT]O\b", na=False).mean()
        > 0.15
    )
    assert leads.country.nunique() >= 15


def test_events_are_within_each_leads_life_and_bursty(world, leads):
    ev = world.activities.to_pandas()
    created = leads.set_index("lead_id").created_at
    assert (ev.occurred_at.values >= created.loc[ev.lead_id].values).all()
    assert (ev.occurred_at < pd.Timestamp(SPEC.end, tz="UTC")).all()
    assert 30 < len(ev) / SPEC.n_leads < 70
    dow = ev.occurred_at.dt.dayofweek
    assert (dow < 5).mean() > 0.85
    gaps = ev.sort_values(["lead_id", "occurred_at"]).groupby("lead_id").occurred_at.diff().dt.total_seconds()
    assert (gaps < 3600).mean() > 0.4  # events come in sessions
    assert set(ev.channel) <= {"email", "web", "form", "webinar", "call", "meeting", "chat", "ad"}
    assert ev.detail.isin(["/pricing", "/demo"]).any()


def test_email_stops_after_unsubscribe(world):
    ev = world.activities.to_pandas()
    unsub = ev[ev.action == "unsubscribe"].groupby("lead_id").occurred_at.min()
    email = ev[(ev.channel == "email") & ev.lead_id.isin(unsub.index)]
    assert len(unsub) > 0
    assert (email.occurred_at.values <= unsub.loc[email.lead_id].values).all()
    leads = world.raw_leads.to_pandas().set_index("lead_id")
    assert leads.loc[unsub.index, "opted_out"].all()


def test_status_history_is_consistent(world, leads):
    hist = world.status_history.to_pandas()
    assert (hist.groupby("lead_id").changed_at.is_monotonic_increasing).all()
    last = hist.sort_values("changed_at").groupby("lead_id").status.last()
    assert (leads.set_index("lead_id").loc[last.index, "status"] == last).all()
    conv = leads[leads.converted]
    assert (conv.status == "converted").all() and (conv.converted_at > conv.created_at).all()
    assert leads[~leads.converted].converted_at.isna().all()
    assert {"open", "working", "nurturing", "qualified", "unqualified", "converted"} <= set(hist.status)


def test_conversion_follows_engagement_and_fit(world, leads):
    ev = world.activities.to_pandas()
    hi = ev[ev.detail.isin(["/pricing", "/demo", "demo-request"]) | ev.channel.isin(["meeting"])]
    n_hi = hi.groupby("lead_id").size().reindex(leads.lead_id, fill_value=0).to_numpy()
    conv = leads.converted.to_numpy()
    assert n_hi[conv].mean() > 2 * n_hi[~conv].mean()
    assert 0.05 < conv.mean() < 0.2


def test_oracle_is_predictive_and_calibrated(world, leads):
    from sklearn.metrics import roc_auc_score

    as_of = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    oracle = oracle_probability(world, as_of, 90).to_pandas()
    conv_at = leads.set_index("lead_id").converted_at.loc[oracle.lead_id]
    y = ((conv_at > as_of) & (conv_at <= as_of + dt.timedelta(days=90))).to_numpy()
    assert y.sum() > 30
    assert roc_auc_score(y, oracle.probability) > 0.85  # documented: about 0.93 on this kind of world
    assert abs(oracle.probability.mean() - y.mean()) < 0.25 * y.mean() + 0.003  # calibrated in the mean
    created = leads.set_index("lead_id").created_at.loc[oracle.lead_id]
    assert (created < as_of).all()


def test_dirt_is_planted_at_the_configured_rate():
    w = simulate_world(WorldSpec(n_leads=5_000, days=200, seed=2, dirt_rate=0.05))
    truth = w.truth.to_pandas()
    leads = w.raw_leads.to_pandas()
    assert 0.04 < truth.is_duplicate.mean() < 0.06
    malformed = ~leads.email.str.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", na=False)
    assert 0.015 < malformed.mean() < 0.04
    assert (leads.employees < 0).any() and (leads.annual_revenue < 0).any()
    assert leads.industry.isin(["software", "SOFTWARE", "Computer Software"]).any()
    dups = truth[truth.is_duplicate]
    originals = leads.set_index("lead_id").loc[dups.duplicate_of, "email"].str.upper().to_numpy()
    assert (leads.set_index("lead_id").loc[dups.lead_id, "email"].to_numpy() == originals).all()
    clean = simulate_world(WorldSpec(n_leads=2_000, days=200, seed=2, dirt_rate=0.0))
    assert clean.truth["is_duplicate"].to_numpy().sum() == 0


def test_consent_is_rarer_under_gdpr(leads):
    eu = leads.country.isin(["GB", "DE", "FR", "NL", "ES", "IT", "SE", "IE"])
    assert leads[eu].consent_processing.mean() < leads[~eu & leads.country.notna()].consent_processing.mean()


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="n_leads"):
        WorldSpec(n_leads=0, days=10)
    with pytest.raises(ValueError, match="crm_split"):
        WorldSpec(n_leads=10, days=10, crm_split={"pipedrive": 1.0})


def test_summary_counts(world):
    s = world.summary()
    assert s["leads"] == world.raw_leads.num_rows and s["events"] == world.activities.num_rows
    assert s["converted"] == pc.sum(world.raw_leads["converted"].cast("int64")).as_py()
    assert np.isclose(sum(s["by_crm"].values()), s["leads"])
