"""Pushing scores to the CRM sandbox with the real client libraries over HTTPS.

What matters: after any push (with faults, rate limits, a kill mid-push and a rerun) every CRM
record holds the latest score values exactly as ARCHITECTURE.md's contract names them, only
changed scores are sent, and a rerun re-sends at most the batch that was in flight.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features.lake import Lake, Partition
from plugins.crm import fields as crm_views
from plugins.crm.base import format_reasons

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]


def _ids(world, crm: str, n: int) -> list[str]:
    ids = world.raw_leads.filter(pc.equal(world.raw_leads["source"], crm))["lead_id"].to_pylist()
    return ids[:n]


def _expected(scores: pa.Table) -> dict[str, tuple]:
    """lead_id -> the values the CRM must hold (score, tier, probability, reasons, version, scored_at)."""
    return {
        r["lead_id"]: (
            r["score"],
            r["tier"],
            r["probability"],
            format_reasons(r["reasons_positive"], r["reasons_negative"]),
            r["model_version"],
            crm_views.hs_datetime(r["scored_at"]),
        )
        for r in scores.to_pylist()
    }


def _salesforce_values(sf) -> dict[str, tuple]:
    soql = (
        "SELECT Id, ProX_Score__c, ProX_Tier__c, ProX_Probability__c, ProX_Reasons__c, ProX_Model_Version__c, "
        "ProX_Scored_At__c FROM Lead WHERE ProX_Tier__c != null"
    )
    result = sf.call(lambda s: s.query_all(soql), "read back")
    return {
        f"salesforce:{r['Id']}": (
            int(r["ProX_Score__c"]),
            r["ProX_Tier__c"],
            r["ProX_Probability__c"],
            r["ProX_Reasons__c"],
            r["ProX_Model_Version__c"],
            crm_views.hs_datetime(crm_views.parse_datetime(r["ProX_Scored_At__c"])),
        )
        for r in result["records"]
    }


def _hubspot_values(hs) -> dict[str, tuple]:
    props = [
        "prox_score",
        "prox_tier",
        "prox_probability",
        "prox_reasons",
        "prox_model_version",
        "prox_scored_at",
    ]
    out, after = {}, None
    while True:
        kwargs = {"limit": 100, "properties": props, **({"after": after} if after else {})}
        page = hs.call("crm.contacts.basic_api", "get_page", "read back", raw=True, **kwargs)
        for r in page["results"]:
            p = r["properties"]
            if p.get("prox_tier"):
                out[f"hubspot:{r['id']}"] = (
                    int(p["prox_score"]),
                    p["prox_tier"],
                    float(p["prox_probability"]),
                    p["prox_reasons"],
                    p["prox_model_version"],
                    p["prox_scored_at"],
                )
        after = ((page.get("paging") or {}).get("next") or {}).get("after")
        if not after:
            return out


@pytest.mark.slow
def test_push_10000_scores_to_each_crm_and_read_them_back(sandbox, crm, push_world, tmp_path) -> None:
    crm.load(sandbox, push_world.raw_leads, push_world.activities)
    sf, hs, _ = crm.connectors(sandbox, tmp_path)
    sf_ids, hs_ids = _ids(push_world, "salesforce", 10_000), _ids(push_world, "hubspot", 10_000)
    scores = crm.make_scores(sf_ids + hs_ids, seed=1)

    lake = Lake(tmp_path / "lake")
    for conn in (sf, hs):  # extraction before the push sets the watermarks
        conn.extract(lake, dt.date(2026, 11, 2), tables=("raw_leads",))
    calls_before = sf.stats.calls
    expected = _expected(scores)
    for conn, read in ((sf, _salesforce_values), (hs, _hubspot_values)):
        report = conn.push(scores)
        assert (report.pushed, report.rejected, report.to_push) == (10_000, 0, 10_000)
        assert read(conn) == {k: v for k, v in expected.items() if k.startswith(conn.crm)}
    assert sf.stats.calls - calls_before < 20  # one Bulk API 2.0 job, not 50 Collections calls

    # writing the ProX fields modifies the records, as in the real CRMs: the next incremental
    # window holds exactly the pushed leads (on HubSpot 10,100 of them: past the search API's
    # 10,000-result cap, which the connector pages past by restarting at the last stamp)
    extra = _ids(push_world, "hubspot", 10_100)[10_000:]
    assert hs.push(crm.make_scores(extra, seed=8)).pushed == 100
    for conn, ids in ((sf, sf_ids), (hs, hs_ids + extra)):
        (window,) = conn.extract(lake, dt.date(2026, 11, 3), tables=("raw_leads",))
        got = lake.read(Partition("raw", "raw_leads", conn.crm, dt.date(2026, 11, 3)))
        assert window.rows == len(ids) and sorted(got["lead_id"].to_pylist()) == sorted(ids)
    writes = sandbox.stats()["write_requests"]
    assert writes == {"salesforce": 1, "hubspot": 101}

    # the same scores again: nothing changed, nothing sent
    for conn in (sf, hs):
        again = conn.push(scores)
        assert (again.pushed, again.skipped, again.batches) == (0, 10_000, 0)
    assert sandbox.stats()["write_requests"] == writes

    # a night where 10% of the scores move: only those are pushed (Collections on Salesforce)
    moved_ids = sf_ids[::10] + hs_ids[::10]
    moved = crm.make_scores(moved_ids, seed=2, version="2")
    unchanged = scores.filter(pc.invert(pc.is_in(scores["lead_id"], pa.array(moved_ids))))
    night2 = pa.concat_tables([unchanged, moved])
    for conn, read in ((sf, _salesforce_values), (hs, _hubspot_values)):
        before = dict(read(conn))
        report = conn.push(night2)
        changed = {
            lid
            for lid, v in _expected(moved).items()
            if lid.startswith(conn.crm) and before[lid][:2] != v[:2]
        }
        assert report.pushed == len(changed) and report.skipped == 10_000 - len(changed)
        after = read(conn)
        assert {lid for lid in after if after[lid] != before[lid]} == changed
    assert sandbox.stats()["write_requests"]["salesforce"] == 1 + 5  # 1,000 records at most: Collections


@pytest.mark.slow
def test_push_under_faults_loses_nothing(sandbox, crm, push_world, tmp_path) -> None:
    crm.load(sandbox, push_world.raw_leads, push_world.activities)
    sf, hs, _ = crm.connectors(sandbox, tmp_path)
    # HubSpot through OAuth this time: its access tokens expire and are refreshed mid-push
    from plugins.crm.credentials import HubSpotCredentials
    from plugins.crm.hubspot import HubSpotConnector

    oauth = sandbox.credentials["hubspot"]
    hs = HubSpotConnector(
        HubSpotCredentials(
            sandbox.hubspot_url,
            client_id=oauth["client_id"],
            client_secret=oauth["client_secret"],
            refresh_token=oauth["refresh_token"],
            ca_bundle=str(sandbox.cert),
        ),
        hs.state,
        policy=hs.policy,
    )
    sandbox.set_faults(
        error_rate=0.1,
        partial_failure_rate=0.05,
        drop_rate=0.03,
        token_ttl_requests=30,
        seed=7,
        hubspot_rate_limit=None,
    )
    sf_ids, hs_ids = _ids(push_world, "salesforce", 10_000), _ids(push_world, "hubspot", 10_000)
    scores = crm.make_scores(sf_ids + hs_ids, seed=3)
    sf.bulk_batch_size = 2_500  # several Bulk jobs, so faults hit jobs at every step
    reports = [sf.push(scores), hs.push(scores)]
    faults = sandbox.stats()["faults"]
    assert faults["5xx"] > 0 and faults["record_failures"] > 0 and faults["dropped"] > 0
    assert hs.stats.refreshes > 0 and sf.stats.refreshes > 0
    sandbox.set_faults(hubspot_rate_limit=None)
    expected = _expected(scores)
    for report, conn, read in zip(reports, (sf, hs), (_salesforce_values, _hubspot_values), strict=True):
        assert (report.pushed, report.rejected) == (10_000, 0), report.rejections
        assert report.record_retries > 0  # only the records that failed were sent again
        assert read(conn) == {k: v for k, v in expected.items() if k.startswith(conn.crm)}
        outcomes = conn.state.outcomes(report.run_id, conn.crm)
        assert len(outcomes) == 10_000 and {o for o, _ in outcomes.values()} == {"pushed"}
    # duplicates only where an answer was lost (the write happened, the client could not know)
    counts = sandbox.admin("GET", "hubspot", "writes/hubspot/contacts")
    assert len(counts) == 10_000
    assert sum(counts.values()) - 10_000 <= 100 * faults["dropped"]


@pytest.mark.slow
def test_hubspot_rate_limit_at_the_real_threshold(sandbox, crm, push_world, tmp_path) -> None:
    crm.load(sandbox, push_world.raw_leads, push_world.activities)
    _, hs, _ = crm.connectors(sandbox, tmp_path)
    sandbox.set_faults(hubspot_rate_limit=100, hubspot_window_seconds=10)  # Free/Starter: 100 per 10 s
    scores = crm.make_scores(_ids(push_world, "hubspot", 10_000), seed=4)
    report = hs.push(scores)
    assert (report.pushed, report.rejected) == (10_000, 0)
    assert sandbox.stats()["faults"]["rate_limited"] >= 1
    assert 1 <= hs.stats.waited_seconds <= 20  # Retry-After honoured (a rolling window: a few waits)
    assert report.api_calls - hs.stats.retries == 100 + 9  # 100 batches + property setup, nothing re-sent


def test_salesforce_daily_allocation_stops_the_push_and_a_rerun_finishes(
    sandbox, crm, push_world, tmp_path
) -> None:
    crm.load(sandbox, push_world.raw_leads, push_world.activities)
    sf, _, _ = crm.connectors(sandbox, tmp_path)
    sandbox.set_faults(salesforce_daily_limit=4, hubspot_rate_limit=None)  # describe + 3 Collections calls
    scores = crm.make_scores(_ids(push_world, "salesforce", 1_000), seed=5)
    first = sf.push(scores)
    assert first.stopped and "REQUEST_LIMIT_EXCEEDED" in first.stopped
    assert first.pushed == 600 and sf.state.inflight("salesforce")
    sandbox.set_faults(salesforce_daily_limit=100_000, hubspot_rate_limit=None)
    second = sf.push(scores)
    assert (second.pushed, second.skipped, second.resent, second.stopped) == (400, 600, 200, None)
    assert not sf.state.inflight("salesforce")
    assert _salesforce_values(sf) == _expected(scores)


_PUSH_SCRIPT = """
import sys
from pathlib import Path
import pyarrow.parquet as pq
from plugins.crm.credentials import hubspot_from_env, salesforce_from_env
from plugins.crm.hubspot import HubSpotConnector
from plugins.crm.salesforce import SalesforceConnector
from plugins.crm.state import ConnectorState
state = ConnectorState.for_data_dir(Path(sys.argv[2]))
conn = (SalesforceConnector(salesforce_from_env(), state) if sys.argv[1] == "salesforce"
        else HubSpotConnector(hubspot_from_env(), state))
