"""The hot path's push outbox against the CRM sandbox's fault injection.

A CRM answering 5xx to everything: each attempt fails, the next waits twice as long (2 s, 4 s,
... on the worker's clock, driven here, no sleeping), nothing is lost; once the CRM recovers,
the pushes are delivered and read back with the client libraries. A record the CRM refuses for
good (it does not exist there) is recorded with the CRM's reason and never retried.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow.compute as pc
import pytest

pytestmark = [pytest.mark.integration]
GHOST = "hubspot:999999999"


def _payload(lead_id: str, score: int) -> dict:
    return {
        "lead_id": lead_id,
        "scored_at": dt.datetime(2026, 6, 1, 10, tzinfo=dt.UTC).isoformat(),
        "model_name": "prox-lead-scoring",
        "model_version": "3",
        "probability": score / 100,
        "score": score,
        "tier": "A",
        "reasons_positive": ["visited the pricing page 3 times in the last 7 days"],
        "reasons_negative": ["no email opened in the last 30 days"],
        "run_id": "hot-20260601T100000",
    }


def test_outbox_backs_off_on_5xx_delivers_later_and_records_permanent_rejections(
    sandbox, crm, small_world, tmp_path, monkeypatch
):
    from plugins.crm.retry import RetryPolicy
    from serve.push import PushWorker
    from serve.sqlite_store import OnlineState
    from tests.integration.test_crm_push import _hubspot_values, _salesforce_values

    crm.load(sandbox, small_world.raw_leads, small_world.activities.slice(0, 0))
    raw = small_world.raw_leads
    sf_lead = raw.filter(pc.equal(raw["source"], "salesforce"))["lead_id"][0].as_py()
    hs_lead = raw.filter(pc.equal(raw["source"], "hubspot"))["lead_id"][0].as_py()
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    state = OnlineState(tmp_path / "online.sqlite")
    for lead_id, score in ((sf_lead, 91), (hs_lead, 88), (GHOST, 90)):
        state.ingest([{"lead_id": lead_id, "source": lead_id.split(":")[0], "crm_id": lead_id[8:]}], [])
        state.record_score(lead_id, "A", score, _payload(lead_id, score))
    worker = PushWorker(
        tmp_path / "online.sqlite",
        tmp_path / "data",
        connector_options={"policy": RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, seed=3)},
    )
    t = time.time()  # the clock the outbox queued them on; later moments are passed, not waited for
    sandbox.set_faults(hubspot_rate_limit=None, hubspot_search_per_second=None, error_rate=1.0)
    assert worker.drain(state, t) == 3
    assert worker.failures == 3 and worker.pushed == 0 and state.outbox_size() == 3
    assert sandbox.stats()["faults"]["5xx"] >= 3 * 3  # each push: the connector's 3 attempts, all 503
    # backoff: nothing is due before 2 s, then every push; a second failure waits 4 s
    assert state.due_pushes(t + 1.9) == [] and len(state.due_pushes(t + 2.0)) == 3
    assert worker.drain(state, t + 2.0) == 3 and worker.failures == 6
    assert state.due_pushes(t + 5.9) == [] and {a for _, _, a in state.due_pushes(t + 6.0)} == {2}
    assert [worker.backoff(n) for n in (1, 2, 3, 9, 10)] == [2.0, 4.0, 8.0, 300.0, 300.0]  # capped

    sandbox.set_faults(hubspot_rate_limit=None, hubspot_search_per_second=None)  # the CRM recovers
    sf, hs, _ = crm.connectors(sandbox, tmp_path / "reader")
    assert _salesforce_values(sf) == {} and _hubspot_values(hs) == {}  # nothing got through the 5xx
    assert worker.drain(state, t + 6.0) == 3
    assert worker.pushed == 2 and worker.rejected == 1 and state.outbox_size() == 0
    got = {**_salesforce_values(sf), **_hubspot_values(hs)}
    assert {lid: v[:3] for lid, v in got.items()} == {sf_lead: (91, "A", 0.91), hs_lead: (88, "A", 0.88)}
    assert "+ visited the pricing page 3 times" in got[hs_lead][3]
    # the CRM's refusal is recorded with its reason and is never sent again
    [(lead_id, reason)] = state.rejected_pushes()
    assert lead_id == GHOST and "OBJECT_NOT_FOUND" in reason
    assert state.due_pushes(t + 10**9) == [] and worker.drain(state, t + 10**9) == 0
