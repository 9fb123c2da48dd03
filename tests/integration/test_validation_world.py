"""A simulated world through every raw suite: its clean rows pass, its planted dirt is quarantined."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from expectations.runner import validate
from prox.settings import Settings
from sandbox.world import WorldSpec, simulate_world

pytestmark = pytest.mark.integration

SPEC = WorldSpec(n_leads=3_000, days=180, seed=3, dirt_rate=0.02)
#: Dirt a row-level check must catch; missing fields and spelling variants are left to features
#: (normalisation), person duplicates (new lead_id, same person) to entity resolution.
QUARANTINABLE = ("malformed:email", "impossible:employees", "impossible:annual_revenue")


@pytest.fixture(scope="module")
def world():
    return simulate_world(SPEC)


def planted(world) -> set[str]:
    """Lead ids carrying quarantinable dirt, their own or copied from the lead they duplicate."""
    truth = world.truth.to_pylist()
    dirt = {r["lead_id"]: r["dirt"] or "" for r in truth}
    out = set()
    for r in truth:
        labels = dirt[r["lead_id"]] + "," + (dirt.get(r["duplicate_of"], "") if r["is_duplicate"] else "")
        if any(k in labels for k in QUARANTINABLE):
            out.add(r["lead_id"])
    return out


@pytest.mark.parametrize("source", ["salesforce", "hubspot"])
def test_world_leads_clean_rows_pass_and_planted_dirt_is_quarantined(
    world, settings: Settings, source: str
) -> None:
    leads = world.raw_leads.filter(pc.equal(world.raw_leads["source"], source))
    reference = dt.datetime.combine(SPEC.end, dt.time(), tzinfo=dt.UTC)
    out = validate(f"raw_leads_{source}", leads, run_id="world", settings=settings, reference_time=reference)
    expected = {lead for lead in planted(world) if lead.startswith(f"{source}:")}
    assert expected, "the world planted no quarantinable dirt in this source"
    assert set(out.quarantine["record_id"].to_pylist()) == expected
    assert not out.critical_failures or all(c.row_level for c in out.critical_failures)
    assert out.decision == "warned"  # some rows quarantined, the run goes on
    assert 0 < out.bad_share < settings.quarantine_threshold
    assert out.clean_rows == leads.num_rows - len(expected)
    clean_again = validate(f"raw_leads_{source}", out.clean, run_id="world-2", settings=settings,
                           reference_time=reference, write=False)  # fmt: skip
    assert clean_again.quarantined_rows == 0 and not clean_again.critical_failures


@pytest.mark.parametrize("source", ["salesforce", "hubspot", "file"])
def test_world_activities_pass(world, settings: Settings, source: str) -> None:
    acts = world.activities.filter(pc.equal(world.activities["source"], source))
    reference = dt.datetime.combine(SPEC.end, dt.time(), tzinfo=dt.UTC)
    out = validate("raw_activities", acts, run_id="world", settings=settings, reference_time=reference,
                   source=source, write=False)  # fmt: skip
    assert out.decision == "passed", out.messages
    assert out.clean_rows == acts.num_rows


def test_world_dirt_rate_stays_under_the_threshold(world) -> None:
    leads: pa.Table = world.raw_leads
    share = len(planted(world)) / leads.num_rows
    assert share < Settings().quarantine_threshold