conn.push(pq.read_table(sys.argv[3]))
"""


@pytest.mark.parametrize(
    ("crm_name", "n", "batch", "hang_on"), [("hubspot", 3_000, 100, 12), ("salesforce", 1_500, 200, 4)]
)
def test_kill_mid_push_then_rerun_resends_only_the_batch_in_flight(
    sandbox, crm, push_world, tmp_path, crm_name, n, batch, hang_on
) -> None:
    crm.load(sandbox, push_world.raw_leads, push_world.activities)
    sf, hs, _ = crm.connectors(sandbox, tmp_path)
    conn = sf if crm_name == "salesforce" else hs
    if crm_name == "hubspot":
        hs.ensure_properties()
    scores = crm.make_scores(_ids(push_world, crm_name, n), seed=6)
    pq.write_table(scores, tmp_path / "scores.parquet")
    # the hang_on-th write is applied by the CRM, then its answer is held: kill the client there
    sandbox.set_faults(hang_on_write=hang_on, hang_seconds=60, hubspot_rate_limit=None)
    env = {**os.environ, **sandbox.connection_env(), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _PUSH_SCRIPT, crm_name, str(tmp_path), str(tmp_path / "scores.parquet")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while sandbox.stats()["faults"].get("held", 0) < 1:  # wait for the condition, not for time
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the push never reached the held write"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    sandbox.set_faults(hubspot_rate_limit=None)

    in_flight = {lid for ids in conn.state.inflight(crm_name).values() for lid in ids}
    assert len(in_flight) == batch
    report = conn.push(scores)
    assert report.resent == batch
    assert report.pushed == n - (hang_on - 1) * batch
    assert report.skipped == (hang_on - 1) * batch
    read = _salesforce_values if crm_name == "salesforce" else _hubspot_values
    assert read(conn) == _expected(scores)  # zero lost updates
    obj = "Lead" if crm_name == "salesforce" else "contacts"
    counts = sandbox.admin("GET", crm_name, f"writes/{crm_name}/{obj}")
    twice = {f"{crm_name}:{i}" for i, c in counts.items() if c > 1}
    assert twice == in_flight and max(counts.values()) == 2  # re-sent: exactly the batch in flight
